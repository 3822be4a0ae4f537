//! The read-only status page at `GET /`: each pipeline's DAG with the state of its latest run (its
//! name linking to its own page, marked when it failed or is late), the runs in flight with links
//! to dbt Cloud, recent failures with their reasons and the next fire times. Plain HTML and CSS
//! (no script), rendered from one `inspect` of the engine; every piece of text is escaped and only
//! http(s) links become hrefs.

use super::html::{link, time, Base, STYLE};
use crate::engine::state::{PipelineRun, PipelineRunState, StepState};
use crate::engine::Engine;
use crate::runtime::DaemonHandle;
use crate::store::HistoryReader;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse};
use chrono::{DateTime, Utc};
use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Arc;

pub use super::html::escape;

/// Above this many pipelines the front page lists them in a compact table (name, marks, latest
/// run, next fire) and leaves each DAG to the pipeline's own page: thousands of DAGs are neither
/// readable nor quick to send.
pub const FULL_DAGS_UP_TO: usize = 200;

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
    /// The latest run failed.
    pub failed: bool,
    /// The pipeline's latest run is late for its deadline (see `is_late`).
    pub late: bool,
    /// Steps by depth in the DAG: roots first (empty above `FULL_DAGS_UP_TO` pipelines).
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

/// Whether a pipeline is late for its deadline, from its latest run: the one place the pages
/// learn it. A run is late from its late mark on, and when it ended past its deadline unnoticed.
pub fn is_late(latest_run: Option<&PipelineRun>) -> bool {
    latest_run.is_some_and(|r| {
        r.late_since.is_some() || crate::engine::deadline::finished_late_by(r).is_some()
    })
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
        // A compact list shows no DAG: the levels are not worked out.
        let compact = engine.pipelines().nth(FULL_DAGS_UP_TO).is_some();
        let pipelines = engine
            .pipelines()
            .map(|def| {
                let name = def.name.0.as_str();
                let run = latest.get(name).copied().or_else(|| archived.get(name));
                let mut levels: Vec<Vec<StepView>> = Vec::new();
                let depths = if compact {
                    Vec::new()
                } else {
                    def.step_depths()
                };
                for (step, &d) in def.steps.iter().zip(&depths) {
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
                        || crate::humanize::utc(at),
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
                    latest: run
                        .map(|r| (r.id.0.clone(), super::run_history::run_state_name(r.state))),
                    failed: run.is_some_and(|r| r.state == PipelineRunState::Failed),
                    late: is_late(run),
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
                            // In words: baton's own timeout says so, not only dbt Cloud's.
                            last.and_then(|a| {
                                crate::humanize::step_attempt_reason(a, r.definition.step(name))
                            }),
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

/// One row per pipeline, failed and late ones first.
fn compact_list(h: &mut String, view: &StatusView, base: &Base) {
    let mut order: Vec<&PipelineView> = view.pipelines.iter().collect();
    order.sort_by_key(|p| !(p.failed || p.late));
    let _ = write!(
        h,
        "<p>{} pipelines: each DAG is on the pipeline's page.</p>\
<table class=\"pipelines\"><tr><th>pipeline</th><th>latest run</th><th>next fire</th></tr>",
        view.pipelines.len()
    );
    for p in order {
        let name = escape(&p.name);
        let _ = write!(
            h,
            "<tr data-pipeline=\"{name}\" data-failed=\"{}\" data-late=\"{}\"><td><a class=\"pipeline-link\" href=\"{}\">{name}</a>",
            p.failed,
            p.late,
            base.pipeline(&p.name)
        );
        if p.failed {
            h.push_str("<span class=\"mark failed\">failed</span>");
        }
        if p.late {
            h.push_str("<span class=\"mark late\">late</span>");
        }
        if p.paused {
            h.push_str(" paused");
        }
        match &p.latest {
            Some((id, state)) => {
                let _ = write!(
                    h,
                    "</td><td class=\"{state}\">{state} <code>{}</code></td>",
                    escape(id)
                );
            }
            None => h.push_str("</td><td>no run yet</td>"),
        }
        match &p.next_fire {
            Some((_, local)) => {
                let _ = write!(h, "<td>{}</td></tr>", escape(local));
            }
            None => h.push_str("<td>-</td></tr>"),
        }
    }
    h.push_str("</table>");
}

/// The whole page.
pub fn render(view: &StatusView, base: &Base) -> String {
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
    let failed = view.pipelines.iter().filter(|p| p.failed).count();
    let late = view.pipelines.iter().filter(|p| p.late).count();
    let _ = write!(
        h,
        "<p class=\"summary\">{failed} failed, {late} late. Each name leads to the pipeline's page: its run history, a Gantt of each run and duration trends.</p>"
    );
    if view.pipelines.len() > FULL_DAGS_UP_TO {
        compact_list(&mut h, view, base);
    } else {
        for p in &view.pipelines {
            let _ = write!(
            h,
            "<section class=\"pipeline\" id=\"pipeline-{0}\" data-pipeline=\"{0}\" data-failed=\"{2}\" data-late=\"{3}\">\
<h3><a class=\"pipeline-link\" href=\"{1}\">{0}</a>",
            escape(&p.name),
            base.pipeline(&p.name),
            p.failed,
            p.late
        );
            if p.failed {
                h.push_str("<span class=\"mark failed\">failed</span>");
            }
            if p.late {
                h.push_str("<span class=\"mark late\">late</span>");
            }
            h.push_str("</h3>");
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

/// `GET /`, and each pipeline's page at `GET /pipelines/{name}` (`pipeline_page`).
pub fn router(handle: DaemonHandle) -> axum::Router {
    router_with_note(handle, Arc::new(String::new))
}

/// A line shown under the title, read at every request (an HA node's role and its leader).
pub type Note = Arc<dyn Fn() -> String + Send + Sync>;

/// `GET /` (with `note` under the title) and the pipeline pages.
pub fn router_with_note(handle: DaemonHandle, note: Note) -> axum::Router {
    let pages = super::pipeline_page::router(handle.clone());
    axum::Router::new().merge(pages).route(
        "/",
        axum::routing::get(move |headers: HeaderMap| {
            let handle = handle.clone();
            let note = note();
            async move {
                let history = handle.history().clone();
                let read =
                    move |engine: &Engine, now| StatusView::read(engine, now, Some(&history));
                match handle.inspect(read).await {
                    Ok(view) => {
                        let page = render(&view, &Base::from_headers(&headers, 0));
                        let page = if note.is_empty() {
                            page
                        } else {
                            page.replacen(
                                "</h1>",
                                &format!("</h1><p class=\"role\">{}</p>", escape(&note)),
                                1,
                            )
                        };
                        Html(page).into_response()
                    }
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
#[path = "status_page_tests.rs"]
mod tests;
