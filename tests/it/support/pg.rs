//! The throwaway PostgreSQL cluster of `baton::bench::postgres` (the one `baton bench` uses), as
//! the tests want it: a missing PostgreSQL makes a test say it was skipped, or fail under
//! `CI=true`; any other problem fails the test at once.

#![allow(dead_code)]

use baton::bench::postgres::{self, ThrowawayPostgres};
use std::path::{Path, PathBuf};

pub use postgres::PASSWORD;

/// A running cluster; stopped (immediately) and deleted on drop.
#[derive(Debug)]
pub struct TestPostgres(ThrowawayPostgres);

impl TestPostgres {
    /// A started cluster, or `None` after printing why the test is skipped. Under `CI=true` a
    /// missing PostgreSQL fails the test instead.
    pub fn start_or_skip(test: &str) -> Option<TestPostgres> {
        Self::start_with_or_skip(test, |_| {})
    }

    /// As `start_or_skip`, with `prepare` (server settings, files) applied before a restart.
    pub fn start_with_or_skip(
        test: &str,
        prepare: impl FnOnce(&mut ThrowawayPostgres),
    ) -> Option<TestPostgres> {
        let Some(bin) = postgres::bin() else {
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!("{test}: {}, and CI=true requires it", postgres::MISSING);
            }
            println!("SKIPPED {test}: {}", postgres::MISSING);
            return None;
        };
        let mut pg = ThrowawayPostgres::start(bin).unwrap_or_else(|e| panic!("{test}: {e:#}"));
        prepare(&mut pg);
        Some(TestPostgres(pg))
    }

    /// Starts the server (again), waiting until it accepts connections.
    pub fn start(&self) {
        self.0.start_server().unwrap();
    }

    /// Stops the server at once (`immediate`: like a crash, connections cut).
    pub fn stop(&self) {
        self.0.stop().unwrap();
    }

    /// The server's log file (printed on failures).
    pub fn log_path(&self) -> PathBuf {
        self.0.log_path()
    }

    pub fn port(&self) -> u16 {
        self.0.port()
    }

    /// The database's URL, password included.
    pub fn url(&self) -> String {
        self.0.url()
    }

    /// Runs SQL through `psql`; its unaligned, tuples-only output.
    pub fn psql(&self, sql: &str) -> String {
        self.0.psql(sql).unwrap()
    }

    /// A new empty database in the cluster; its URL.
    pub fn create_database(&self, name: &str) -> String {
        self.0.create_database(name).unwrap()
    }

    /// Terminates every backend whose `application_name` is `name`; returns how many.
    pub fn terminate_backends(&self, application_name: &str) -> usize {
        self.0
            .terminate_backends_like(&application_name.replace('_', "\\_"))
            .unwrap()
    }

    /// Terminates every backend whose `application_name` is LIKE `pattern`; returns how many.
    pub fn terminate_backends_like(&self, pattern: &str) -> usize {
        self.0.terminate_backends_like(pattern).unwrap()
    }

    pub fn dir(&self) -> &Path {
        self.0.dir()
    }

    pub fn cluster(&self) -> &ThrowawayPostgres {
        &self.0
    }
}
