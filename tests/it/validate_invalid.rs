//! Every broken file in tests/data/invalid yields the expected diagnostics (insta snapshots of the
//! rendered text, which names file:line:column, shows the source line and a caret, and a hint).

#![allow(clippy::unwrap_used)] // helpers of a test crate, not only #[test] fns

use baton::config::{self, Diagnostics};
use std::path::{Path, PathBuf};

const DIR: &str = "tests/data/invalid";

fn problems(files: &[&str]) -> Diagnostics {
    let paths: Vec<PathBuf> = files.iter().map(|f| Path::new(DIR).join(f)).collect();
    match config::load_pipelines(&paths) {
        Ok(p) => panic!("{files:?} loaded without a problem: {p:?}"),
        Err(d) => d,
    }
}

fn check(file: &str, expected_count: usize) {
    let diagnostics = problems(&[file]);
    assert_eq!(diagnostics.len(), expected_count, "{diagnostics}");
    for d in &diagnostics.items {
        assert!(d.line > 0 && d.column > 0, "no position: {d}");
        assert!(d.excerpt.is_some(), "no excerpt: {d}");
    }
    let name = file.trim_end_matches(".yaml");
    insta::assert_snapshot!(name, diagnostics.to_string());
}

#[test]
fn yaml_syntax() {
    check("yaml_syntax.yaml", 1);
}

#[test]
fn unknown_key() {
    check("unknown_key.yaml", 1);
}

#[test]
fn missing_field() {
    check("missing_field.yaml", 1);
}

#[test]
fn wrong_type() {
    check("wrong_type.yaml", 1);
}

#[test]
fn override_wrong_type() {
    check("override_wrong_type.yaml", 1);
}

#[test]
fn bad_cron() {
    check("bad_cron.yaml", 1);
}

#[test]
fn unknown_timezone() {
    check("unknown_timezone.yaml", 1);
}

#[test]
fn bad_duration() {
    check("bad_duration.yaml", 1);
}

#[test]
fn missing_dependency() {
    check("missing_dependency.yaml", 1);
}

#[test]
fn duplicate_step() {
    check("duplicate_step.yaml", 1);
}

#[test]
fn cycle() {
    check("cycle.yaml", 1);
}

#[test]
fn template_unknown_variable() {
    check("template_unknown_variable.yaml", 1);
}

#[test]
fn cause_too_long() {
    check("cause_too_long.yaml", 1);
}

#[test]
fn five_problems() {
    check("five_problems.yaml", 5);
}

#[test]
fn duplicate_pipeline_names_across_files() {
    let diagnostics = problems(&["duplicate_pipeline_a.yaml", "duplicate_pipeline_b.yaml"]);
    assert_eq!(diagnostics.len(), 1, "{diagnostics}");
    insta::assert_snapshot!("duplicate_pipeline", diagnostics.to_string());
}

#[test]
fn the_directory_reports_every_file() {
    let diagnostics = match config::load_pipelines(&[PathBuf::from(DIR)]) {
        Ok(_) => panic!("the invalid directory loaded"),
        Err(d) => d,
    };
    let mut yaml_files: Vec<PathBuf> = std::fs::read_dir(DIR)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    yaml_files.sort();
    // duplicate_pipeline_a.yaml is sound by itself: its twin carries the problem.
    yaml_files.retain(|p| !p.ends_with("duplicate_pipeline_a.yaml"));
    let reported: Vec<PathBuf> = diagnostics
        .files()
        .iter()
        .map(|p| p.to_path_buf())
        .collect();
    assert_eq!(reported, yaml_files);
    assert_eq!(diagnostics.len(), yaml_files.len() + 4, "{diagnostics}");
}

#[test]
fn json_names_file_line_and_column() {
    let diagnostics = problems(&["unknown_key.yaml"]);
    let json: serde_json::Value = serde_json::from_str(&diagnostics.to_json()).unwrap();
    assert_eq!(
        json,
        serde_json::json!([{
            "file": "tests/data/invalid/unknown_key.yaml",
            "line": 7,
            "column": 5,
            "message": "unknown key `dependson` in step `marts`",
            "hint": "did you mean `depends_on`?",
            "excerpt": "    dependson: [staging]"
        }])
    );
}

#[test]
fn problems_from_text_with_several_documents_and_empty_files() {
    let err = config::load_pipeline_str("two.yaml", "name: a\n---\nname: b\n").unwrap_err();
    assert!(
        err.items[0].message.contains("more than one YAML document"),
        "{err}"
    );
    assert_eq!(err.items[0].line, 3);
    let err = config::load_pipeline_str("empty.yaml", "# nothing\n").unwrap_err();
    assert!(err.items[0].message.contains("empty file"), "{err}");
    let err = config::load_pipeline_str("list.yaml", "- a\n- b\n").unwrap_err();
    assert!(err.items[0].message.contains("must be a mapping"), "{err}");
}
