//! The schema's numbered migrations, embedded in the binary, and the rule for which databases this
//! build may open. Each backend applies them in one transaction at open and records each version in
//! its `schema_migrations` table.

/// One step of the schema: applied once, in order, never edited once released.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    pub version: u32,
    pub name: &'static str,
    pub sql: &'static str,
}

/// SQLite's migrations, oldest first.
pub const SQLITE: &[Migration] = &[
    Migration {
        version: 1,
        name: "initial",
        sql: include_str!("migrations/sqlite/0001_initial.sql"),
    },
    Migration {
        version: 2,
        name: "resolved_jobs",
        sql: include_str!("migrations/sqlite/0002_resolved_jobs.sql"),
    },
];

/// PostgreSQL's migrations, oldest first.
pub const POSTGRES: &[Migration] = &[Migration {
    version: 1,
    name: "initial",
    sql: include_str!("migrations/postgres/0001_initial.sql"),
}];

/// The newest version in `migrations`.
pub fn latest(migrations: &[Migration]) -> u32 {
    migrations.iter().map(|m| m.version).max().unwrap_or(0)
}

/// The migrations a database at `current` still needs, or the newer version it was written by.
pub fn pending(migrations: &[Migration], current: u32) -> Result<Vec<Migration>, u32> {
    if current > latest(migrations) {
        return Err(current);
    }
    Ok(migrations
        .iter()
        .filter(|m| m.version > current)
        .copied()
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_are_numbered_from_one_without_gaps() {
        for (i, m) in SQLITE.iter().enumerate().chain(POSTGRES.iter().enumerate()) {
            assert_eq!(m.version as usize, i + 1, "{}", m.name);
        }
    }

    #[test]
    fn a_newer_database_is_refused_and_an_older_one_gets_what_it_lacks() {
        assert_eq!(pending(SQLITE, latest(SQLITE) + 1).unwrap_err(), 3);
        assert_eq!(pending(SQLITE, 1).unwrap().len(), 1);
        assert!(pending(SQLITE, latest(SQLITE)).unwrap().is_empty());
    }
}
