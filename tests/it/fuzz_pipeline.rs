//! Fuzzes pipeline loading the way `baton validate` does it (a file on disk through
//! `config::load_pipelines`: spanned YAML, lowering, checks) and renders the diagnostics as the
//! CLI prints them (text and JSON). Properties: nothing panics; a rejection carries at least one
//! diagnostic, each at a line and column inside the input with the excerpt of that very line.

#![allow(clippy::unwrap_used)] // helpers of a test crate, not only #[test] fns

use crate::support::fuzz;
use crate::support::fuzz::{Target, Verdict};
use baton::config;
use proptest::prelude::*;
use std::path::PathBuf;

const DICTIONARY: &[&str] = &[
    ": ",
    "\n",
    "\n  ",
    "- ",
    "[",
    "]",
    "{",
    "}",
    "'",
    "\"",
    "#",
    "&a ",
    "*a",
    "<<: *a\n",
    "!!str ",
    "!!binary ",
    "---\n",
    "...\n",
    "|\n",
    ">-\n",
    "? ",
    "%YAML 1.2\n",
    "\t",
    "\r",
    "\r\n",
    "\u{feff}",
    "\u{85}",
    "\u{2028}",
    "é",
    "{{ ",
    " }}",
    "{%",
    "%}",
    "{{ ds }}",
    "{{ nope }}",
    "null",
    "~",
    "true",
    "1e400",
    "-1",
    "0x10",
    "99999999999999999999",
    "name",
    "steps",
    "job_id",
    "depends_on",
    "schedule",
    "cron",
    "timezone",
    "catchup",
    "retry",
    "attempts",
    "backoff",
    "max_backoff",
    "timeout",
    "queue_timeout",
    "overrides",
    "backfill",
    "window",
    "every",
    "max_active",
    "cause",
    "concurrency",
    "suspended",
    "defaults",
    "description",
    "from_failure",
    "steps_override",
    "threads_override",
    "30s",
    "1h 5m",
    "0s",
    "18446744073709551616s",
    "9999999999d",
    "*/15 * * * *",
    "0 0 31 2 *",
    "Europe/Amsterdam",
    "Mars/Olympus",
];

/// A step's optional keys, each from a few values that are good, borderline or wrong.
fn step_body(step_names: Vec<String>) -> impl Strategy<Value = String> {
    let names = step_names.clone();
    (
        prop_oneof![
            6 => (1i64..100_000).prop_map(|n| n.to_string()),
            1 => Just("0".to_string()),
            1 => Just("-5".into()),
            1 => Just("abc".into()),
            1 => Just("9223372036854775808".into()),
            1 => Just("[1]".into())
        ],
        prop::option::of(prop::collection::vec(
            prop::sample::select(if names.is_empty() {
                vec!["ghost".to_string()]
            } else {
                names
            }),
            0..3,
        )),
        prop::option::weighted(
            0.3,
            prop::sample::select(vec![
                "{ attempts: 2 }",
                "{ attempts: 2 }",
                "{ attempts: 0, backoff: 1s }",
                "{ attempts: 3, backoff: 2h, max_backoff: 1s }",
                "{ attempts: 999999999999 }",
                "{ from_failure: maybe }",
                "[1, 2]",
            ]),
        ),
        prop::option::weighted(0.3, duration()),
        prop::option::weighted(
            0.3,
            prop::sample::select(vec![
                "{ threads_override: 4 }",
                "{ threads_override: 4 }",
                "{ threads_override: four }",
                "{ steps_override: [\"dbt run\", 5] }",
                "{ git_branch: \"{{ ds }}\" }",
                "{ schema_override: \"{{ unknown_var }}\" }",
                "{ timeout_seconds_override: -1 }",
                "{ wat: 1 }",
            ]),
        ),
    )
        .prop_map(|(job, deps, retry, timeout, overrides)| {
            let mut out = format!("    job_id: {job}\n");
            if let Some(deps) = deps {
                out += &format!("    depends_on: [{}]\n", deps.join(", "));
            }
            if let Some(retry) = retry {
                out += &format!("    retry: {retry}\n");
            }
            if let Some(timeout) = timeout {
                out += &format!("    timeout: {timeout}\n");
            }
            if let Some(overrides) = overrides {
                out += &format!("    overrides: {overrides}\n");
            }
            out
        })
}

fn duration() -> impl Strategy<Value = String> {
    prop_oneof![
        (
            0u64..100_000,
            prop::sample::select(vec!["s", "m", "h", "d", "ms", "w", "y", ""])
        )
            .prop_map(|(n, unit)| format!("{n}{unit}")),
        Just("18446744073709551615s".to_string()),
        Just("99999999999999999999d".to_string()),
        Just("1h 30m 5s".to_string()),
        Just("-3s".to_string()),
        Just("\"\"".to_string()),
    ]
}

fn cron() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => Just("\"*/15 * * * *\"".to_string()),
        4 => Just("\"0 2 * * *\"".into()),
        1 => Just("\"0 0 31 2 *\"".into()),
        1 => Just("\"0 0 L * *\"".into()),
        1 => Just("\"0 0 * * 5#3\"".into()),
        1 => Just("\"0 0 15W * *\"".into()),
        1 => Just("\"@daily\"".into()),
        1 => Just("\"@reboot\"".into()),
        4 => Just("\"0 0 2 * * *\"".into()),
        1 => Just("\"61 * * * *\"".into()),
        1 => "[0-9*/,\\- LW#]{0,16}".prop_map(|s| format!("\"{s}\"")),
    ]
}

