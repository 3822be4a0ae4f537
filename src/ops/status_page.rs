//! The read-only status page at `GET /`: each pipeline's DAG with the state of its latest run, the
//! runs in flight with links to dbt Cloud, recent failures with their messages and the next fire
//! times. Plain HTML and CSS (no script), rendered from one `inspect` of the engine; every piece of
//! text is escaped and only http(s) links become hrefs.

use crate::engine::state::{PipelineRun, PipelineRunState, StepState};
use crate::engine::Engine;
use crate::runtime::DaemonHandle;
use crate::store::HistoryReader;
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse};
use chrono::{DateTime, SecondsFormat, Utc};
use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Arc;

/// Failed pipeline runs listed, newest first.
const RECENT_FAILURES: usize = 20;

/// One step of a pipeline's DAG, with its state in the latest run.
#[derive(Debug, Clone, PartialEq)]
pub struct StepView {
    pub name: String,
    pub job_id: i64,
    pub depends_on: Vec<String>,
    /// `None`: the pipeline has not run.
    pub state: Option<&'static str>,
    pub attempts: usize,
    pub href: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PipelineView {
    pub name: String,
    pub description: Option<String>,
    /// Cron expression and time zone.
    pub schedule: Option<(String, String)>,
    pub paused: bool,
    pub suspended: bool,
    /// The next tick, in UTC and in the pipeline's zone.
    pub next_fire: Option<(DateTime<Utc>, String)>,
    /// The latest run: its id and state.
    pub latest: Option<(String, &'static str)>,
    /// Steps by depth in the DAG: roots first.
    pub levels: Vec<Vec<StepView>>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct InFlightView {
    pub pipeline_run: String,
    pub step: String,
    pub attempt: u32,
    pub status: String,
    pub dbt_run_id: Option<i64>,
    pub href: Option<String>,
    pub since: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct FailureView {
    pub pipeline_run: String,
    pub finished_at: Option<DateTime<Utc>>,
    /// Step, state, message, link.
    pub steps: Vec<(String, &'static str, Option<String>, Option<String>)>,
}

/// Everything the page shows, read in one consistent look at the engine.
#[derive(Debug, Clone, PartialEq)]
pub struct StatusView {
    pub now: DateTime<Utc>,
    pub pipelines: Vec<PipelineView>,
    pub in_flight: Vec<InFlightView>,
    pub failures: Vec<FailureView>,
}

fn state_name(state: PipelineRunState) -> &'static str {
    match state {
        PipelineRunState::Queued => "queued",
        PipelineRunState::Running => "running",
        PipelineRunState::Succeeded => "succeeded",
        PipelineRunState::Failed => "failed",
        PipelineRunState::Cancelled => "cancelled",
    }
}

impl StatusView {
    /// Reads the view from the engine (inside the loop, through `inspect`), and from the
    /// archive the latest run of a pipeline with none in memory.
    pub fn read(engine: &Engine, now: DateTime<Utc>, history: Option<&HistoryReader>) -> Self {
        let runs = &engine.state().runs;
        let mut latest: BTreeMap<&str, &PipelineRun> = BTreeMap::new();
        for run in runs.values() {
            let entry = latest.entry(run.pipeline().0.as_str()).or_insert(run);
            if (run.created_at, run.logical_date) > (entry.created_at, entry.logical_date) {
                *entry = run;
            }
        }
        let archived: BTreeMap<&str, PipelineRun> = engine
            .pipelines()
            .filter(|def| !latest.contains_key(def.name.0.as_str()))
            .filter_map(|def| {
                let run = history?.newest(&def.name, 1).pop()?;
                Some((def.name.0.as_str(), run))
            })
            .collect();
        let pipelines = engine
            .pipelines()
            .map(|def| {
                let name = def.name.0.as_str();
                let run = latest.get(name).copied().or_else(|| archived.get(name));
                let mut depth: BTreeMap<&str, usize> = BTreeMap::new();
                let mut levels: Vec<Vec<StepView>> = Vec::new();
                // Steps come in topological order: every upstream's depth is known already.
                for step in &def.steps {
                    let d = step
                        .depends_on
                        .iter()
                        .filter_map(|up| depth.get(up.0.as_str()))
                        .map(|d| d + 1)
                        .max()
                        .unwrap_or(0);
                    depth.insert(step.name.0.as_str(), d);
                    if levels.len() <= d {
                        levels.resize_with(d + 1, Vec::new);
                    }
                    let step_run = run.and_then(|r| r.steps.get(&step.name));
                    levels[d].push(StepView {
                        name: step.name.0.clone(),
                        job_id: step.job_id.0,
                        depends_on: step.depends_on.iter().map(|s| s.0.clone()).collect(),
                        state: step_run.map(|s| s.state.name()),
                        attempts: step_run.map_or(0, |s| s.attempts.len()),
                        href: step_run.and_then(|s| s.current()?.href.clone()),
                    });
                }
                let next_fire = engine.next_tick(&def.name, now).map(|at| {
                    let local = def.schedule.as_ref().map_or_else(
                        || at.to_rfc3339_opts(SecondsFormat::Secs, true),
                        |s| {
                            at.with_timezone(&s.timezone)
                                .format("%Y-%m-%d %H:%M %Z")
                                .to_string()
                        },
                    );
                    (at, local)
                });
                PipelineView {
                    name: def.name.0.clone(),
                    description: def.description.clone(),
                    schedule: def
                        .schedule
                        .as_ref()
                        .map(|s| (s.cron.clone(), s.timezone.name().to_string())),
                    paused: engine
                        .state()
                        .cursors
                        .get(&def.name)
                        .is_some_and(|c| c.paused),
                    suspended: def.suspended,
                    next_fire,
                    latest: run.map(|r| (r.id.0.clone(), state_name(r.state))),
                    levels,
                }
            })
            .collect();
        let mut in_flight = Vec::new();
        for run in runs.values().filter(|r| !r.state.is_terminal()) {
            for (step, s) in &run.steps {
                let Some(a) = s.current().filter(|a| a.is_in_flight()) else {
                    continue;
                };
                in_flight.push(InFlightView {
                    pipeline_run: run.id.0.clone(),
                    step: step.0.clone(),
                    attempt: a.number,
                    status: a
                        .status
                        .map_or_else(|| "triggering".to_string(), |s| s.to_string()),
                    dbt_run_id: a.run_id.map(|r| r.0),
                    href: a.href.clone(),
                    since: a.created_at,
                });
            }
        }
        let mut failed: Vec<&PipelineRun> = runs
            .values()
            .filter(|r| r.state == PipelineRunState::Failed)
            .collect();
        failed.sort_by_key(|r| std::cmp::Reverse(r.finished_at));
        let failures = failed
            .into_iter()
            .take(RECENT_FAILURES)
            .map(|r| FailureView {
                pipeline_run: r.id.0.clone(),
                finished_at: r.finished_at,
                steps: r
                    .steps
                    .iter()
                    .filter(|(_, s)| !matches!(s.state, StepState::Succeeded))
                    .map(|(name, s)| {
                        let last = s.current();
                        (
                            name.0.clone(),
                            s.state.name(),
                            last.and_then(|a| a.message.clone()),
                            last.and_then(|a| a.href.clone()),
                        )
                    })
                    .collect(),
            })
            .collect();
        Self {
            now,
            pipelines,
            in_flight,
            failures,
        }
    }
}

/// Escapes text for HTML content and double-quoted attributes.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A link when `href` is an http(s) URL, the text alone otherwise (no `javascript:` from data).
fn link(href: Option<&str>, text: &str) -> String {
    match href.and_then(|h| url::Url::parse(h).ok()) {
        Some(url) if matches!(url.scheme(), "http" | "https") => format!(
            "<a href=\"{}\" rel=\"noreferrer\">{}</a>",
            escape(url.as_str()),
            escape(text)
        ),
        _ => escape(text),
    }
}

fn time(at: DateTime<Utc>) -> String {
    format!(
        "<time datetime=\"{0}\">{1}</time>",
        at.to_rfc3339_opts(SecondsFormat::Secs, true),
        at.format("%Y-%m-%d %H:%M:%S UTC")
    )
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:1.5rem;color:#222}\
h1{font-size:1.4rem}h2{font-size:1.15rem;margin-top:2rem}\
section.pipeline{border:1px solid #ccc;border-radius:6px;padding:.6rem 1rem;margin:1rem 0}\
.dag{display:flex;gap:1.5rem;align-items:flex-start;overflow-x:auto}\
.level{display:flex;flex-direction:column;gap:.5rem}\
.step{border:1px solid #999;border-radius:4px;padding:.3rem .6rem;min-width:9rem;background:#f6f6f6}\
.step small{display:block;color:#555}\
.succeeded{background:#dff3df;border-color:#3a3}.failed,.upstream_failed{background:#fbdede;border-color:#c33}\
.running{background:#ddeeff;border-color:#36c}.waiting_retry{background:#fff2cc;border-color:#c90}\
.cancelled{background:#eee;border-color:#777}\
table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.25rem .5rem;text-align:left;vertical-align:top}\
pre{margin:0;white-space:pre-wrap;max-width:60rem}";

/// The whole page.
pub fn render(view: &StatusView) -> String {
    let mut h = String::new();
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta http-equiv=\"refresh\" content=\"30\"><title>baton status</title><style>{STYLE}</style></head>\
<body><h1>baton status</h1><p>As of {}. Read-only; refreshes every 30 s.</p>",
        time(view.now)
    );
    let _ = write!(
        h,
        "<h2 id=\"pipelines\">Pipelines ({})</h2>",
        view.pipelines.len()
    );
    for p in &view.pipelines {
        let _ = write!(
            h,
            "<section class=\"pipeline\" id=\"pipeline-{0}\" data-pipeline=\"{0}\"><h3>{0}</h3>",
            escape(&p.name)
        );
        if let Some(d) = &p.description {
            let _ = write!(h, "<p>{}</p>", escape(d));
        }
        let _ = write!(h, "<p class=\"schedule\">");
        match &p.schedule {
            Some((cron, tz)) => {
                let _ = write!(
                    h,
                    "Schedule <code>{}</code> in {}. ",
                    escape(cron),
                    escape(tz)
                );
            }
            None => h.push_str("No schedule (manual and backfill runs only). "),
        }
        if p.suspended {
            h.push_str("<strong>Suspended.</strong> ");
        }
        if p.paused {
            h.push_str("<strong>Paused.</strong> ");
        }
        if let Some((at, local)) = &p.next_fire {
            let _ = write!(
                h,
                "Next fire: <span class=\"next-fire\">{}</span> ({}).",
                time(*at),
                escape(local)
            );
        }
        h.push_str("</p><p class=\"latest\">");
        match &p.latest {
            Some((id, state)) => {
                let _ = write!(
                    h,
                    "Latest run <code>{}</code>: <span class=\"{state}\">{state}</span>",
                    escape(id)
                );
            }
            None => h.push_str("No run yet."),
        }
        h.push_str("</p><div class=\"dag\">");
        for level in &p.levels {
            h.push_str("<div class=\"level\">");
            for s in level {
                let state = s.state.unwrap_or("not_run");
                let _ = write!(
                    h,
                    "<div class=\"step {state}\" data-step=\"{0}\" data-state=\"{state}\"><strong>{1}</strong>\
<small>job {2} · {state}",
                    escape(&s.name),
                    link(s.href.as_deref(), &s.name),
                    s.job_id
                );
                if s.attempts > 1 {
                    let _ = write!(h, " · {} attempts", s.attempts);
                }
                h.push_str("</small>");
                if !s.depends_on.is_empty() {
                    let deps: Vec<String> = s.depends_on.iter().map(|d| escape(d)).collect();
                    let _ = write!(h, "<small>after {}</small>", deps.join(", "));
                }
                h.push_str("</div>");
            }
            h.push_str("</div>");
        }
        h.push_str("</div></section>");
    }
    let _ = write!(
        h,
        "<h2 id=\"in-flight\">Runs in flight ({})</h2>",
        view.in_flight.len()
    );
    if view.in_flight.is_empty() {
        h.push_str("<p>None.</p>");
    } else {
        h.push_str("<table class=\"in-flight\"><tr><th>pipeline run</th><th>step</th><th>attempt</th><th>dbt Cloud status</th><th>dbt Cloud run</th><th>since</th></tr>");
        for r in &view.in_flight {
            let run = r
                .dbt_run_id
                .map_or_else(|| "not yet created".to_string(), |id| id.to_string());
            let _ = write!(
                h,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                escape(&r.pipeline_run),
                escape(&r.step),
                r.attempt,
                escape(&r.status),
                link(r.href.as_deref(), &run),
                time(r.since)
            );
        }
        h.push_str("</table>");
    }
    let _ = write!(
        h,
        "<h2 id=\"failures\">Recent failures ({})</h2>",
        view.failures.len()
    );
    if view.failures.is_empty() {
        h.push_str("<p>None.</p>");
    } else {
        h.push_str("<table class=\"failures\"><tr><th>pipeline run</th><th>finished</th><th>step</th><th>state</th><th>message</th></tr>");
        for f in &view.failures {
            for (step, state, message, href) in &f.steps {
                let _ = write!(
                    h,
                    "<tr><td>{}</td><td>{}</td><td>{}</td><td class=\"{state}\">{state}</td><td><pre>{}</pre></td></tr>",
                    escape(&f.pipeline_run),
                    f.finished_at.map(time).unwrap_or_default(),
                    link(href.as_deref(), step),
                    escape(message.as_deref().unwrap_or(""))
                );
            }
        }
        h.push_str("</table>");
    }
    h.push_str("</body></html>\n");
    h
}

/// `GET /`.
pub fn router(handle: DaemonHandle) -> axum::Router {
    router_with_note(handle, Arc::new(String::new))
}

/// A line shown under the title, read at every request (an HA node's role and its leader).
pub type Note = Arc<dyn Fn() -> String + Send + Sync>;

/// `GET /`, with `note` under the title.
pub fn router_with_note(handle: DaemonHandle, note: Note) -> axum::Router {
    axum::Router::new().route(
        "/",
        axum::routing::get(move || {
            let handle = handle.clone();
            let note = note();
            async move {
                let history = handle.history().clone();
                let read =
                    move |engine: &Engine, now| StatusView::read(engine, now, Some(&history));
                match handle.inspect(read).await {
                    Ok(view) if note.is_empty() => Html(render(&view)).into_response(),
                    Ok(view) => Html(render(&view).replacen(
                        "</h1>",
                        &format!("</h1><p class=\"role\">{}</p>", escape(&note)),
                        1,
                    ))
                    .into_response(),
                    Err(_) => (
                        StatusCode::SERVICE_UNAVAILABLE,
                        "the scheduler loop is not running",
                    )
                        .into_response(),
                }
            }
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn view() -> StatusView {
        let step =
            |name: &str, deps: &[&str], state: Option<&'static str>, href: Option<&str>| StepView {
                name: name.into(),
                job_id: 7,
                depends_on: deps.iter().map(|d| d.to_string()).collect(),
                state,
                attempts: 1,
                href: href.map(str::to_string),
            };
        StatusView {
            now: t("2026-01-05T10:00:00Z"),
            pipelines: vec![PipelineView {
                name: "<script>alert(1)</script>".into(),
                description: Some("a & b \"quoted\"".into()),
                schedule: Some(("0 2 * * *".into(), "Europe/Amsterdam".into())),
                paused: true,
                suspended: false,
                next_fire: Some((t("2026-01-06T01:00:00Z"), "2026-01-06 02:00 CET".into())),
                latest: Some(("x@2026-01-05T01:00:00Z".into(), "failed")),
                levels: vec![
                    vec![step(
                        "staging",
                        &[],
                        Some("succeeded"),
                        Some("https://cloud.getdbt.com/runs/1/"),
                    )],
                    vec![step(
                        "marts'",
                        &["staging"],
                        Some("failed"),
                        Some("javascript:alert(1)"),
                    )],
                ],
            }],
            in_flight: vec![InFlightView {
                pipeline_run: "y@2026-01-05T09:00:00Z".into(),
                step: "s".into(),
                attempt: 2,
                status: "Running".into(),
                dbt_run_id: Some(42),
                href: Some("https://cloud.getdbt.com/runs/42/".into()),
                since: t("2026-01-05T09:00:00Z"),
            }],
            failures: vec![FailureView {
                pipeline_run: "x@2026-01-05T01:00:00Z".into(),
                finished_at: Some(t("2026-01-05T01:30:00Z")),
                steps: vec![(
                    "marts'".into(),
                    "failed",
                    Some("Database Error <relation>".into()),
                    None,
                )],
            }],
        }
    }

    #[test]
    fn every_text_is_escaped_and_only_http_links_are_links() {
        let html = render(&view());
        assert!(!html.contains("<script>"), "{html}");
        assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(html.contains("a &amp; b &quot;quoted&quot;"));
        assert!(html.contains("marts&#39;"));
        assert!(html.contains("Database Error &lt;relation&gt;"));
        assert!(!html.contains("href=\"javascript"), "{html}");
        assert!(html.contains(
            "<a href=\"https://cloud.getdbt.com/runs/1/\" rel=\"noreferrer\">staging</a>"
        ));
        assert!(html
            .contains("<a href=\"https://cloud.getdbt.com/runs/42/\" rel=\"noreferrer\">42</a>"));
        assert!(html.contains("<strong>Paused.</strong>"));
        assert!(html.contains("2026-01-06 02:00 CET"));
        assert!(html.contains("Runs in flight (1)"));
        assert!(html.contains("Recent failures (1)"));
        assert!(!html.contains("<script"), "no script at all");
    }

    #[test]
    fn the_dag_is_drawn_level_by_level() {
        let html = render(&view());
        let staging = html.find("data-step=\"staging\"").unwrap();
        let marts = html.find("data-step=\"marts&#39;\"").unwrap();
        assert!(staging < marts);
        assert!(html.contains("data-state=\"failed\""));
        assert!(html.contains("<small>after staging</small>"));
    }
}
