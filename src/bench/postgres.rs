//! A throwaway PostgreSQL cluster, for `baton bench` and the tests: `initdb` in a fresh temporary
//! directory as an unprivileged user (the `baton-test` system user, created when missing, when we
//! run as root, as CI does), `postgres` on a free loopback port with its unix socket inside that
//! directory, one database owned by a password-protected role, stopped at once and removed on drop.
//! The real server of Debian's `postgresql` package (`.ci/install-test-deps` installs it); `bin()`
//! says whether it is there.

use anyhow::{bail, Context};
use std::os::unix::fs::{chown, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The role's password: in the URL, so callers can check it never shows.
pub const PASSWORD: &str = "pg-test-s3cret-pw";
const ROLE: &str = "baton";
const DATABASE: &str = "baton_test";
/// The unprivileged user the cluster runs as when we are root.
const TEST_USER: &str = "baton-test";

/// Where the PostgreSQL server binaries are: `BATON_PG_BIN`, Debian's newest
/// `/usr/lib/postgresql/*/bin`, or `PATH`; `None` when they are not installed.
pub fn bin() -> Option<PathBuf> {
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

/// Why PostgreSQL is needed and how to get it, for a skipped test or scenario.
pub const MISSING: &str =
    "PostgreSQL is not installed (apt-get install postgresql; .ci/install-test-deps does it)";

/// A running cluster; stopped (immediately) and deleted on drop.
#[derive(Debug)]
pub struct ThrowawayPostgres {
    dir: PathBuf,
    bin: PathBuf,
    port: u16,
    /// The uid and gid `postgres` runs as when we are root.
    run_as: Option<(u32, u32)>,
    /// `-c name=value` settings given to the server at each start.
    settings: Vec<(String, String)>,
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// The `baton-test` system user's uid and gid, created when missing.
fn unprivileged_user() -> anyhow::Result<(u32, u32)> {
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
            .context("cannot run useradd")?;
        // Another process may have created it meanwhile.
        if !status.success() && lookup("-u").is_none() {
            bail!("useradd {TEST_USER} failed ({status})");
        }
    }
    Ok((
        lookup("-u").context("no uid for the test user")?,
        lookup("-g").context("no gid for the test user")?,
    ))
}

fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// A new directory of our own under the system's temporary directory.
fn fresh_dir() -> anyhow::Result<PathBuf> {
    for _ in 0..100 {
        let dir = std::env::temp_dir().join(format!(
            "baton-pg-{}-{:016x}",
            std::process::id(),
            rand::random::<u64>()
        ));
        match std::fs::create_dir(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e).with_context(|| format!("cannot create {}", dir.display())),
        }
    }
    bail!("cannot find a free temporary directory name")
}

fn check(what: &str, out: std::io::Result<Output>) -> anyhow::Result<Output> {
    let out = out.with_context(|| format!("{what}: cannot run"))?;
    if !out.status.success() {
        bail!(
            "{what} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(out)
}

impl ThrowawayPostgres {
    /// Creates, starts and fills in a cluster with the binaries in `bin` (see `bin()`).
    pub fn start(bin: PathBuf) -> anyhow::Result<ThrowawayPostgres> {
        let run_as = if is_root() {
            Some(unprivileged_user()?)
        } else {
            None
        };
        let pg = ThrowawayPostgres {
            dir: fresh_dir()?,
            bin,
            port: free_port()?,
            run_as,
            settings: Vec::new(),
        };
        if let Some((uid, gid)) = run_as {
            chown(&pg.dir, Some(uid), Some(gid))?;
        }
        let pwfile = pg.install_file("pwfile", PASSWORD.as_bytes())?;
        check(
            "initdb",
            pg.command("initdb")
                .arg("-D")
                .arg(pg.data_dir())
                .args(["-U", ROLE, "-E", "UTF8", "--no-locale", "--no-sync"])
                .args(["--auth-local=trust", "--auth-host=scram-sha-256"])
                .arg(format!("--pwfile={}", pwfile.display()))
                .output(),
        )?;
        pg.start_server()?;
        check(
            "createdb",
            Command::new(pg.bin.join("createdb"))
                .args(pg.connection_args())
                .arg(DATABASE)
                .env("PGPASSWORD", PASSWORD)
                .output(),
        )?;
        Ok(pg)
    }

    /// A command from the server's bin directory, run as the unprivileged user when we are root.
    fn command(&self, tool: &str) -> Command {
        let mut command = Command::new(self.bin.join(tool));
        command.current_dir(&self.dir);
        if let Some((uid, gid)) = self.run_as {
            command.uid(uid).gid(gid);
        }
        command
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
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

    /// Writes `name` in the cluster's directory, readable by the server's user alone (a key file
    /// must be); its path.
    pub fn install_file(&self, name: &str, contents: &[u8]) -> anyhow::Result<PathBuf> {
        let path = self.dir.join(name);
        std::fs::write(&path, contents)
            .with_context(|| format!("cannot write {}", path.display()))?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
        if let Some((uid, gid)) = self.run_as {
            chown(&path, Some(uid), Some(gid))?;
        }
        Ok(path)
    }

    /// A server setting (`-c name=value`) for every start from now on (`stop` and `start_server`
    /// to apply it to a running cluster).
    pub fn set(&mut self, name: &str, value: &str) {
        self.settings.push((name.to_string(), value.to_string()));
    }

    /// Starts the server (again), waiting until it accepts connections.
    pub fn start_server(&self) -> anyhow::Result<()> {
        let mut options = format!(
            "-c listen_addresses=127.0.0.1 -p {} -k {} -c fsync=off -c full_page_writes=off -c max_connections=60",
            self.port,
            self.dir.display()
        );
        for (name, value) in &self.settings {
            options.push_str(&format!(" -c {name}={value}"));
        }
        check(
            "pg_ctl start",
            self.command("pg_ctl")
                .arg("-D")
                .arg(self.data_dir())
                .arg("-l")
                .arg(self.log_path())
                .args(["-w", "-t", "60", "-o", &options, "start"])
                .output(),
        )
        .map(drop)
    }

    /// Stops the server at once (`immediate`: like a crash, connections cut).
    pub fn stop(&self) -> anyhow::Result<()> {
        check(
            "pg_ctl stop",
            self.command("pg_ctl")
                .arg("-D")
                .arg(self.data_dir())
                .args(["-w", "-m", "immediate", "stop"])
                .output(),
        )
        .map(drop)
    }

    /// The server's log file.
    pub fn log_path(&self) -> PathBuf {
        self.dir.join("postgres.log")
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The database's URL, password included.
    pub fn url(&self) -> String {
        self.url_of(DATABASE)
    }

    fn url_of(&self, database: &str) -> String {
        format!(
            "postgres://{ROLE}:{PASSWORD}@127.0.0.1:{}/{database}",
            self.port
        )
    }

    /// Runs SQL through `psql` (a separate client, as an operator would) and returns its
    /// unaligned, tuples-only output.
    pub fn psql(&self, sql: &str) -> anyhow::Result<String> {
        let out = check(
            "psql",
            Command::new(self.bin.join("psql"))
                .args(self.connection_args())
                .args(["-d", DATABASE, "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1"])
                .args(["-c", sql])
                .env("PGPASSWORD", PASSWORD)
                .env("PGSSLMODE", "prefer")
                .output(),
        )?;
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    /// A new empty database in the cluster; its URL.
    pub fn create_database(&self, name: &str) -> anyhow::Result<String> {
        self.psql(&format!("CREATE DATABASE {name}"))?;
        Ok(self.url_of(name))
    }

    /// Terminates every backend whose `application_name` is LIKE `pattern`; returns how many.
    pub fn terminate_backends_like(&self, pattern: &str) -> anyhow::Result<usize> {
        let count = self.psql(&format!(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name LIKE '{pattern}'"
        ))?;
        count
            .parse()
            .with_context(|| format!("psql answered {count:?}"))
    }
}

impl Drop for ThrowawayPostgres {
    fn drop(&mut self) {
        let _ = self
            .command("pg_ctl")
            .arg("-D")
            .arg(self.data_dir())
            .args(["-w", "-m", "immediate", "stop"])
            .output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
