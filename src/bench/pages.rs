//! The status pages' rendering time, daemon side: the front page for 10,000 pipelines (each with
//! a latest run of 5 steps in memory) and one pipeline's page with 50 steps and 30 runs. Measured
//! in this process on the code the HTTP handlers run (the read from the engine's state, the view
//! model and the HTML), without the network; the median of several renders.

use super::output::{Report, Target};
use super::Options;
use crate::engine::state::State;
use crate::engine::{Engine, EngineConfig};
use crate::ops::html::Base;
use crate::ops::pipeline_page::{PipelinePage, Snapshot};
use crate::ops::sample_history;
use crate::ops::status_page::{self, StatusView};
use chrono::{DateTime, Utc};
use std::sync::Arc;
use std::time::Instant;

const REPEATS: usize = 7;

/// The median time of `REPEATS` calls of `render`, in milliseconds, and the last page's size.
fn median_ms(mut render: impl FnMut() -> String) -> (f64, usize) {
    let mut times = Vec::with_capacity(REPEATS);
    let mut bytes = 0;
    for _ in 0..REPEATS {
        let began = Instant::now();
        let page = render();
        times.push(began.elapsed().as_secs_f64() * 1000.0);
        bytes = std::hint::black_box(page).len();
    }
    (super::output::quantile(&times, 0.5), bytes)
}

fn t(s: &str) -> anyhow::Result<DateTime<Utc>> {
    Ok(DateTime::parse_from_rfc3339(s)?.with_timezone(&Utc))
}

pub async fn run(options: Options, report: &mut Report) -> anyhow::Result<()> {
    let pipelines = if options.quick { 1_000 } else { 10_000 };
    let first = t("2026-01-01T01:00:00Z")?;
    let now = t("2026-02-01T00:00:00Z")?;

    // The front page: every pipeline with its latest run in memory.
    let mut state = State::default();
    let mut defs = Vec::with_capacity(pipelines);
    for i in 0..pipelines {
        let def = sample_history::pipeline(&format!("p{i:05}"), 5)?;
        for run in sample_history::runs(&Arc::new(def.clone()), 1, first) {
            state.runs.insert(run.id.clone(), run);
        }
        defs.push(def);
    }
    let mut engine = Engine::new(EngineConfig::default(), defs, state, now)?;
    // As in the daemon, a first step works out each pipeline's next tick.
    let _ = engine.step(Vec::new(), now);
    let base = Base::relative(0);
    let (front_ms, front_bytes) = median_ms(|| {
        let view = StatusView::read(&engine, now, None);
        status_page::render(&view, &base)
    });
    report.info(
        "pages",
        "pages_front_pipelines",
        "front page: pipelines",
        pipelines as f64,
        "",
    );
    report.info(
        "pages",
        "pages_front_mib",
        "front page: size",
        front_bytes as f64 / 1_048_576.0,
        "MiB",
    );
    report.measured(
        "pages",
        "pages_front_ms",
        "front page: render",
        front_ms,
        "ms",
        Target::Below(200.0),
    );

    // One pipeline's page: 50 steps, 30 runs (the grid, the newest run's Gantt, the trends).
    let def = Arc::new(sample_history::pipeline("wide", 50)?);
    let runs = sample_history::runs(&def, 30, first);
    let base = Base::relative(1);
    let (page_ms, page_bytes) = median_ms(|| {
        let snapshot = Snapshot {
            now,
            definition: def.clone(),
            paused: false,
            in_memory: Vec::new(),
        };
        let page = PipelinePage::build(snapshot, &runs, None);
        crate::ops::pipeline_page::render(&page, &base)
    });
    report.info(
        "pages",
        "pages_pipeline_steps",
        "pipeline page: steps",
        50.0,
        "",
    );
    report.info(
        "pages",
        "pages_pipeline_runs",
        "pipeline page: runs",
        30.0,
        "",
    );
    report.info(
        "pages",
        "pages_pipeline_kib",
        "pipeline page: size",
        page_bytes as f64 / 1024.0,
        "KiB",
    );
    report.measured(
        "pages",
        "pages_pipeline_ms",
        "pipeline page: render",
        page_ms,
        "ms",
        Target::Below(200.0),
    );
    Ok(())
}
