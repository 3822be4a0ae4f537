//! The artifacts a finished run leaves: `manifest.json`, `run_results.json` with per-model results
//! consistent with how the run ended, and the compiled and run SQL of each model.

use super::render::{step_views, StepView};
use super::state::{Ending, RunState, World};
use chrono::{DateTime, Duration, Utc};
use serde_json::{json, Map, Value};

const PROJECT: &str = "analytics";

fn model_name(i: u32) -> String {
    format!("model_{i}")
}

/// The dbt steps whose artifacts exist: only once the run has ended, and only steps that ran dbt.
fn dbt_steps(run: &RunState, now: DateTime<Utc>) -> Vec<StepView> {
    if run.finished_at.is_none() {
        return Vec::new();
    }
    step_views(run, now)
        .into_iter()
        .filter(StepView::is_dbt_command)
        .collect()
}

fn models(world: &World, run: &RunState) -> u32 {
    world.job(run.job_id).map(|s| s.models).unwrap_or(0)
}

/// The paths `runs/{id}/artifacts/` lists: empty until the run has ended with a dbt step.
pub fn list(world: &World, run: &RunState, now: DateTime<Utc>) -> Vec<String> {
    if dbt_steps(run, now).is_empty() {
        return Vec::new();
    }
    let n = models(world, run);
    let mut paths = Vec::new();
    for i in 1..=n {
        paths.push(format!("compiled/{PROJECT}/models/{}.sql", model_name(i)));
    }
    paths.push("manifest.json".into());
    for i in 1..=n {
        paths.push(format!("run/{PROJECT}/models/{}.sql", model_name(i)));
    }
    paths.push("run_results.json".into());
    paths
}

/// The raw content of `path` for `step` (the last dbt step when absent); `None` is a 404.
pub fn get(
    world: &World,
    run: &RunState,
    path: &str,
    step: Option<usize>,
    now: DateTime<Utc>,
) -> Option<(&'static str, String)> {
    let steps = dbt_steps(run, now);
    let view = match step {
        Some(index) => steps.iter().find(|s| s.index == index)?,
        None => steps.last()?,
    };
    let is_last = steps.last().map(|s| s.index) == Some(view.index);
    let n = models(world, run);
    match path.trim_start_matches('/') {
        "run_results.json" => Some((
            "application/json",
            run_results(world, run, view, is_last, n).to_string(),
        )),
        "manifest.json" => Some(("application/json", manifest(world, run, n).to_string())),
        other => {
            let rest = other
                .strip_prefix(&format!("compiled/{PROJECT}/models/"))
                .or_else(|| other.strip_prefix(&format!("run/{PROJECT}/models/")))?;
            let model = rest.strip_suffix(".sql")?;
            let i: u32 = model.strip_prefix("model_")?.parse().ok()?;
            (1..=n).contains(&i).then(|| {
                (
                    "text/plain; charset=utf-8",
                    format!("select {i} as id, 'emulated' as source\n"),
                )
            })
        }
    }
}

/// What each model of a step ended as: all success, or for the step where the run ended in error
/// one error in the middle and the rest skipped; for a timeout or cancel, the second half skipped.
fn model_statuses(run: &RunState, is_last: bool, n: u32) -> Vec<&'static str> {
    let broken_at = n / 2 + 1;
    (1..=n)
        .map(|i| match (is_last, run.ending) {
            (true, Some(Ending::Error { .. })) if i == broken_at => "error",
            (true, Some(Ending::Error { .. })) if i > broken_at => "skipped",
            (true, Some(Ending::TimedOut | Ending::Cancelled)) if i >= broken_at => "skipped",
            _ => "success",
        })
        .collect()
}

