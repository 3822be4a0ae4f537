//! The daemon config's `store` section and `node_name`: where state lives (SQLite in `state_dir`
//! by default, or a shared PostgreSQL with a leadership lease) and what this node calls itself.
//! The database URL is a secret: only named here (an environment variable or a file), resolved to
//! a `Secret`, and never part of a message.

use super::daemon::{ConfigError, SecretSource};
use crate::secret::Secret;
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The shortest lease accepted: renewals every third of it must fit round trips to the database.
pub const MIN_LEASE: Duration = Duration::from_secs(1);
const DEFAULT_LEASE: Duration = Duration::from_secs(10);

/// Where the daemon keeps its state.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum StoreConfig {
    /// The embedded database in `state_dir`; one daemon at a time.
    #[default]
    Local,
    /// A PostgreSQL database shared by any number of nodes, one of which leads.
    Postgres(PostgresConfig),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostgresConfig {
    /// Where the connection URL (`postgres://user:password@host/db?sslmode=require`) is read from.
    pub url: SecretSource,
    /// How long a leader's lease lasts without renewal; failover takes about this long.
    pub lease: Duration,
}

impl PostgresConfig {
    /// The connection URL, checked to be a PostgreSQL URL. Errors name the source, never the URL.
    pub fn resolve_url(&self) -> Result<Secret, ConfigError> {
        let url = self.url.resolve()?;
        let text = url.expose();
        if !(text.starts_with("postgres://") || text.starts_with("postgresql://"))
            || crate::ha::connect::config_of(text).is_none()
        {
            return Err(ConfigError::Secret(format!(
                "the database URL in {} is not a PostgreSQL URL (postgres://user:password@host:port/database)",
                self.url.describe()
            )));
        }
        Ok(url)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawStore {
    postgres: Option<RawPostgres>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPostgres {
    url_env: Option<String>,
    url_file: Option<PathBuf>,
    #[serde(default, deserialize_with = "super::daemon::duration")]
    lease: Option<Duration>,
}

impl RawStore {
    pub(super) fn lower(self, base: &Path) -> Result<StoreConfig, String> {
        let Some(pg) = self.postgres else {
            return Ok(StoreConfig::Local);
        };
        let url = match (pg.url_env, pg.url_file) {
            (Some(env), None) => SecretSource::Env(env),
            (None, Some(file)) => SecretSource::File(base.join(file)),
            (Some(_), Some(_)) => {
                return Err(
                    "`store.postgres` sets both `url_env` and `url_file`; set exactly one".into(),
                )
            }
            (None, None) => {
                return Err(
                    "`store.postgres` needs `url_env` or `url_file` (the URL holds a password, so it is never inline)"
                        .into(),
                )
            }
        };
        let lease = pg.lease.unwrap_or(DEFAULT_LEASE);
        if lease < MIN_LEASE {
            return Err(format!(
                "`store.postgres.lease` must be at least {}",
                humantime::format_duration(MIN_LEASE)
            ));
        }
        Ok(StoreConfig::Postgres(PostgresConfig { url, lease }))
    }
}

/// This node's name among the nodes sharing one database: `node_name`, else the host name.
pub(super) fn node_name(configured: Option<String>) -> Result<String, String> {
    let name = match configured {
        Some(name) => name,
        None => host_name().ok_or(
            "cannot read the host name for `node_name`; set `node_name` in the config".to_string(),
        )?,
    };
    let valid = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if valid {
        Ok(name)
    } else {
        Err(format!(
            "`node_name` must be 1 to 64 letters, digits, `-`, `_` or `.`, found `{name}`"
        ))
    }
}

fn host_name() -> Option<String> {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())?;
    let name = name.trim();
    (!name.is_empty()).then(|| name.to_string())
}

#[cfg(test)]
mod tests {
    use super::super::daemon::DaemonConfig;
    use super::*;

    const MINIMAL: &str = "dbt_cloud:\n  base_url: https://emea.dbt.com\n  account_id: 1\n  token_env: BATON_TEST_TOKEN_UNSET\nstate_dir: state\n";

    fn load(extra: &str) -> Result<DaemonConfig, ConfigError> {
        DaemonConfig::from_str_at(
            Path::new("/etc/baton/config.yaml"),
            &format!("{MINIMAL}{extra}"),
        )
    }

    #[test]
    fn without_a_store_section_state_stays_local_and_the_node_is_the_host() {
        let c = load("").unwrap();
        assert_eq!(c.store, StoreConfig::Local);
        assert_eq!(c.node_name, host_name().unwrap());
        assert_eq!(c.http.advertise, None);
    }

    #[test]
    fn a_postgres_store_with_lease_node_name_and_advertised_address() {
        let c = load(
            "store:\n  postgres:\n    url_file: db-url\n    lease: 4s\nnode_name: baton-a\nhttp:\n  advertise: http://10.0.0.5:8377\n",
        )
        .unwrap();
        assert_eq!(
            c.store,
            StoreConfig::Postgres(PostgresConfig {
                url: SecretSource::File(PathBuf::from("/etc/baton/db-url")),
                lease: Duration::from_secs(4),
            })
        );
        assert_eq!(c.node_name, "baton-a");
        assert_eq!(
            c.http.advertise.as_ref().map(|u| u.as_str()),
            Some("http://10.0.0.5:8377/")
        );
        let c = load("store:\n  postgres:\n    url_env: BATON_TEST_DB_UNSET\n").unwrap();
        let StoreConfig::Postgres(pg) = &c.store else {
            panic!("{c:?}")
        };
        assert_eq!(pg.lease, DEFAULT_LEASE);
    }

    #[test]
    fn bad_store_sections_are_refused() {
        for bad in [
            "store:\n  postgres:\n    url: postgres://u:p@h/db\n",
            "store:\n  postgres:\n    lease: 10s\n",
            "store:\n  postgres:\n    url_env: A\n    url_file: b\n",
            "store:\n  postgres:\n    url_env: A\n    lease: 100ms\n",
            "store:\n  postgres:\n    url_env: A\n    lease: soon\n",
            "store:\n  mysql: {}\n",
            "node_name: \"\"\n",
            "node_name: a b\n",
            "http:\n  advertise: ftp://x\n",
        ] {
            assert!(load(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_url_is_checked_and_never_shown() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("config.yaml");
        let text = format!("{MINIMAL}store:\n  postgres:\n    url_file: db-url\n");
        let c = DaemonConfig::from_str_at(&config, &text).unwrap();
        let StoreConfig::Postgres(pg) = &c.store else {
            panic!("{c:?}")
        };
        std::fs::write(
            dir.path().join("db-url"),
            "postgres://baton:hunter2pw@db.internal:5432/baton?sslmode=require\n",
        )
        .unwrap();
        let url = pg.resolve_url().unwrap();
        assert!(url.expose().ends_with("sslmode=require"));
        assert!(!format!("{url:?} {url} {c:?}").contains("hunter2pw"));

        std::fs::write(dir.path().join("db-url"), "mysql://root:hunter2pw@db/x").unwrap();
        let err = pg.resolve_url().unwrap_err().to_string();
        assert!(err.contains("db-url"), "{err}");
        assert!(!err.contains("hunter2pw"), "{err}");
    }
}
