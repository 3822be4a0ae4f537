//! The read-only page of one pipeline at `GET /pipelines/{name}`: its DAG drawn with edges, the
//! grid of its last 30 runs (each cell linking to its dbt Cloud run), the Gantt of a chosen run
//! (`?run=ID`, the newest by default) with its critical path, and each step's duration trend.
//! Plain HTML and SVG, no script; every piece of text is escaped.

use super::html::{self, escape, link, time_in, Base};
use super::run_history::{merge_runs, Gantt, Grid, Trends, GRID_RUNS, TREND_RUNS};
use super::svg;
use crate::engine::state::PipelineRun;
use crate::engine::Engine;
use crate::model::pipeline::{Pipeline, PipelineName};
use crate::runtime::DaemonHandle;
use crate::store::HistoryReader;
use axum::extract::{Path, Query};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Arc;

/// What the loop hands out for one pipeline: its definition, its runs in memory and flags.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub now: DateTime<Utc>,
    pub definition: Arc<Pipeline>,
    pub paused: bool,
    pub in_memory: Vec<PipelineRun>,
}

impl Snapshot {
    /// Read inside the loop (through `inspect`); None for an unknown pipeline.
    pub fn read(engine: &Engine, name: &PipelineName, now: DateTime<Utc>) -> Option<Self> {
        let definition = engine.pipeline(name)?.clone();
        Some(Self {
            now,
            paused: engine.state().cursors.get(name).is_some_and(|c| c.paused),
            in_memory: engine
                .state()
                .runs
                .values()
                .filter(|r| r.pipeline() == name)
                .cloned()
                .collect(),
            definition,
        })
    }

    /// The pipeline's runs, newest first: those in memory and the archived ones, `TREND_RUNS` at
    /// most (the trends read them all; the grid the newest 30).
    pub fn with_history(self, history: &HistoryReader) -> (Self, Vec<PipelineRun>) {
        let archived = history.newest(&self.definition.name, TREND_RUNS);
        let mut snapshot = self;
        let runs = merge_runs(
            std::mem::take(&mut snapshot.in_memory),
            archived,
            TREND_RUNS,
        );
        (snapshot, runs)
    }
}

/// Everything the page shows.
#[derive(Debug, Clone)]
pub struct PipelinePage {
    pub now: DateTime<Utc>,
    pub definition: Arc<Pipeline>,
    pub zone: Tz,
    pub paused: bool,
    pub grid: Grid,
    /// The run the Gantt and the DAG's colours show (None: the pipeline has not run, or the
    /// run asked for is unknown).
    pub gantt: Option<Gantt>,
    /// The run asked for by `?run=` that is not among the runs kept.
    pub missing_run: Option<String>,
    pub trends: Trends,
    pub runs_read: usize,
}

impl PipelinePage {
    /// `runs` newest first; `chosen`: the run of `?run=` (the newest when None).
    pub fn build(snapshot: Snapshot, runs: &[PipelineRun], chosen: Option<&str>) -> Self {
        let def = &snapshot.definition;
        let selected = match chosen {
            Some(id) => runs.iter().find(|r| r.id.0 == id),
            None => runs.first(),
        };
        Self {
            now: snapshot.now,
            zone: crate::humanize::zone_of(def),
            paused: snapshot.paused,
            grid: Grid::build(def, runs),
            gantt: selected.map(|r| Gantt::build(r, snapshot.now)),
            missing_run: chosen.filter(|_| selected.is_none()).map(str::to_string),
            trends: Trends::build(def, runs),
            runs_read: runs.len(),
            definition: snapshot.definition,
        }
    }
}

fn legend() -> String {
    let mut h = String::from("<p class=\"legend\">");
    for kind in super::run_history::SpanKind::ALL {
        let _ = write!(h, "<span class=\"{}\">{}</span>", kind.name(), kind.label());
    }
    h.push_str("<span class=\"critical\">bold, red mark: critical path</span></p>");
    h
}

