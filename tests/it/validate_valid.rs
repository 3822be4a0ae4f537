//! The sound side of validation: the example pipelines and tests/data/valid load, lower to what
//! they say, and agree with the JSON Schema that `baton schema` prints (the hand lowering and the
//! derived schema cannot drift apart unnoticed).

#![allow(clippy::unwrap_used)] // helpers of a test crate, not only #[test] fns

use baton::config::{self, keys, raw};
use baton::model::pipeline::{CatchupPolicy, ConcurrencyPolicy, OverrideValue, Template};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::Duration;

fn yaml_files(dir: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_str().unwrap();
            name.ends_with(".yaml") && !name.ends_with(".scenario.yaml")
        })
        .collect();
    files.sort();
    files
}

fn sound_files() -> Vec<PathBuf> {
    let mut files = yaml_files("pipelines");
    files.extend(yaml_files("tests/data/valid"));
    assert!(files.len() >= 6, "{files:?}");
    files
}

/// A small draft-07 checker: `$ref`, `anyOf`/`oneOf`, `type`, `enum`, `required`, `properties`,
/// `additionalProperties`, `items`, `minimum`. Returns every violation with its JSON path.
fn violations(root: &Value, schema: &Value, value: &Value, path: &str, out: &mut Vec<String>) {
    if let Some(reference) = schema.get("$ref").and_then(Value::as_str) {
        let name = reference.trim_start_matches("#/definitions/");
        let target = &root["definitions"][name];
        assert!(!target.is_null(), "dangling {reference}");
        return violations(root, target, value, path, out);
    }
    for key in ["anyOf", "oneOf"] {
        if let Some(options) = schema.get(key).and_then(Value::as_array) {
            let fits = options.iter().any(|o| {
                let mut v = Vec::new();
                violations(root, o, value, path, &mut v);
                v.is_empty()
            });
            if !fits {
                out.push(format!("{path}: fits none of {key}"));
            }
        }
    }
    if let Some(types) = schema.get("type") {
        let types: Vec<&str> = match types {
            Value::String(t) => vec![t.as_str()],
            Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
            _ => vec![],
        };
        let actual = match value {
            Value::Null => "null",
            Value::Bool(_) => "boolean",
            Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
            Value::Number(_) => "number",
            Value::String(_) => "string",
            Value::Array(_) => "array",
            Value::Object(_) => "object",
        };
        let ok = types.contains(&actual) || (actual == "integer" && types.contains(&"number"));
        if !ok {
            out.push(format!("{path}: {actual} where {types:?} expected"));
            return;
        }
    }
    if let Some(options) = schema.get("enum").and_then(Value::as_array) {
        if !options.contains(value) {
            out.push(format!("{path}: {value} not in {options:?}"));
        }
    }
    if let (Some(min), Some(n)) = (
        schema.get("minimum").and_then(Value::as_f64),
        value.as_f64(),
    ) {
        if n < min {
            out.push(format!("{path}: {n} below {min}"));
        }
    }
    if let Some(object) = value.as_object() {
        for required in schema
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let key = required.as_str().unwrap();
            if !object.contains_key(key) {
                out.push(format!("{path}: missing `{key}`"));
            }
        }
        let properties = schema.get("properties").and_then(Value::as_object);
        for (key, item) in object {
            match properties.and_then(|p| p.get(key)) {
                Some(sub) => violations(root, sub, item, &format!("{path}.{key}"), out),
                None => match schema.get("additionalProperties") {
                    Some(Value::Bool(false)) => out.push(format!("{path}: unknown `{key}`")),
                    Some(sub @ Value::Object(_)) => {
                        violations(root, sub, item, &format!("{path}.{key}"), out)
                    }
                    _ => {}
                },
            }
        }
    }
    if let (Some(items), Some(array)) = (schema.get("items"), value.as_array()) {
        for (i, item) in array.iter().enumerate() {
            violations(root, items, item, &format!("{path}[{i}]"), out);
        }
    }
}

fn schema_violations(file: &Path) -> Vec<String> {
    let schema = raw::pipeline_schema();
    let text = std::fs::read_to_string(file).unwrap();
    let value: Value = serde_yaml::from_str(&text).unwrap();
    let mut out = Vec::new();
    violations(&schema, &schema, &value, "$", &mut out);
    out
}

#[test]
fn examples_and_valid_files_load() {
    for file in sound_files() {
        if let Err(d) = config::load_pipelines(std::slice::from_ref(&file)) {
            panic!("{}:\n{d}", file.display());
        }
    }
    let all = config::load_pipelines(&[PathBuf::from("pipelines")]).unwrap();
    let names: Vec<&str> = all.iter().map(|p| p.name.0.as_str()).collect();
    assert_eq!(
        names,
        [
            "nightly",
            "regional_handoff",
            "sydney_hourly",
            "weekly_backfill"
        ]
    );
}

#[test]
fn sound_files_fit_the_schema_and_the_raw_types() {
    for file in sound_files() {
        let v = schema_violations(&file);
        assert!(v.is_empty(), "{}: {v:#?}", file.display());
        let text = std::fs::read_to_string(&file).unwrap();
        if let Err(e) = serde_yaml::from_str::<raw::RawPipeline>(&text) {
            panic!("{}: {e}", file.display());
        }
    }
}

