//! Third-party dbt Cloud clients from PyPI against the real `baton emulator` binary: Airflow's
//! `DbtCloudHook` and `dbt-cloud-cli` trigger, wait, list runs, fetch run_results.json and cancel,
//! changing nothing but where they connect (see tests/thirdparty/). Needs the virtualenv that
//! `.ci/install-test-deps` creates; without it the test says loudly that it skipped.

#![allow(clippy::unwrap_used)]

use crate::support::process::baton_bin;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

const TOKEN: &str = "thirdparty-token";
const ACCOUNT: &str = "70403103922125";

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn crate_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn venv_python() -> Option<PathBuf> {
    let python = crate_dir().join("target/thirdparty-venv/bin/python");
    python.exists().then_some(python)
}

/// Starts `baton emulator --speed 20` on a free port and returns it with its `host:port`.
fn start_emulator() -> (Killed, String) {
    let mut child = Command::new(baton_bin())
        .args([
            "emulator",
            "--listen",
            "127.0.0.1:0",
            "--speed",
            "20",
            "--scenario",
        ])
        .arg(crate_dir().join("tests/data/emulator/thirdparty.scenario.yaml"))
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let first = BufReader::new(child.stdout.take().unwrap())
        .lines()
        .next()
        .unwrap()
        .unwrap();
    let host = first.rsplit("http://").next().unwrap().trim().to_string();
    (Killed(child), host)
}

fn run_script(script: &str) {
    let Some(python) = venv_python() else {
        println!(
            "\n*** SKIPPED third-party client test {script}: target/thirdparty-venv is missing.\n\
             *** Install the clients with `bash .ci/install-test-deps` (about 2 minutes).\n"
        );
        return;
    };
    let (_emulator, host) = start_emulator();
    let output = Command::new(python)
        .arg(crate_dir().join("tests/thirdparty").join(script))
        .env("EMULATOR_HOST", &host)
        .env("EMULATOR_TOKEN", TOKEN)
        .env("EMULATOR_ACCOUNT", ACCOUNT)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}");
    assert!(
        output.status.success(),
        "{script} failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
    assert!(
        stdout.contains(": OK"),
        "{script} did not finish:\n{stdout}\n{stderr}"
    );
}

#[test]
fn airflow_dbt_cloud_hook_works_against_the_emulator() {
    run_script("airflow_dbt_cloud_hook.py");
}

#[test]
fn dbt_cloud_cli_works_against_the_emulator() {
    run_script("dbt_cloud_cli.py");
}