fn grid_html(page: &PipelinePage) -> String {
    let g = &page.grid;
    let mut h = String::from("<div class=\"scroll\"><table class=\"grid\"><tr><th>step</th>");
    for run in &g.runs {
        let label = run
            .logical_date
            .with_timezone(&page.zone)
            .format("%m-%d %H:%M")
            .to_string();
        let current = page.gantt.as_ref().is_some_and(|gantt| gantt.run == run.id);
        let _ = write!(
            h,
            "<th class=\"run {0}\" data-run=\"{1}\" data-state=\"{0}\" title=\"{1}: {0}\"><a href=\"?run={2}#gantt\">{3}{4}</a></th>",
            escape(&run.state),
            escape(&run.id),
            html::encode(&run.id),
            escape(&label),
            if current { " ◀" } else { "" }
        );
    }
    h.push_str("</tr>");
    for (step, cells) in g.steps.iter().zip(&g.cells) {
        let _ = write!(h, "<tr data-step=\"{0}\"><th>{0}</th>", escape(step));
        for (run, cell) in g.runs.iter().zip(cells) {
            let Some(c) = cell else {
                h.push_str("<td class=\"none\"><span title=\"not in this run\"></span></td>");
                continue;
            };
            let mut title = format!("{step} in {}: {}", run.id, c.state);
            if let Some(secs) = c.seconds {
                let _ = write!(title, ", {}", svg::secs(secs));
            }
            if c.attempts > 1 {
                let _ = write!(title, ", {} attempts", c.attempts);
            }
            if let Some(r) = &c.reason {
                let _ = write!(title, ": {r}");
            }
            let inner = match html::safe_href(c.href.as_deref()) {
                Some(href) => format!(
                    "<a href=\"{href}\" rel=\"noreferrer\" title=\"{}\"></a>",
                    escape(&title)
                ),
                None => format!("<span title=\"{}\"></span>", escape(&title)),
            };
            let _ = write!(
                h,
                "<td class=\"{0}\" data-run=\"{1}\" data-state=\"{0}\">{inner}</td>",
                escape(&c.state),
                escape(&run.id)
            );
        }
        h.push_str("</tr>");
    }
    h.push_str("</table></div>");
    h
}

fn gantt_html(page: &PipelinePage) -> String {
    let mut h = String::from("<h2 id=\"gantt\">Gantt</h2>");
    if let Some(id) = &page.missing_run {
        let _ = write!(
            h,
            "<p class=\"missing\">No run <code>{}</code> among the runs kept; the newest is not shown instead.</p>",
            escape(id)
        );
        return h;
    }
    let Some(g) = &page.gantt else {
        h.push_str("<p>No run yet.</p>");
        return h;
    };
    let _ = write!(
        h,
        "<p class=\"gantt-run\" data-run=\"{0}\">Run <code>{0}</code>: <span class=\"{1}\">{1}</span>, from {2} to {3} ({4}). Times on the axis in {5}.</p>",
        escape(&g.run),
        escape(&g.state),
        time_in(g.start, page.zone),
        time_in(g.end, page.zone),
        crate::humanize::between(g.start, g.end),
        escape(page.zone.name())
    );
    h.push_str(&legend());
    let _ = write!(
        h,
        "<div class=\"scroll\">{}</div><p><a class=\"gantt-only\" href=\"?run={}&amp;view=gantt\">this Gantt alone</a></p>",
        svg::gantt(g, page.zone),
        html::encode(&g.run)
    );
    let critical: Vec<String> = g
        .rows
        .iter()
        .filter(|r| r.critical)
        .map(|r| escape(&r.step))
        .collect();
    let _ = write!(
        h,
        "<p class=\"critical-path\">Critical path: {}.</p>",
        critical.join(" → ")
    );
    h
}

fn trends_html(page: &PipelinePage) -> String {
    let mut h = format!(
        "<h2 id=\"trends\">Duration trends</h2><p>Each step's wall time (first trigger to last attempt's end) over the {} runs kept, oldest left; dashed: median, red: the slowest runs. The same numbers: <code>GET /api/v1/pipelines/{}/trends</code>.</p>\
<table class=\"trends\"><tr><th>step</th><th>runs</th><th>median</th><th>slowest</th><th>trend</th></tr>",
        page.runs_read,
        escape(&html::encode(&page.definition.name.0))
    );
    for t in &page.trends.steps {
        let slowest: Vec<String> = t
            .slowest
            .iter()
            .map(|p| format!("{} ({})", svg::secs(p.seconds), escape(&p.run)))
            .collect();
        let _ = write!(
            h,
            "<tr data-step=\"{}\"><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(&t.step),
            escape(&t.step),
            t.points.len(),
            t.median_seconds
                .map(svg::secs)
                .unwrap_or_else(|| "-".into()),
            slowest.join("<br>"),
            svg::trend(t)
        );
    }
    h.push_str("</table>");
    h
}

fn head(page: &PipelinePage, base: &Base) -> String {
    let name = escape(&page.definition.name.0);
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{name} · baton</title>\
<style>{}</style></head><body><p><a class=\"home\" href=\"{}\">← all pipelines</a></p>\
<h1 data-pipeline=\"{name}\">{name}</h1>",
        html::STYLE,
        base.href("")
    )
}

/// The Gantt of the chosen run alone (`?view=gantt`): a run's timeline to link or print.
pub fn render_gantt(page: &PipelinePage, base: &Base) -> String {
    let mut h = head(page, base);
    let _ = write!(
        h,
        "<p><a class=\"pipeline\" href=\"{}\">the whole pipeline page</a></p>",
        base.pipeline(&page.definition.name.0)
    );
    h.push_str(&gantt_html(page));
    h.push_str("</body></html>\n");
    h
}

