//! Action routes: trigger, cancel, retry, pause, resume, and creating or cancelling a backfill.
//! Each is checked against a snapshot first (so a refusal says why), sent to the loop as an
//! operator event, and confirmed by a read that the loop answers after applying it.

use super::error::HttpError;
use super::reads::{unknown_backfill, unknown_pipeline, unknown_run};
use super::views::{self, BackfillPreview, PreviewDateView};
use super::AppState;
use crate::engine::backfill::{BackfillError, BackfillId, BackfillSpec, Reprocess};
use crate::engine::event::{Event, OperatorRequest};
use crate::engine::state::{PipelineRunId, PipelineRunState};
use crate::model::pipeline::PipelineName;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, NaiveDate, NaiveDateTime, SubsecRound, TimeZone, Utc};
use chrono_tz::Tz;
use serde::de::DeserializeOwned;
use serde::Deserialize;

/// Most pipeline runs a backfill may run at once when the request does not say.
pub const DEFAULT_MAX_ACTIVE: u32 = 1;

/// Sends an operator request and returns once the loop has applied it and committed what it
/// changed: a 2xx answer means the change survives a crash.
async fn apply_durably(state: &AppState, request: OperatorRequest) -> Result<(), HttpError> {
    state.handle.send(Event::Operator(request))?;
    let mut progress = state.handle.progress();
    let probe = progress.clone();
    // Answered inside the loop after the request was applied; the next plan commits it.
    let seen = state
        .handle
        .inspect(move |_, _| probe.borrow().iterations)
        .await?;
    while progress.borrow_and_update().iterations <= seen {
        progress
            .changed()
            .await
            .map_err(|_| HttpError::stopping())?;
    }
    Ok(())
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

/// An instant from `2026-03-01T02:00:00Z`, `2026-03-01T02:00` (in `tz`) or `2026-03-01` (the day's
/// start in `tz`, or its last second with `end_of_day`).
pub fn parse_when(text: &str, tz: Tz, end_of_day: bool) -> Result<DateTime<Utc>, String> {
    let text = text.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Ok(t.with_timezone(&Utc));
    }
    let local = |naive: NaiveDateTime| {
        tz.from_local_datetime(&naive)
            .earliest()
            .map(|t| t.with_timezone(&Utc))
            .ok_or_else(|| format!("{text} does not exist in {tz} (a DST gap)"))
    };
    for format in ["%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M", "%Y-%m-%d %H:%M"] {
        if let Ok(naive) = NaiveDateTime::parse_from_str(text, format) {
            return local(naive);
        }
    }
    if let Ok(day) = NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        let start = |d: NaiveDate| local(d.and_hms_opt(0, 0, 0).unwrap_or_default());
        return if end_of_day {
            let next = day
                .succ_opt()
                .ok_or_else(|| format!("{text} is out of range"))?;
            Ok(start(next)? - chrono::Duration::seconds(1))
        } else {
            start(day)
        };
    }
    Err(format!(
        "`{text}` is not a date: use 2026-03-01, 2026-03-01T02:00 (in the pipeline's zone) or 2026-03-01T02:00:00Z"
    ))
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
    let pipeline = PipelineName(name.clone());
    let p = pipeline.clone();
    let (logical_date, id) = state
        .handle
        .inspect(move |engine, now| {
            let def = engine.pipeline(&p).ok_or_else(|| unknown_pipeline(&p.0))?;
            let tz = def.schedule.as_ref().map_or(chrono_tz::UTC, |s| s.timezone);
            let date = match &request.logical_date {
                Some(text) => parse_when(text, tz, false).map_err(HttpError::bad_request)?,
                None => now.trunc_subsecs(0),
            };
            let id = PipelineRunId::new(&p, date);
            if let Some(existing) = engine.state().run_state(&id) {
                return Err(HttpError::conflict(format!(
                    "pipeline run {id} exists already ({existing:?}); to run it again use `baton retry {id}` (if it failed) or give another logical date"
                )));
            }
            Ok((date, id))
        })
        .await??;
    apply_durably(
        &state,
        OperatorRequest::TriggerPipeline {
            pipeline: pipeline.clone(),
            logical_date: Some(logical_date),
        },
    )
    .await?;
    let created = state
        .handle
        .inspect(move |engine, _| match engine.state().runs.get(&id) {
            Some(run) => Ok(views::run_summary(run)),
            None => {
                let active = views::runs_of(engine, &pipeline)
                    .into_iter()
                    .find(|r| !r.state.is_terminal() && !r.is_backfill())
                    .map(|r| r.id.0.clone());
                Err(HttpError::conflict(match active {
                    Some(active) => format!(
                        "not started: the previous run {active} is still active and the pipeline's concurrency policy is `skip`; cancel it (`baton cancel {active}`) or wait"
                    ),
                    None => "not started: the scheduler declined the run".to_string(),
                }))
            }
        })
        .await??;
    tracing::info!(pipeline = %name, run = %created.id, "operator triggered a pipeline run");
    Ok((
        StatusCode::ACCEPTED,
        Json(serde_json::json!({ "run": created })),
    )
        .into_response())
}

