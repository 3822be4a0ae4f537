//! A throwaway PostgreSQL cluster for tests: `initdb` in a temporary directory as an unprivileged
//! user (the `baton-test` system user when the tests run as root, as CI does), `postgres` on a free
//! loopback port with its unix socket inside that directory, one database with a password-protected
//! role, stopped and removed on drop. No mock: the real server Debian's `postgresql` package
//! installs (`.ci/install-test-deps`). Absent, a test says it was skipped, or fails under `CI=true`.

#![allow(dead_code)]

use std::os::unix::fs::chown;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The role's password: in the URL, so tests can check it never shows.
pub const PASSWORD: &str = "pg-test-s3cret-pw";
const ROLE: &str = "baton";
const DATABASE: &str = "baton_test";
/// The unprivileged user the cluster runs as when the tests run as root.
const TEST_USER: &str = "baton-test";

/// A running cluster; stopped (immediately) and deleted on drop.
#[derive(Debug)]
pub struct TestPostgres {
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
    /// The uid and gid `postgres` runs as when we are root.
    run_as: Option<(u32, u32)>,
}

/// Where the PostgreSQL server binaries are: `BATON_PG_BIN`, Debian's newest
/// `/usr/lib/postgresql/*/bin`, or `PATH`.
fn find_bin() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("BATON_PG_BIN") {
        return Some(PathBuf::from(dir));
    }
    let mut debian: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").is_file().then_some((version, bin))
        })
        .collect();
    debian.sort();
    if let Some((_, bin)) = debian.pop() {
        return Some(bin);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).find(|d| d.join("initdb").is_file() && d.join("pg_ctl").is_file())
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// The `baton-test` system user's uid and gid, created when missing.
fn unprivileged_user() -> (u32, u32) {
    let lookup = |flag: &str| -> Option<u32> {
        let out = Command::new("id").args([flag, TEST_USER]).output().ok()?;
        String::from_utf8_lossy(&out.stdout).trim().parse().ok()
    };
    if lookup("-u").is_none() {
        let status = Command::new("useradd")
            .args([
                "--system",
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
            ])
            .arg(TEST_USER)
            .status()
            .expect("run useradd");
        // Another test process may have created it meanwhile.
        assert!(
            status.success() || lookup("-u").is_some(),
            "useradd {TEST_USER} failed"
        );
    }
    (lookup("-u").unwrap(), lookup("-g").unwrap())
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

fn check(what: &str, out: std::io::Result<Output>) -> Output {
    let out = out.unwrap_or_else(|e| panic!("{what}: cannot run: {e}"));
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

impl TestPostgres {
    /// A started cluster, or `None` after printing why the test is skipped. Under `CI=true` a
    /// missing PostgreSQL fails the test instead.
    pub fn start_or_skip(test: &str) -> Option<TestPostgres> {
        let Some(bin) = find_bin() else {
            let why = "PostgreSQL is not installed (apt-get install postgresql; .ci/install-test-deps does it)";
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!("{test}: {why}, and CI=true requires it");
            }
            println!("SKIPPED {test}: {why}");
            return None;
        };
        Some(Self::start_with(bin))
    }

    fn start_with(bin: PathBuf) -> TestPostgres {
        let dir = tempfile::Builder::new()
            .prefix("baton-pg-")
            .tempdir()
            .unwrap();
        let run_as = is_root().then(unprivileged_user);
        if let Some((uid, gid)) = run_as {
            chown(dir.path(), Some(uid), Some(gid)).unwrap();
        }
        let pg = TestPostgres {
            dir,
            bin,
            port: free_port(),
            run_as,
        };
        let pwfile = pg.dir.path().join("pwfile");
        std::fs::write(&pwfile, PASSWORD).unwrap();
        if let Some((uid, gid)) = run_as {
            chown(&pwfile, Some(uid), Some(gid)).unwrap();
        }
        check(
            "initdb",
            pg.command("initdb")
                .arg("-D")
                .arg(pg.data_dir())
                .args(["-U", ROLE, "-E", "UTF8", "--no-locale", "--no-sync"])
                .args(["--auth-local=trust", "--auth-host=scram-sha-256"])
                .arg(format!("--pwfile={}", pwfile.display()))
                .output(),
        );
        pg.start();
        check(
            "createdb",
            Command::new(pg.bin.join("createdb"))
                .args(pg.connection_args())
                .arg(DATABASE)
                .env("PGPASSWORD", PASSWORD)
                .output(),
        );
        pg
    }

    /// A command from the server's bin directory, run as the unprivileged user when we are root.
    fn command(&self, tool: &str) -> Command {
        let mut command = Command::new(self.bin.join(tool));
        command.current_dir(self.dir.path());
        if let Some((uid, gid)) = self.run_as {
            command.uid(uid).gid(gid);
        }
        command
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn connection_args(&self) -> Vec<String> {
        vec![
            "-h".into(),
            "127.0.0.1".into(),
            "-p".into(),
            self.port.to_string(),
            "-U".into(),
            ROLE.into(),
        ]
    }

    /// Starts the server (again), waiting until it accepts connections.
    pub fn start(&self) {
        let options = format!(
            "-c listen_addresses=127.0.0.1 -p {} -k {} -c fsync=off -c full_page_writes=off -c max_connections=60",
            self.port,
            self.dir.path().display()
        );
        check(
            "pg_ctl start",
            self.command("pg_ctl")
                .arg("-D")
                .arg(self.data_dir())
                .arg("-l")
                .arg(self.log_path())
                .args(["-w", "-t", "60", "-o", &options, "start"])
                .output(),
        );
    }

    /// Stops the server at once (`immediate`: like a crash, connections cut).
    pub fn stop(&self) {
        check(
            "pg_ctl stop",
            self.command("pg_ctl")
                .arg("-D")
                .arg(self.data_dir())
                .args(["-w", "-m", "immediate", "stop"])
                .output(),
        );
    }

    /// The server's log file (printed on failures).
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("postgres.log")
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The database's URL, password included.
    pub fn url(&self) -> String {
        format!(
            "postgres://{ROLE}:{PASSWORD}@127.0.0.1:{}/{DATABASE}",
            self.port
        )
    }

    /// Runs SQL through `psql` (a separate client, as an operator would) and returns its
    /// unaligned, tuples-only output.
    pub fn psql(&self, sql: &str) -> String {
        let out = check(
            "psql",
            Command::new(self.bin.join("psql"))
                .args(self.connection_args())
                .args([
                    "-d",
                    DATABASE,
                    "-X",
                    "-A",
                    "-t",
                    "-v",
                    "ON_ERROR_STOP=1",
                    "-c",
                    sql,
                ])
                .env("PGPASSWORD", PASSWORD)
                .output(),
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// A new empty database in the cluster; its URL.
    pub fn create_database(&self, name: &str) -> String {
        self.psql(&format!("CREATE DATABASE {name}"));
        format!(
            "postgres://{ROLE}:{PASSWORD}@127.0.0.1:{}/{name}",
            self.port
        )
    }

    /// Terminates every backend whose `application_name` is `name`; returns how many.
    pub fn terminate_backends(&self, application_name: &str) -> usize {
        self.psql(&format!(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = '{application_name}'"
        ))
        .parse()
        .unwrap()
    }

    /// Terminates every backend whose `application_name` is LIKE `pattern`; returns how many.
    pub fn terminate_backends_like(&self, pattern: &str) -> usize {
        self.psql(&format!(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name LIKE '{pattern}'"
        ))
        .parse()
        .unwrap()
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for TestPostgres {
    fn drop(&mut self) {
        let _ = self
            .command("pg_ctl")
            .arg("-D")
            .arg(self.data_dir())
            .args(["-w", "-m", "immediate", "stop"])
            .output();
    }
}
