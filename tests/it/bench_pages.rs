//! `baton bench --quick --only pages` runs the status pages' scenario alone and prints its figures,
//! each render time beside its target with a pass flag. It never asserts on a duration: that is
//! what the benchmark measures.

use std::process::Command;

#[test]
fn the_pages_scenario_runs_alone_and_reports_its_targets() {
    let output = Command::new(assert_cmd::cargo::cargo_bin("baton"))
        .args(["bench", "--quick", "--only", "pages"])
        .output()
        .unwrap();
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.lines().any(|l| l.starts_with("pages")), "{stdout}");
    assert!(!stdout.contains("-0 "), "no negative zero: {stdout}");
    let line = stdout.lines().last().unwrap();
    let json: serde_json::Value = serde_json::from_str(line).unwrap();
    assert_eq!(json["pages_front_pipelines"], 1000.0, "{line}");
    assert_eq!(json["pages_pipeline_steps"], 50.0);
    assert_eq!(json["pages_pipeline_runs"], 30.0);
    for key in ["pages_front_ms", "pages_pipeline_ms"] {
        assert!(json[key].as_f64().unwrap() > 0.0, "{line}");
        assert_eq!(json[format!("{key}_target")], 200.0);
        assert!(json[format!("{key}_pass")].is_boolean());
    }
    assert!(json.get("validate_seconds").is_none(), "{line}");
}