/// The whole page.
pub fn render(page: &PipelinePage, base: &Base) -> String {
    let def = &page.definition;
    let mut h = head(page, base);
    if let Some(d) = &def.description {
        let _ = write!(h, "<p>{}</p>", escape(d));
    }
    h.push_str("<p>");
    match &def.schedule {
        Some(s) => {
            let _ = write!(
                h,
                "Schedule <code>{}</code> in {}. ",
                escape(&s.cron),
                escape(s.timezone.name())
            );
        }
        None => h.push_str("No schedule (manual and backfill runs only). "),
    }
    if def.suspended {
        h.push_str("<strong>Suspended.</strong> ");
    }
    if page.paused {
        h.push_str("<strong>Paused.</strong> ");
    }
    let _ = write!(h, "As of {}. Read-only.</p>", time_in(page.now, page.zone));
    // The DAG shows the Gantt's run.
    let mut states = BTreeMap::new();
    let mut hrefs = BTreeMap::new();
    if let Some(g) = &page.gantt {
        for row in &g.rows {
            states.insert(row.step.clone(), row.state.clone());
            if let Some(href) = &row.href {
                hrefs.insert(row.step.clone(), href.clone());
            }
        }
    }
    let _ = write!(
        h,
        "<h2 id=\"dag\">DAG</h2><p>{} steps{}.</p><div class=\"scroll\">{}</div>",
        def.steps.len(),
        page.gantt.as_ref().map_or(String::new(), |g| format!(
            ", coloured by run <code>{}</code>",
            escape(&g.run)
        )),
        svg::dag(def, &states, &hrefs)
    );
    let _ = write!(
        h,
        "<h2 id=\"runs\">Last {} runs</h2><p>One column per run (oldest left), one row per step; a cell links to its dbt Cloud run, a column heading to the run's Gantt.</p>",
        page.grid.runs.len().min(GRID_RUNS)
    );
    if page.grid.runs.is_empty() {
        h.push_str("<p>No run yet.</p>");
    } else {
        h.push_str(&grid_html(page));
    }
    h.push_str(&gantt_html(page));
    h.push_str(&trends_html(page));
    if let Some(g) = &page.gantt {
        let failed: Vec<String> = g
            .rows
            .iter()
            .filter(|r| r.state == "failed")
            .map(|r| link(r.href.as_deref(), &r.step))
            .collect();
        if !failed.is_empty() {
            let _ = write!(
                h,
                "<p class=\"failed-steps\">Failed in this run: {}.</p>",
                failed.join(", ")
            );
        }
    }
    h.push_str("</body></html>\n");
    h
}

#[derive(Debug, Deserialize)]
pub struct PageQuery {
    run: Option<String>,
    /// `gantt`: the chosen run's Gantt alone.
    view: Option<String>,
}

async fn page(
    handle: DaemonHandle,
    name: String,
    query: PageQuery,
    headers: HeaderMap,
) -> Response {
    let key = PipelineName(name.clone());
    let snapshot = match handle
        .inspect(move |engine, now| Snapshot::read(engine, &key, now))
        .await
    {
        Ok(Some(s)) => s,
        Ok(None) => {
            let body = format!(
                "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>not found · baton</title></head>\
<body><p>No pipeline named <code>{}</code> is loaded. <a href=\"{}\">All pipelines</a>.</p></body></html>\n",
                escape(&name),
                Base::from_headers(&headers, 1).href("")
            );
            return (StatusCode::NOT_FOUND, Html(body)).into_response();
        }
        Err(_) => {
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                "the scheduler loop is not running",
            )
                .into_response()
        }
    };
    let history = handle.history().clone();
    let gantt_only = query.view.as_deref() == Some("gantt");
    let built = tokio::task::spawn_blocking(move || {
        let (snapshot, runs) = snapshot.with_history(&history);
        PipelinePage::build(snapshot, &runs, query.run.as_deref())
    })
    .await;
    match built {
        Ok(view) => {
            let base = Base::from_headers(&headers, 1);
            Html(if gantt_only {
                render_gantt(&view, &base)
            } else {
                render(&view, &base)
            })
            .into_response()
        }
        Err(_) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "the page could not be built",
        )
            .into_response(),
    }
}

/// `GET /pipelines/{name}`.
pub fn router(handle: DaemonHandle) -> axum::Router {
    axum::Router::new().route(
        "/pipelines/{name}",
        axum::routing::get(
            move |Path(name): Path<String>, Query(query): Query<PageQuery>, headers: HeaderMap| {
                page(handle.clone(), name, query, headers)
            },
        ),
    )
}

#[cfg(test)]
#[path = "pipeline_page_tests.rs"]
mod tests;