fn timezone() -> impl Strategy<Value = String> {
    prop::sample::select(vec![
        "UTC",
        "Europe/Amsterdam",
        "America/New_York",
        "Australia/Lord_Howe",
        "Asia/Kathmandu",
        "Pacific/Chatham",
        "Etc/GMT+12",
        "EST5EDT",
        "utc",
        "Mars/Olympus",
        "\"\"",
    ])
    .prop_map(str::to_string)
}

/// A whole pipeline file built from the format's keys, with values good and bad.
fn pipeline_yaml() -> impl Strategy<Value = Vec<u8>> {
    let step_names = prop::collection::vec("[a-z]{1,3}", 1..5);
    step_names
        .prop_flat_map(|names| {
            let bodies = prop::collection::vec(step_body(names.clone()), names.len());
            (
                Just(names),
                bodies,
                prop::option::of((cron(), prop::option::of(timezone()))),
                prop::option::weighted(0.3, prop::sample::select(vec![
                    "\"{{ pipeline }} {{ ds }}\"",
                    "\"{{ pipeline }} {{ ds }}\"",
                    "\"{{ pipeline \"",
                    "\"{% for x in y %}\"",
                    "\"{{ ds | nofilter }}\"",
                    "\"\"",
                    "\"{{ 'x' * 300 }}\"",
                ])),
                prop::option::weighted(0.2, (cron(), duration(), duration(), 0i64..5)),
                any::<bool>(),
            )
        })
        .prop_map(|(names, bodies, schedule, cause, backfill, anchors)| {
            let mut out = String::from("name: fuzzed\n");
            if let Some((cron, tz)) = schedule {
                out += &format!("schedule:\n  cron: {cron}\n");
                if let Some(tz) = tz {
                    out += &format!("  timezone: {tz}\n");
                }
            }
            if let Some(cause) = cause {
                out += &format!("cause: {cause}\n");
            }
            if anchors {
                out += "defaults: &d\n  retry: { attempts: 2 }\n  timeout: 1h\n";
            }
            out += "steps:\n";
            for (name, body) in names.iter().zip(bodies) {
                out += &format!("  {name}:\n{body}");
            }
            if let Some((cron, window, every, active)) = backfill {
                out += &format!(
                    "backfill:\n  schedule: {{ cron: {cron} }}\n  window: {window}\n  every: {every}\n  max_active: {active}\n"
                );
            }
            out.into_bytes()
        })
}

/// Writes `bytes` as a pipeline file and loads it as `baton validate` does.
fn check(dir: &std::path::Path, bytes: &[u8]) -> Verdict {
    let file = dir.join("fuzz.yaml");
    std::fs::write(&file, bytes).map_err(|e| format!("harness: cannot write: {e}"))?;
    let result = config::load_pipelines(std::slice::from_ref(&file));
    let diagnostics = match result {
        Ok(pipelines) if pipelines.len() == 1 => {
            fuzz::count("files accepted");
            return Ok(());
        }
        Ok(pipelines) => return Err(format!("pipeline count: {} from one file", pipelines.len())),
        Err(diagnostics) => diagnostics,
    };
    if diagnostics.is_empty() {
        return Err("empty rejection: no diagnostic".into());
    }
    fuzz::count("files rejected");
    // What the CLI prints, in both formats.
    let text = diagnostics.to_string();
    let json: serde_json::Value =
        serde_json::from_str(&diagnostics.to_json()).map_err(|e| format!("JSON rendering: {e}"))?;
    if json.as_array().map(Vec::len) != Some(diagnostics.len()) {
        return Err("JSON rendering: not one entry per diagnostic".into());
    }
    let Ok(source) = std::str::from_utf8(bytes) else {
        // An unreadable file is one positionless diagnostic, as `read_to_string` fails.
        return match diagnostics.items.as_slice() {
            [only] if only.line == 0 => Ok(()),
            _ => Err("non-UTF-8 file: not one positionless diagnostic".into()),
        };
    };
    // Lines as YAML counts them (a lone `\r` ends one too), which is what editors show.
    let normalized = source.replace("\r\n", "\n");
    let mut lines: Vec<&str> = normalized.split(['\n', '\r']).collect();
    if lines.last() == Some(&"") {
        lines.pop();
    }
    for d in &diagnostics.items {
        if d.line == 0 || d.line > lines.len() + 1 || d.column == 0 {
            return Err(format!(
                "position outside input: {}:{} of {} lines: {}",
                d.line,
                d.column,
                lines.len(),
                d.message
            ));
        }
        let line = lines.get(d.line - 1).copied().unwrap_or("");
        if d.column > line.chars().count() + 1 {
            return Err(format!(
                "column past the end of its line: {}:{} on {line:?}: {}",
                d.line, d.column, d.message
            ));
        }
        if d.line <= lines.len() && d.excerpt.as_deref() != Some(line.trim_end()) {
            return Err(format!(
                "excerpt is not the line: line {} is {line:?}, excerpt {:?}",
                d.line, d.excerpt
            ));
        }
        if !text.contains(&d.message) {
            return Err("text rendering: a message is missing".into());
        }
    }
    Ok(())
}

fn seeds() -> Vec<Vec<u8>> {
    let root = fuzz::crate_root().join("tests/data");
    ["valid", "invalid"]
        .iter()
        .flat_map(|dir| fuzz::read_files(&root.join(dir)))
        .map(|(_, bytes)| bytes)
        .collect()
}

#[test]
fn pipeline_loading_never_panics_and_points_inside_the_input() {
    let tempdir = tempfile::tempdir().unwrap();
    let dir: PathBuf = tempdir.path().to_path_buf();
    let check = move |bytes: &[u8]| check(&dir, bytes);
    fuzz::run(
        Target {
            name: "pipeline",
            seeds: seeds(),
            dictionary: DICTIONARY,
            check: &check,
        },
        pipeline_yaml().boxed(),
    );
}
