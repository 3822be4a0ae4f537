//! The throwaway PostgreSQL the HA and store tests use: it starts as an unprivileged user, takes
//! SQL, survives a stop and start, and is gone after drop.

use crate::support::pg::TestPostgres;

#[test]
fn a_throwaway_cluster_starts_answers_restarts_and_is_removed() {
    let Some(pg) =
        TestPostgres::start_or_skip("a_throwaway_cluster_starts_answers_restarts_and_is_removed")
    else {
        return;
    };
    assert_eq!(pg.psql("SELECT 40 + 2"), "42");
    assert_ne!(pg.psql("SELECT current_setting('data_directory')"), "");
    pg.psql("CREATE TABLE kept (v int); INSERT INTO kept VALUES (7)");
    pg.stop();
    pg.start();
    assert_eq!(pg.psql("SELECT v FROM kept"), "7");
    assert!(pg.url().contains(&pg.port().to_string()));
    let dir = pg.dir().to_path_buf();
    drop(pg);
    assert!(!dir.exists(), "{} is left behind", dir.display());
}