fn iso(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

fn run_results(world: &World, run: &RunState, view: &StepView, is_last: bool, n: u32) -> Value {
    let statuses = model_statuses(run, is_last, n);
    let started = view.started_at;
    let finished = view.finished_at.unwrap_or(started);
    let per_model = if n > 0 {
        (finished - started) / n as i32
    } else {
        Duration::zero()
    };
    let results: Vec<Value> = statuses
        .iter()
        .enumerate()
        .map(|(i, status)| {
            let begin = started + per_model * i as i32;
            let end = begin + per_model;
            let unique_id = format!("model.{PROJECT}.{}", model_name(i as u32 + 1));
            let (message, adapter) = match *status {
                "success" => (
                    "SUCCESS 1".to_string(),
                    json!({"_message": "SUCCESS 1", "code": "SUCCESS", "rows_affected": 1}),
                ),
                "error" => (
                    format!(
                        "Database Error in model {} (models/{}.sql)\n  division by zero",
                        model_name(i as u32 + 1),
                        model_name(i as u32 + 1)
                    ),
                    json!({}),
                ),
                _ => (String::new(), json!({})),
            };
            let ran = *status != "skipped";
            json!({
                "status": status,
                "timing": if ran { json!([
                    {"name": "compile", "started_at": iso(begin), "completed_at": iso(begin)},
                    {"name": "execute", "started_at": iso(begin), "completed_at": iso(end)},
                ]) } else { json!([]) },
                "thread_id": format!("Thread-{}", i % 4 + 1),
                "execution_time": if ran { per_model.num_milliseconds() as f64 / 1000.0 } else { 0.0 },
                "adapter_response": adapter,
                "message": if ran { Value::from(message) } else { Value::Null },
                "failures": Value::Null,
                "unique_id": unique_id,
                "compiled": ran,
                "relation_name": format!("\"analytics\".\"prod\".\"{}\"", model_name(i as u32 + 1)),
            })
        })
        .collect();
    json!({
        "metadata": metadata(world, run, "run-results/v6", finished),
        "results": results,
        "elapsed_time": (finished - started).num_milliseconds() as f64 / 1000.0,
        "args": {
            "log_format": "json",
            "write_json": true,
            "use_experimental_parser": false,
            "profiles_dir": format!("/tmp/jobs/{}/.dbt", run.id),
            "profile": "user",
            "target": "default",
            "use_cache": true,
            "show": false,
            "version_check": true,
            "which": "build",
            "rpc_method": "build",
        },
    })
}

fn metadata(world: &World, run: &RunState, schema: &str, generated_at: DateTime<Utc>) -> Value {
    let spec = world.job(run.job_id);
    json!({
        "dbt_schema_version": format!("https://schemas.getdbt.com/dbt/{schema}.json"),
        "dbt_version": "1.9.0",
        "generated_at": iso(generated_at),
        "invocation_id": format!("{}-0000-4000-8000-{}", &run.fingerprint[..8], &run.fingerprint[8..20]),
        "env": {
            "DBT_CLOUD_PROJECT_ID": spec.map(|s| super::render::project_id(world, s).to_string()).unwrap_or_default(),
            "DBT_CLOUD_RUN_ID": run.id.to_string(),
            "DBT_CLOUD_JOB_ID": run.job_id.to_string(),
            "DBT_CLOUD_RUN_REASON": run.request.cause,
            "DBT_CLOUD_RUN_REASON_CATEGORY": "other",
        },
    })
}

fn manifest(world: &World, run: &RunState, n: u32) -> Value {
    let mut nodes = Map::new();
    let mut parent_map = Map::new();
    let mut child_map = Map::new();
    for i in 1..=n {
        let id = format!("model.{PROJECT}.{}", model_name(i));
        let parents: Vec<String> = if i > 1 {
            vec![format!("model.{PROJECT}.{}", model_name(i - 1))]
        } else {
            vec![]
        };
        let children: Vec<String> = if i < n {
            vec![format!("model.{PROJECT}.{}", model_name(i + 1))]
        } else {
            vec![]
        };
        nodes.insert(
            id.clone(),
            json!({
                "unique_id": id,
                "resource_type": "model",
                "package_name": PROJECT,
                "name": model_name(i),
                "path": format!("{}.sql", model_name(i)),
                "original_file_path": format!("models/{}.sql", model_name(i)),
                "database": "analytics",
                "schema": run.request.schema_override.clone().unwrap_or_else(|| "prod".into()),
                "alias": model_name(i),
                "config": {"materialized": "table", "enabled": true},
                "depends_on": {"nodes": parents, "macros": []},
                "fqn": [PROJECT, model_name(i)],
            }),
        );
        parent_map.insert(id.clone(), json!(parents));
        child_map.insert(id, json!(children));
    }
    json!({
        "metadata": metadata(world, run, "manifest/v12", run.finished_at.unwrap_or(run.created_at)),
        "nodes": nodes,
        "sources": {},
        "macros": {},
        "docs": {},
        "exposures": {},
        "metrics": {},
        "groups": {},
        "selectors": {},
        "disabled": {},
        "parent_map": parent_map,
        "child_map": child_map,
        "group_map": {},
        "saved_queries": {},
        "semantic_models": {},
        "unit_tests": {},
    })
}
