//! The Grafana dashboard shipped in `docs/grafana/baton.json` is valid JSON Grafana imports, and
//! every metric its queries name is one the daemon exports (or one of the few announced metrics
//! other changes add, whose panels show no data until then).

use baton::clock::{SharedClock, SystemClock};
use baton::dbt_cloud::RequestBudget;
use baton::ops::metrics::Metrics;
use std::collections::BTreeSet;
use std::sync::Arc;

/// Metrics announced by other changes (leadership); their panels wait for them.
const ANNOUNCED: [&str; 1] = ["baton_leader"];

fn dashboard() -> serde_json::Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/grafana/baton.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn metric_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = expr;
    while let Some(i) = rest.find("baton_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        let name = &tail[..end];
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .unwrap_or(name);
        names.push(family.to_string());
        rest = &tail[end..];
    }
    names
}

#[test]
fn the_dashboard_queries_only_metrics_baton_exports() {
    let d = dashboard();
    assert_eq!(d["title"], "baton");
    assert!(d["uid"].as_str().is_some());
    let panels = d["panels"].as_array().unwrap();
    let mut ids = BTreeSet::new();
    let mut queried = BTreeSet::new();
    for p in panels {
        assert!(
            ids.insert(p["id"].as_i64().unwrap()),
            "panel ids are unique"
        );
        for t in p["targets"].as_array().into_iter().flatten() {
            queried.extend(metric_names(t["expr"].as_str().unwrap()));
        }
    }
    let metrics = Metrics::new();
    let clock: SharedClock = Arc::new(SystemClock);
    metrics.set_budget(Arc::new(RequestBudget::new(100, clock)));
    let exported = metrics.render();
    for name in &queried {
        assert!(
            exported.contains(&format!("# TYPE {name} ")) || ANNOUNCED.contains(&name.as_str()),
            "the dashboard queries {name}, which baton does not export"
        );
    }
    // What the issue asks the dashboard to show.
    for wanted in [
        "baton_pipeline_runs_total",
        "baton_step_running_seconds",
        "baton_dbt_cloud_api_requests_total",
        "baton_dbt_cloud_rate_limited_total",
        "baton_pipeline_runs_active",
        "baton_leader",
        "baton_pipeline_runs_late_total",
        "baton_pipeline_runs_late",
    ] {
        assert!(queried.contains(wanted), "no panel shows {wanted}");
    }
}
