//! `baton emulator` as a process: it loads the demo scenario, prints its URL and token, serves the
//! API, and runs time faster with `--speed`.

#![allow(clippy::unwrap_used)]

use crate::support::process::baton_bin;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn demo_scenario() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines/demo.scenario.yaml")
}

#[test]
fn the_demo_scenario_parses_and_holds_the_example_pipelines_jobs() {
    let scenario = baton::emulator::Scenario::from_file(demo_scenario()).unwrap();
    for id in [
        559062, 559063, 559064, 559065, 559070, 559071, 559072, 559080, 559081, 559090, 559091,
        559092,
    ] {
        assert!(scenario.job(baton::ids::JobId(id)).is_some(), "job {id}");
    }
}

#[tokio::test]
async fn baton_emulator_serves_the_demo_scenario_at_speed() {
    let child = Command::new(baton_bin())
        .args([
            "emulator",
            "--listen",
            "127.0.0.1:0",
            "--speed",
            "50",
            "--scenario",
        ])
        .arg(demo_scenario())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut child = Killed(child);
    let mut lines = BufReader::new(child.0.stdout.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    let base = first.rsplit(' ').next().unwrap().to_string();
    assert!(base.starts_with("http://127.0.0.1:"), "{first}");
    let printed: Vec<String> = lines.by_ref().take(3).map(|l| l.unwrap()).collect();
    assert!(
        printed.iter().any(|l| l == "token: demo-token-not-secret"),
        "{printed:?}"
    );

    let client = reqwest::Client::new();
    let url = format!("{base}/api/v2/accounts/70403103922125/jobs/559062/run/");
    let answer: serde_json::Value = client
        .post(&url)
        .header("Authorization", "Token demo-token-not-secret")
        .json(&serde_json::json!({"cause": "cli test"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = answer["data"]["id"].as_i64().unwrap();
    // At speed 50 the run (about 10 s of scenario time) ends within a fraction of a second; poll
    // as a client does, with a generous bound.
    let run_url = format!("{base}/api/v2/accounts/70403103922125/runs/{id}/");
    for _ in 0..200 {
        let run: serde_json::Value = client
            .get(&run_url)
            .header("Authorization", "Token demo-token-not-secret")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if run["data"]["status"] == 10 {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("the run did not finish at speed 50");
}