#[test]
fn the_schema_checker_can_fail() {
    let dir = Path::new("tests/data/invalid");
    assert!(schema_violations(&dir.join("unknown_key.yaml"))
        .iter()
        .any(|v| v.contains("unknown `dependson`")));
    assert!(!schema_violations(&dir.join("override_wrong_type.yaml")).is_empty());
    assert!(!schema_violations(&dir.join("missing_field.yaml")).is_empty());
}

#[test]
fn lowering_keys_equal_schema_properties() {
    let schema = raw::pipeline_schema();
    let props = |v: &Value| -> Vec<String> {
        let mut keys: Vec<String> = v["properties"]
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect();
        keys.sort();
        keys
    };
    let sorted = |k: &[&str]| -> Vec<String> {
        let mut k: Vec<String> = k.iter().map(|s| s.to_string()).collect();
        k.sort();
        k
    };
    let def = |name: &str| schema["definitions"][name].clone();
    assert_eq!(props(&schema), sorted(keys::PIPELINE));
    assert_eq!(props(&def("RawSchedule")), sorted(keys::SCHEDULE));
    assert_eq!(props(&def("RawDefaults")), sorted(keys::DEFAULTS));
    assert_eq!(props(&def("RawRetry")), sorted(keys::RETRY));
    assert_eq!(props(&def("RawStep")), sorted(keys::STEP));
    assert_eq!(props(&def("RawBackfill")), sorted(keys::BACKFILL));
    assert_eq!(
        props(&def("RawBackfillSchedule")),
        sorted(keys::BACKFILL_SCHEDULE)
    );
    let overrides: Vec<&str> = baton::model::template::OVERRIDE_FIELDS
        .iter()
        .map(|(n, _)| *n)
        .collect();
    assert_eq!(props(&def("RawOverrides")), sorted(&overrides));
    assert_eq!(schema["$schema"], "http://json-schema.org/draft-07/schema#");
}

#[test]
fn committed_schema_is_up_to_date() {
    let committed = std::fs::read_to_string("baton.schema.json").unwrap();
    assert!(
        committed == raw::pipeline_schema_json(),
        "baton.schema.json is stale: run `cargo run -- schema > baton.schema.json`"
    );
}

#[test]
fn every_key_lowers_to_what_it_says() {
    let p =
        &config::load_pipelines(&[PathBuf::from("tests/data/valid/every_key.yaml")]).unwrap()[0];
    let schedule = p.schedule.as_ref().unwrap();
    assert_eq!(schedule.timezone, chrono_tz::America::New_York);
    assert_eq!(schedule.catchup, CatchupPolicy::All);
    assert_eq!(p.concurrency, ConcurrencyPolicy::CancelRunning);
    assert!(p.suspended);
    let names: Vec<&str> = p.steps.iter().map(|s| s.name.0.as_str()).collect();
    assert_eq!(names, ["load", "report"]);
    let load = &p.steps[0];
    // The step's own retry sets attempts; the rest comes from defaults.
    assert_eq!(load.limits.retry.attempts, 1);
    assert_eq!(load.limits.retry.backoff, Duration::from_secs(30));
    assert!(
        load.limits.retry.from_failure
            && load.limits.retry.on_timeout
            && !load.limits.retry.on_cancel
    );
    assert_eq!(load.limits.timeout, Some(Duration::from_secs(3600)));
    assert_eq!(load.overrides.len(), 9);
    assert_eq!(
        load.overrides["threads_override"],
        OverrideValue::Integer(4)
    );
    assert_eq!(
        load.overrides["schema_override"],
        OverrideValue::Text(Template("s_{{ ds_nodash }}".into()))
    );
    let report = &p.steps[1];
    assert_eq!(report.limits.retry.attempts, 4);
    assert_eq!(report.limits.timeout, Some(Duration::from_secs(9000)));
    assert_eq!(report.limits.queue_timeout, Some(Duration::from_secs(900)));
    let backfill = p.backfill.as_ref().unwrap();
    assert_eq!(backfill.window, Duration::from_secs(7 * 86_400));
    assert_eq!(backfill.max_active, 2);
    assert_eq!(backfill.schedule.catchup, CatchupPolicy::None);

    let anchors =
        &config::load_pipelines(&[PathBuf::from("tests/data/valid/anchors.yaml")]).unwrap()[0];
    assert_eq!(anchors.steps[1].limits.retry.attempts, 5);
    assert_eq!(
        anchors.steps[1].limits.retry.backoff,
        Duration::from_secs(60)
    );
}

#[test]
fn scenario_files_are_skipped_in_directories() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("demo.scenario.yaml"), "not: a pipeline\n").unwrap();
    std::fs::write(
        dir.path().join("p.yml"),
        "name: p\nsteps: { a: { job_id: 1 } }\n",
    )
    .unwrap();
    let loaded = config::load_pipelines(&[dir.path().to_path_buf()]).unwrap();
    assert_eq!(loaded.len(), 1);
}
