//! Action routes: trigger, cancel, retry, pause, resume, and creating, previewing or cancelling a
//! backfill. Each makes one trip to the loop: the request goes in with a reply channel, the engine
//! carries it out or names its refusal (`OperatorError`), and the answer comes back once what it
//! changed is durable, read against the state as it then stands. No rule is checked here.

use super::error::HttpError;
use super::reads::{unknown_backfill, unknown_pipeline, unknown_run};
use super::views::{self, BackfillPreview, PreviewDateView};
use super::AppState;
use crate::engine::backfill::{BackfillError, BackfillId, Reprocess};
use crate::engine::event::{
    BackfillRequest, OperatorDate, OperatorError, OperatorRequest, Outcome,
};
use crate::engine::Engine;
use crate::model::pipeline::PipelineName;
use crate::runtime::OperatorResult;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde::Deserialize;

/// Most pipeline runs a backfill may run at once when the request does not say.
pub const DEFAULT_MAX_ACTIVE: u32 = 1;

/// The status and message of each refusal.
impl From<OperatorError> for HttpError {
    fn from(e: OperatorError) -> Self {
        match e {
            OperatorError::UnknownPipeline(p)
            | OperatorError::BackfillRefused(BackfillError::UnknownPipeline(p)) => {
                unknown_pipeline(&p.0)
            }
            OperatorError::UnknownRun(run) => unknown_run(&run.0),
            OperatorError::UnknownBackfill(id) => unknown_backfill(&id.0),
            e @ (OperatorError::BadDate(_)
            | OperatorError::BackfillRefused(BackfillError::Invalid(_))) => {
                HttpError::bad_request(e.to_string())
            }
            e @ (OperatorError::RunExists { .. }
            | OperatorError::SkippedWhileActive { .. }
            | OperatorError::RunOver { .. }
            | OperatorError::NotRetryable { .. }
            | OperatorError::BackfillOver { .. }
            | OperatorError::BackfillRefused(BackfillError::Exists(_))) => {
                HttpError::conflict(e.to_string())
            }
        }
    }
}

/// Sends `request` and answers with `render` of its outcome, read in the loop after the flush.
async fn operate(
    state: &AppState,
    request: OperatorRequest,
    render: impl FnOnce(&Engine, DateTime<Utc>, Outcome) -> Response + Send + 'static,
) -> Result<Response, HttpError> {
    state
        .handle
        .operate(request, move |engine, now, result: OperatorResult| {
            result
                .map(|outcome| render(engine, now, outcome))
                .map_err(HttpError::from)
        })
        .await?
}

fn body<T: DeserializeOwned + Default>(bytes: &Bytes) -> Result<T, HttpError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(bytes).map_err(|e| {
        HttpError::bad_request(format!(
            "the request body is not what this route takes: {e}"
        ))
    })
}

