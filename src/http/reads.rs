//! Read routes: pipelines, pipeline runs, backfills and `why`, each one snapshot of the engine.

use super::error::HttpError;
use super::views::{self, BackfillView, PipelineView, RunView};
use super::AppState;
use crate::engine::backfill::BackfillId;
use crate::engine::state::PipelineRunId;
use crate::engine::why::{Why, WhyError};
use crate::model::pipeline::{PipelineName, StepName};
use axum::extract::{Path, Query, State};
use axum::Json;
use serde::Deserialize;

pub(super) fn unknown_pipeline(name: &str) -> HttpError {
    HttpError::not_found(format!(
        "no pipeline named `{name}` is loaded; `GET /api/v1/pipelines` (or `baton status`) lists them"
    ))
}

pub(super) fn unknown_run(id: &str) -> HttpError {
    HttpError::not_found(format!(
        "no pipeline run `{id}`; `baton runs PIPELINE` lists the runs of a pipeline (ids look like `nightly@2026-03-01T02:00:00Z`)"
    ))
}

pub(super) async fn pipelines(
    State(state): State<AppState>,
) -> Result<Json<Vec<PipelineView>>, HttpError> {
    let list = state
        .handle
        .inspect(|engine, now| {
            engine
                .pipelines()
                .map(|p| views::pipeline_view(engine, p, now, false))
                .collect::<Vec<_>>()
        })
        .await?;
    let history = state.handle.history();
    Ok(Json(
        list.into_iter()
            .map(|view| views::with_history(view, history, false))
            .collect(),
    ))
}

pub(super) async fn pipeline(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<PipelineView>, HttpError> {
    let key = PipelineName(name.clone());
    state
        .handle
        .inspect(move |engine, now| {
            engine
                .pipeline(&key)
                .map(|p| views::pipeline_view(engine, p, now, true))
        })
        .await?
        .map(|view| Json(views::with_history(view, state.handle.history(), true)))
        .ok_or_else(|| unknown_pipeline(&name))
}

#[derive(Debug, Deserialize)]
pub(super) struct Limit {
    limit: Option<String>,
}

pub(super) async fn pipeline_runs(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Query(limit): Query<Limit>,
) -> Result<Json<Vec<RunView>>, HttpError> {
    let key = PipelineName(name.clone());
    let limit = match limit.limit {
        None => 20,
        Some(text) => text.parse::<usize>().map_err(|_| {
            HttpError::bad_request(format!("`limit` must be a whole number, found `{text}`"))
        })?,
    };
    let k = key.clone();
    let in_memory = state
        .handle
        .inspect(move |engine, _| {
            engine.pipeline(&k)?;
            Some(
                views::runs_of(engine, &k)
                    .into_iter()
                    .take(limit)
                    .map(views::run_view)
                    .collect(),
            )
        })
        .await?
        .ok_or_else(|| unknown_pipeline(&name))?;
    Ok(Json(views::newest_runs(
        in_memory,
        state.handle.history(),
        &key,
        limit,
    )))
}

pub(super) async fn run(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<RunView>, HttpError> {
    let key = PipelineRunId(id.clone());
    let k = key.clone();
    let in_memory = state
        .handle
        .inspect(move |engine, _| engine.state().runs.get(&k).map(views::run_view))
        .await?;
    in_memory
        .or_else(|| {
            state
                .handle
                .history()
                .get(&key)
                .as_ref()
                .map(views::run_view)
        })
        .map(Json)
        .ok_or_else(|| unknown_run(&id))
}

pub(super) async fn backfills(
    State(state): State<AppState>,
) -> Result<Json<Vec<BackfillView>>, HttpError> {
    let list = state
        .handle
        .inspect(|engine, _| {
            let mut all: Vec<BackfillView> = engine
                .state()
                .backfills
                .values()
                .map(|b| views::backfill_view(engine, b))
                .collect();
            all.sort_by_key(|b| std::cmp::Reverse(b.backfill.created_at));
            all
        })
        .await?;
    Ok(Json(list))
}

pub(super) fn unknown_backfill(id: &str) -> HttpError {
    HttpError::not_found(format!(
        "no backfill `{id}`; `GET /api/v1/backfills` lists them"
    ))
}

pub(super) async fn backfill(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<BackfillView>, HttpError> {
    let key = BackfillId(id.clone());
    state
        .handle
        .inspect(move |engine, _| {
            engine
                .state()
                .backfills
                .get(&key)
                .map(|b| views::backfill_view(engine, b))
        })
        .await?
        .map(Json)
        .ok_or_else(|| unknown_backfill(&id))
}

#[derive(Debug, Deserialize)]
pub(super) struct WhyQuery {
    step: Option<String>,
}

pub(super) async fn why(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Query(query): Query<WhyQuery>,
) -> Result<Json<Why>, HttpError> {
    let pipeline = PipelineName(name);
    let step = query.step.map(StepName);
    let answer = state
        .handle
        .inspect(move |engine, now| engine.why(&pipeline, step.as_ref(), now))
        .await?;
    let mut why = answer.map_err(|e| match e {
        WhyError::UnknownPipeline(p) => unknown_pipeline(&p.0),
        e @ WhyError::UnknownStep { .. } => HttpError::not_found(e.to_string()),
    })?;
    // A trigger held by the account's request budget looks like any trigger to the engine.
    if why.reason == crate::engine::why::WhyReason::Triggering {
        if let Some(client) = state.default_client() {
            let budget = client.budget();
            let waiting = budget.stats().waiting;
            if let Some(until) = budget.cooldown_until() {
                why.reason = crate::engine::why::WhyReason::RequestBudget;
                why.sentence = format!(
                    "{}; dbt Cloud rate-limited the account (429) and every request waits until {until}",
                    why.sentence
                );
                why.until = Some(until);
            } else if waiting > 0 {
                why.reason = crate::engine::why::WhyReason::RequestBudget;
                why.sentence = format!(
                    "{}; {waiting} request(s) wait for the account's request budget ({} a minute)",
                    why.sentence,
                    budget.requests_per_minute()
                );
            }
        }
    }
    Ok(Json(why))
}

/// `GET /api/v1/pipelines/{name}/trends`: each step's durations over the runs kept, with the
/// median and the slowest runs (the numbers of the pipeline page's trend charts).
pub(super) async fn trends(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<crate::ops::run_history::Trends>, HttpError> {
    let key = PipelineName(name.clone());
    let snapshot = state
        .handle
        .inspect(move |engine, now| crate::ops::pipeline_page::Snapshot::read(engine, &key, now))
        .await?
        .ok_or_else(|| unknown_pipeline(&name))?;
    let history = state.handle.history().clone();
    let trends = tokio::task::spawn_blocking(move || {
        let (snapshot, runs) = snapshot.with_history(&history);
        crate::ops::run_history::Trends::build(&snapshot.definition, &runs)
    })
    .await
    .map_err(|_| {
        HttpError::new(
            axum::http::StatusCode::INTERNAL_SERVER_ERROR,
            "the trends could not be computed",
        )
    })?;
    Ok(Json(trends))
}