pub(super) async fn cancel(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, HttpError> {
    apply_to_run(
        &state,
        PipelineRunId(id),
        |run, state| match state {
            s if s.is_terminal() => Err(format!(
                "pipeline run {run} is already over ({s:?}); nothing to cancel"
            )),
            _ => Ok(()),
        },
        |run| OperatorRequest::CancelPipelineRun { run },
        "operator cancelled a pipeline run",
        "steps not started are cancelled; dbt Cloud runs in flight are cancelled and watched until dbt Cloud confirms (status 30)",
    )
    .await
}

pub(super) async fn retry(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, HttpError> {
    apply_to_run(
        &state,
        PipelineRunId(id),
        |run, state| match state {
            PipelineRunState::Failed | PipelineRunState::Cancelled => Ok(()),
            s => Err(format!(
                "only a failed or cancelled pipeline run can be retried; {run} is {s:?}"
            )),
        },
        |run| OperatorRequest::RetryPipelineRun { run },
        "operator retried a pipeline run",
        "its failed, upstream_failed and cancelled steps run again, in DAG order; succeeded steps are kept",
    )
    .await
}

/// Checks a pipeline run's state (an unknown run is a 404, a refusal by `allowed` a 409), applies
/// a request about it, then answers 202 with the run as it is now.
async fn apply_to_run(
    state: &AppState,
    run: PipelineRunId,
    allowed: impl FnOnce(&PipelineRunId, PipelineRunState) -> Result<(), String> + Send + 'static,
    request: impl FnOnce(PipelineRunId) -> OperatorRequest,
    log: &'static str,
    note: &'static str,
) -> Result<Response, HttpError> {
    let r = run.clone();
    state
        .handle
        .inspect(move |engine, _| match engine.state().run_state(&r) {
            None => Err(unknown_run(&r.0)),
            Some(s) => allowed(&r, s).map_err(HttpError::conflict),
        })
        .await??;
    tracing::info!(run = %run, "{log}");
    apply_durably(state, request(run.clone())).await?;
    let id = run.0.clone();
    let summary = state
        .handle
        .inspect(move |engine, _| engine.state().runs.get(&run).map(views::run_summary))
        .await?
        .ok_or_else(|| unknown_run(&id))?;
    Ok((
        StatusCode::ACCEPTED,
        Json(serde_json::json!({ "run": summary, "note": note })),
    )
        .into_response())
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
    let pipeline = PipelineName(name.clone());
    let p = pipeline.clone();
    state
        .handle
        .inspect(move |engine, _| engine.pipeline(&p).map(|_| ()))
        .await?
        .ok_or_else(|| unknown_pipeline(&name))?;
    let request = if paused {
        OperatorRequest::Pause {
            pipeline: pipeline.clone(),
        }
    } else {
        OperatorRequest::Resume {
            pipeline: pipeline.clone(),
        }
    };
    apply_durably(&state, request).await?;
    let view = state
        .handle
        .inspect(move |engine, now| {
            engine
                .pipeline(&pipeline)
                .map(|p| views::pipeline_view(engine, p, now, false))
        })
        .await?
        .ok_or_else(|| unknown_pipeline(&name))?;
    tracing::info!(pipeline = %name, paused, "operator {} a pipeline", if paused { "paused" } else { "resumed" });
    Ok(Json(view).into_response())
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
    let request: BackfillBody = body(&bytes)?;
    let (Some(from), Some(to)) = (request.from.clone(), request.to.clone()) else {
        return Err(HttpError::bad_request(
            "a backfill needs `from` and `to` (dates such as 2026-03-01, both included)",
        ));
    };
    let every = request
        .every
        .as_deref()
        .map(humantime::parse_duration)
        .transpose()
        .map_err(|e| HttpError::bad_request(format!("`every`: {e} (e.g. 1d, 6h)")))?;
    let pipeline = PipelineName(name.clone());
    let id = BackfillId(format!("bf-{:08x}", rand::random::<u32>()));
    let dry_run = request.dry_run;
    let (i, p) = (id.clone(), pipeline.clone());
    let (spec, preview) = state
        .handle
        .inspect(move |engine, _| {
            let def = engine.pipeline(&p).ok_or_else(|| unknown_pipeline(&p.0))?;
            let tz = def.schedule.as_ref().map_or(chrono_tz::UTC, |s| s.timezone);
            let spec = BackfillSpec {
                pipeline: p.clone(),
                from: parse_when(&from, tz, false).map_err(HttpError::bad_request)?,
                to: parse_when(&to, tz, true).map_err(HttpError::bad_request)?,
                every,
                max_active: request.max_active.unwrap_or(DEFAULT_MAX_ACTIVE),
                reprocess: request.reprocess.unwrap_or_default(),
                deadline: request.deadline,
            };
            let preview = engine.preview_backfill(&i, &spec).map_err(|e| match e {
                BackfillError::UnknownPipeline(p) => unknown_pipeline(&p.0),
                e => HttpError::bad_request(e.to_string()),
            })?;
            Ok::<_, HttpError>((spec, preview))
        })
        .await??;
    if dry_run {
        return Ok(Json(BackfillPreview {
            pipeline: name,
            dates: preview.into_iter().map(PreviewDateView::from).collect(),
        })
        .into_response());
    }
    apply_durably(
        &state,
        OperatorRequest::CreateBackfill {
            id: id.clone(),
            spec,
        },
    )
    .await?;
    let i = id.clone();
    let view = state
        .handle
        .inspect(move |engine, _| {
            engine
                .state()
                .backfills
                .get(&i)
                .map(|b| views::backfill_view(engine, b))
        })
        .await?
        .ok_or_else(|| HttpError::conflict("the scheduler declined the backfill; see its log"))?;
    tracing::info!(pipeline = %name, backfill = %id, dates = view.counts.dates, "operator created a backfill");
    Ok((StatusCode::CREATED, Json(view)).into_response())
}

pub(super) async fn cancel_backfill(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, HttpError> {
    let backfill = BackfillId(id.clone());
    let b = backfill.clone();
    state
        .handle
        .inspect(move |engine, _| match engine.state().backfills.get(&b) {
            None => Err(unknown_backfill(&b.0)),
            Some(bf) if bf.state.is_terminal() => Err(HttpError::conflict(format!(
                "backfill {} is already over ({})",
                bf.id,
                views::backfill_state_name(bf.state)
            ))),
            Some(_) => Ok(()),
        })
        .await??;
    apply_durably(
        &state,
        OperatorRequest::CancelBackfill {
            id: backfill.clone(),
        },
    )
    .await?;
    let view = state
        .handle
        .inspect(move |engine, _| {
            engine
                .state()
                .backfills
                .get(&backfill)
                .map(|b| views::backfill_view(engine, b))
        })
        .await?
        .ok_or_else(|| unknown_backfill(&id))?;
    tracing::info!(backfill = %id, "operator cancelled a backfill");
    Ok((StatusCode::ACCEPTED, Json(view)).into_response())
}