/// A run's summary as an action's answer, with `note` when there is one.
fn run_answer(
    engine: &Engine,
    run: &crate::engine::state::PipelineRunId,
    note: Option<&str>,
) -> Response {
    match engine.state().runs.get(run) {
        Some(r) => {
            let mut answer = serde_json::json!({ "run": views::run_summary(r) });
            if let Some(note) = note {
                answer["note"] = note.into();
            }
            (StatusCode::ACCEPTED, Json(answer)).into_response()
        }
        None => unknown_run(&run.0).into_response(),
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct TriggerBody {
    logical_date: Option<String>,
}

pub(super) async fn trigger(
    State(state): State<AppState>,
    Path(name): Path<String>,
    bytes: Bytes,
) -> Result<Response, HttpError> {
    let request: TriggerBody = body(&bytes)?;
    let request = OperatorRequest::TriggerPipeline {
        pipeline: PipelineName(name.clone()),
        logical_date: request.logical_date.map(OperatorDate::Text),
    };
    operate(&state, request, move |engine, _, outcome| match outcome {
        Outcome::RunCreated(run) => {
            tracing::info!(pipeline = %name, run = %run, "operator triggered a pipeline run");
            run_answer(engine, &run, None)
        }
        other => unexpected(other),
    })
    .await
}

pub(super) async fn cancel(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, HttpError> {
    let run = crate::engine::state::PipelineRunId(id);
    operate(&state, OperatorRequest::CancelPipelineRun { run }, |engine, _, outcome| match outcome {
        Outcome::RunCancelled(run) => {
            tracing::info!(run = %run, "operator cancelled a pipeline run");
            run_answer(engine, &run, Some("steps not started are cancelled; dbt Cloud runs in flight are cancelled and watched until dbt Cloud confirms (status 30)"))
        }
        other => unexpected(other),
    })
    .await
}

pub(super) async fn retry(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, HttpError> {
    let run = crate::engine::state::PipelineRunId(id);
    operate(&state, OperatorRequest::RetryPipelineRun { run }, |engine, _, outcome| match outcome {
        Outcome::RunRetried(run) => {
            tracing::info!(run = %run, "operator retried a pipeline run");
            run_answer(engine, &run, Some("its failed, upstream_failed and cancelled steps run again, in DAG order; succeeded steps are kept"))
        }
        other => unexpected(other),
    })
    .await
}

pub(super) async fn pause(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Response, HttpError> {
    set_paused(state, name, true).await
}

pub(super) async fn resume(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Response, HttpError> {
    set_paused(state, name, false).await
}

async fn set_paused(state: AppState, name: String, paused: bool) -> Result<Response, HttpError> {
    let pipeline = PipelineName(name);
    let request = if paused {
        OperatorRequest::Pause { pipeline }
    } else {
        OperatorRequest::Resume { pipeline }
    };
    operate(&state, request, move |engine, now, outcome| match outcome {
        Outcome::Paused(pipeline) | Outcome::Resumed(pipeline) => {
            tracing::info!(pipeline = %pipeline, paused, "operator {} a pipeline", if paused { "paused" } else { "resumed" });
            match engine.pipeline(&pipeline) {
                Some(p) => Json(views::pipeline_view(engine, p, now, false)).into_response(),
                None => unknown_pipeline(&pipeline.0).into_response(),
            }
        }
        other => unexpected(other),
    })
    .await
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct BackfillBody {
    from: Option<String>,
    to: Option<String>,
    every: Option<String>,
    max_active: Option<u32>,
    reprocess: Option<Reprocess>,
    /// Give these runs the pipeline's `deadline` (a past date is late by definition).
    #[serde(default)]
    deadline: bool,
    #[serde(default)]
    dry_run: bool,
}

pub(super) async fn create_backfill(
    State(state): State<AppState>,
    Path(name): Path<String>,
    bytes: Bytes,
) -> Result<Response, HttpError> {
    let body: BackfillBody = body(&bytes)?;
    let (Some(from), Some(to)) = (body.from, body.to) else {
        return Err(HttpError::bad_request(
            "a backfill needs `from` and `to` (dates such as 2026-03-01, both included)",
        ));
    };
    let every = body
        .every
        .as_deref()
        .map(humantime::parse_duration)
        .transpose()
        .map_err(|e| HttpError::bad_request(format!("`every`: {e} (e.g. 1d, 6h)")))?;
    let id = BackfillId(format!("bf-{:08x}", rand::random::<u32>()));
    let request = BackfillRequest {
        pipeline: PipelineName(name.clone()),
        from: OperatorDate::Text(from),
        to: OperatorDate::Text(to),
        every,
        max_active: body.max_active.unwrap_or(DEFAULT_MAX_ACTIVE),
        reprocess: body.reprocess.unwrap_or_default(),
        deadline: body.deadline,
    };
    let request = if body.dry_run {
        OperatorRequest::PreviewBackfill { id, request }
    } else {
        OperatorRequest::CreateBackfill { id, request }
    };
    operate(&state, request, move |engine, _, outcome| match outcome {
        Outcome::BackfillPreviewed(dates) => Json(BackfillPreview {
            pipeline: name,
            dates: dates.into_iter().map(PreviewDateView::from).collect(),
        })
        .into_response(),
        Outcome::BackfillCreated(id) => match engine.state().backfills.get(&id) {
            Some(b) => {
                let view = views::backfill_view(engine, b);
                tracing::info!(pipeline = %name, backfill = %id, dates = view.counts.dates, "operator created a backfill");
                (StatusCode::CREATED, Json(view)).into_response()
            }
            None => unknown_backfill(&id.0).into_response(),
        },
        other => unexpected(other),
    })
    .await
}

pub(super) async fn cancel_backfill(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, HttpError> {
    let id = BackfillId(id);
    operate(
        &state,
        OperatorRequest::CancelBackfill { id },
        |engine, _, outcome| match outcome {
            Outcome::BackfillCancelled(id) => match engine.state().backfills.get(&id) {
                Some(b) => {
                    tracing::info!(backfill = %id, "operator cancelled a backfill");
                    (StatusCode::ACCEPTED, Json(views::backfill_view(engine, b))).into_response()
                }
                None => unknown_backfill(&id.0).into_response(),
            },
            other => unexpected(other),
        },
    )
    .await
}

/// An outcome that does not answer the request sent (a bug, not an operator's mistake).
fn unexpected(outcome: Outcome) -> Response {
    HttpError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        format!("the scheduler answered with an unexpected outcome: {outcome:?}"),
    )
    .into_response()
}
