//! The real `baton` binary: validate (text, JSON, exit codes), graph in three formats, schedule
//! output in the pipeline's zone and UTC, schema.

#![allow(clippy::unwrap_used)] // helpers of a test crate, not only #[test] fns

use assert_cmd::Command;
use predicates::prelude::*;
use serde_json::Value;

fn baton() -> Command {
    assert_cmd::cargo::cargo_bin_cmd!("baton")
}

fn stdout_of(args: &[&str]) -> String {
    let out = baton().args(args).assert().success();
    String::from_utf8(out.get_output().stdout.clone()).unwrap()
}

#[test]
fn validate_examples_is_clean() {
    baton()
        .args(["validate", "pipelines/"])
        .assert()
        .code(0)
        .stdout(predicate::str::contains("4 pipeline(s) valid"));
    // No path: the default pipelines directory.
    baton().arg("validate").assert().code(0);
}

#[test]
fn validate_invalid_dir_lists_every_file_and_exits_1() {
    let out = baton()
        .args(["validate", "tests/data/invalid"])
        .assert()
        .code(1);
    let stderr = String::from_utf8(out.get_output().stderr.clone()).unwrap();
    for entry in std::fs::read_dir("tests/data/invalid").unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap();
        if name == "duplicate_pipeline_a.yaml" {
            continue; // sound by itself; its twin is the one reported
        }
        assert!(
            stderr.contains(&format!("--> tests/data/invalid/{name}:")),
            "{name} missing from:\n{stderr}"
        );
    }
    assert!(stderr.contains("error: dependency cycle: a -> c -> b -> a"));
    assert!(stderr.contains("problem(s) in 15 file(s)"), "{stderr}");
}

#[test]
fn validate_json() {
    let out = baton()
        .args([
            "validate",
            "--format",
            "json",
            "tests/data/invalid/five_problems.yaml",
        ])
        .assert()
        .code(1);
    let json: Value = serde_json::from_slice(&out.get_output().stdout).unwrap();
    assert_eq!(json["ok"], false);
    let diagnostics = json["diagnostics"].as_array().unwrap();
    assert_eq!(diagnostics.len(), 5);
    let positions: Vec<(u64, u64)> = diagnostics
        .iter()
        .map(|d| (d["line"].as_u64().unwrap(), d["column"].as_u64().unwrap()))
        .collect();
    assert_eq!(positions, [(3, 9), (5, 12), (9, 14), (12, 27), (14, 25)]);
    assert_eq!(diagnostics[1]["hint"], "did you mean `latest`?");

    let clean: Value =
        serde_json::from_str(&stdout_of(&["validate", "--format", "json", "pipelines"])).unwrap();
    assert_eq!(clean["ok"], true);
    assert_eq!(
        clean["pipelines"],
        serde_json::json!([
            "nightly",
            "regional_handoff",
            "sydney_hourly",
            "weekly_backfill"
        ])
    );
}

#[test]
fn usage_errors_exit_2() {
    baton()
        .args(["validate", "--format", "xml"])
        .assert()
        .code(2);
    baton().arg("frobnicate").assert().code(2);
    baton()
        .args(["schedule", "nightly", "--from", "yesterday"])
        .assert()
        .code(2);
}

#[test]
fn missing_path_and_broken_config_exit_1() {
    baton()
        .args(["validate", "no/such/dir"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("no such file or directory"));
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.yaml");
    std::fs::write(&config, "dbt_cloud: {}\nbogus: 1\n").unwrap();
    baton()
        .args(["validate", "--config", config.to_str().unwrap()])
        .assert()
        .code(1);
}

#[test]
fn validate_uses_the_config_pipelines_dir() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("mine")).unwrap();
    std::fs::write(
        dir.path().join("mine/p.yaml"),
        "name: p\nsteps:\n  a:\n    job_id: 1\n",
    )
    .unwrap();
    let config = dir.path().join("config.yaml");
    std::fs::write(
        &config,
        "dbt_cloud:\n  base_url: https://cloud.getdbt.com\n  account_id: 1\n  token_env: T\nstate_dir: state\npipelines_dir: mine\n",
    )
    .unwrap();
    baton()
        .args(["validate", "--config", config.to_str().unwrap()])
        .assert()
        .code(0)
        .stdout(predicate::str::contains("ok: p ("));
}

#[test]
fn graph_in_three_formats() {
    let text = stdout_of(&["graph", "nightly"]);
    assert_eq!(
        text,
        "nightly\n  snapshots (job 559065)\n  staging (job 559062)\n  marts (job 559063) <- staging\n  exposures (job 559064) <- marts, staging\n"
    );
    let dot = stdout_of(&["graph", "pipelines/nightly.yaml", "--format", "dot"]);
    assert!(dot.starts_with("digraph \"nightly\" {"), "{dot}");
    assert!(dot.contains("\"staging\" -> \"marts\";"));
    assert!(dot.contains("\"marts\" -> \"exposures\";"));
    assert!(dot.contains("\"staging\" -> \"exposures\";"));
    let mermaid = stdout_of(&["graph", "nightly", "--format", "mermaid"]);
    assert!(mermaid.starts_with("flowchart LR\n"));
    assert_eq!(mermaid.matches("-->").count(), 3, "{mermaid}");
    baton()
        .args(["graph", "nightlly"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("did you mean `nightly`?"));
}

#[test]
fn schedule_prints_zone_and_utc_across_spring_forward() {
    let out = stdout_of(&[
        "schedule",
        "nightly",
        "--from",
        "2026-03-27T12:00:00Z",
        "--next",
        "3",
    ]);
    assert_eq!(
        out,
        "nightly: `0 2 * * *` in Europe/Amsterdam\n\
         next 3 fire time(s) after 2026-03-27T12:00:00+00:00:\n\
         Sat 2026-03-28 02:00 CET (+01:00)  2026-03-28T01:00:00Z\n\
         Sun 2026-03-29 03:00 CEST (+02:00)  2026-03-29T01:00:00Z\n\
         Mon 2026-03-30 02:00 CEST (+02:00)  2026-03-30T00:00:00Z\n"
    );
    let out = stdout_of(&["schedule", "tests/data/valid/minimal.yaml"]);
    assert_eq!(
        out,
        "minimal has no schedule: it runs only when triggered\n"
    );
    let out = stdout_of(&["schedule", "pipelines/sydney_hourly.yaml", "--next", "2"]);
    assert!(out.contains("in Australia/Sydney"), "{out}");
    assert_eq!(out.lines().count(), 4, "{out}");
}

#[test]
fn schema_is_draft07_json_and_matches_the_committed_file() {
    let out = stdout_of(&["schema"]);
    let json: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(json["$schema"], "http://json-schema.org/draft-07/schema#");
    assert_eq!(json["required"], serde_json::json!(["name", "steps"]));
    assert_eq!(out, std::fs::read_to_string("baton.schema.json").unwrap());
}
