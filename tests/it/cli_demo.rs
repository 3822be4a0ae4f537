//! `baton demo`, the README's first command, run as a user runs it: the real binary, its output.

use assert_cmd::Command;

#[test]
fn the_demo_shows_pipelines_progressing_and_stops_cleanly() {
    let output = Command::cargo_bin("baton")
        .unwrap()
        .args(["demo", "--for", "8s", "--speed", "30"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .timeout(std::time::Duration::from_secs(60))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    for pipeline in [
        "nightly",
        "weekly_backfill",
        "sydney_hourly",
        "regional_handoff",
    ] {
        assert!(
            stdout.contains(&format!("pipeline   {pipeline}")),
            "{stdout}"
        );
    }
    assert!(stdout.contains("queued in dbt Cloud as run"), "{stdout}");
    assert!(stdout.contains("PIPELINE RUN SUCCEEDED"), "{stdout}");
    let summary = stdout
        .lines()
        .find(|l| l.starts_with("pipeline runs: "))
        .unwrap_or_else(|| panic!("no summary in {stdout}"));
    let succeeded: u32 = summary["pipeline runs: ".len()..]
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap();
    assert!(succeeded >= 1, "{summary}");
}
