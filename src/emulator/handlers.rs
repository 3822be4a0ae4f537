//! The one HTTP handler: routes the request, checks the token and the account, applies faults,
//! performs the operation on the world and writes the answer as dbt Cloud would; every request is
//! counted by route and status and logged at debug level.

use super::faults::{html_error_page, FaultAction};
use super::query::{self, FieldErrors, QueryPairs};
use super::render;
use super::routes::{resolve, ControlRoute, Resolved, Route, CONTROL_ROUTE, NOT_FOUND_ROUTE};
use super::state::{RunState, World, WorldError};
use super::{artifacts, lists, lock, trigger_body, Shared};
use crate::ids::RunId;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::sync::Arc;

const INVALID_REQUEST: &str =
    "The request was invalid. Please double check the provided data and try again.";
const NOT_FOUND: &str =
    "The requested resource was not found. Please check that you have the proper permissions.";
const INVALID_TOKEN: &str = "Invalid token.";
const NOT_SCOPED: &str = "Access denied: Token is not scoped to account.";
const TOO_MANY: &str = "Too many requests. Please try again later.";

/// An answer before it becomes an HTTP response.
#[derive(Debug)]
pub(super) struct Reply {
    status: u16,
    content_type: &'static str,
    body: String,
    retry_after: Option<u64>,
    /// Send the headers and part of the body, then drop the connection.
    cut_mid_body: bool,
}

impl Reply {
    pub(super) fn json(status: u16, value: Value) -> Self {
        Self {
            status,
            content_type: "application/json",
            body: value.to_string(),
            retry_after: None,
            cut_mid_body: false,
        }
    }

    fn raw(content_type: &'static str, body: String) -> Self {
        Self {
            status: 200,
            content_type,
            body,
            retry_after: None,
            cut_mid_body: false,
        }
    }

    fn html(status: u16) -> Self {
        Self {
            status,
            content_type: "text/html",
            body: html_error_page(status),
            retry_after: None,
            cut_mid_body: false,
        }
    }

    fn error(status: u16, message: &str) -> Self {
        Self::json(status, render::error(status, message, Value::Null))
    }

    fn not_found() -> Self {
        Self::error(404, NOT_FOUND)
    }

    fn bad_request(data: Value) -> Self {
        Self::json(400, render::error(400, INVALID_REQUEST, data))
    }

    pub(super) fn field_errors(errors: FieldErrors) -> Self {
        Self::bad_request(json!(errors))
    }

    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let full_length = self.body.len();
        let body = if self.cut_mid_body {
            // Announcing the full length and sending half makes the server abort the connection
            // mid-body, which is what a client sees when a proxy drops it.
            let mut cut = full_length / 2;
            while !self.body.is_char_boundary(cut) {
                cut -= 1;
            }
            self.body[..cut].to_string()
        } else {
            self.body
        };
        let mut response = Response::new(Body::from(body));
        *response.status_mut() = status;
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(self.content_type),
        );
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(full_length));
        if let Some(seconds) = self.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

pub(crate) async fn handle(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let path = parts.uri.path().to_string();
    tracing::debug!(method = %parts.method, %path, query = parts.uri.query().unwrap_or(""), "emulator request");
    let query = QueryPairs::parse(parts.uri.query());
    let body = axum::body::to_bytes(body, 8 << 20)
        .await
        .unwrap_or_default();
    let (route_name, reply) = match resolve(&parts.method, &path) {
        Resolved::NotFound => (NOT_FOUND_ROUTE, Reply::not_found()),
        Resolved::WrongMethod(name) => (
            name,
            Reply::error(405, &format!("Method \"{}\" not allowed.", parts.method)),
        ),
        Resolved::Control(control) => (
            CONTROL_ROUTE,
            control_reply(&shared, control, &parts.headers, &body),
        ),
        Resolved::Api { account, route } => (
            route.name(),
            api_reply(&shared, account, &route, &parts.headers, &query, &body),
        ),
    };
    shared.count(route_name, reply.status);
    tracing::debug!(route = route_name, status = reply.status, "emulator answer");
    let latency = lock(&shared.faults).latency_ms;
    if latency > 0 && route_name != CONTROL_ROUTE {
        tokio::time::sleep(std::time::Duration::from_millis(latency)).await;
    }
    reply.into_response()
}

fn authorized(shared: &Shared, headers: &HeaderMap) -> bool {
    let Some(value) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let mut words = value.split_whitespace();
    let (Some(scheme), Some(token), None) = (words.next(), words.next(), words.next()) else {
        return false;
    };
    let scheme_ok = scheme.eq_ignore_ascii_case("token") || scheme.eq_ignore_ascii_case("bearer");
    let token_ok: bool =
        subtle::ConstantTimeEq::ct_eq(token.as_bytes(), shared.token.expose().as_bytes()).into();
    scheme_ok && token_ok
}

fn api_reply(
    shared: &Shared,
    account: Option<i64>,
    route: &Route,
    headers: &HeaderMap,
    query: &QueryPairs,
    body: &[u8],
) -> Reply {
    if !authorized(shared, headers) {
        return Reply::error(401, INVALID_TOKEN);
    }
    if account.is_some_and(|a| a != shared.account_id.0) {
        return Reply::error(403, NOT_SCOPED);
    }
    let action = {
        let mut faults = lock(&shared.faults);
        let mut rng = lock(&shared.fault_rng);
        faults.decide(route.name(), route.creates_run(), &mut rng)
    };
    match action {
        FaultAction::RateLimited {
            retry_after_seconds,
        } => {
            let mut reply = Reply::error(429, TOO_MANY);
            reply.retry_after = retry_after_seconds;
            return reply;
        }
        FaultAction::ServerError(status) => return Reply::html(status),
        _ => {}
    }
    let (mut reply, created) = perform(shared, route, query, body);
    match action {
        FaultAction::EffectThen502 => {
            if let Some(id) = created {
                shared.with_world(|world, _| {
                    if let Some(run) = world.runs.get_mut(&id) {
                        run.answered_status = 502;
                    }
                });
            }
            reply = Reply::html(502);
        }
        FaultAction::EffectThenDrop => reply.cut_mid_body = true,
        _ => {}
    }
    reply
}

fn world_error(e: WorldError) -> Reply {
    match e {
        WorldError::UnknownJob | WorldError::UnknownRun => Reply::not_found(),
        WorldError::NotRetryable(reason) => Reply::bad_request(json!({ "reason": reason })),
    }
}

fn run_reply(
    shared: &Shared,
    world: &World,
    id: RunId,
    include: &BTreeSet<String>,
    now: chrono::DateTime<chrono::Utc>,
) -> Reply {
    match world.runs.get(&id) {
        Some(run) => Reply::json(
            200,
            render::ok(render::run_json(
                world,
                run,
                now,
                &shared.href_base,
                include,
            )),
        ),
        None => Reply::not_found(),
    }
}

fn trigger_and_job() -> BTreeSet<String> {
    ["trigger".to_string(), "job".to_string()].into()
}

/// Performs the operation; also returns the run it created, if any.
fn perform(shared: &Shared, route: &Route, q: &QueryPairs, body: &[u8]) -> (Reply, Option<RunId>) {
    let account = shared.account_id.0;
    match route {
        Route::TriggerRun(job) => {
            let request = match trigger_body::parse_trigger(body, true) {
                Ok(Some(request)) => request,
                Ok(None) => return (Reply::field_errors(trigger_body::cause_required()), None),
                Err(errors) => return (Reply::field_errors(errors), None),
            };
            shared.with_world(|world, now| match world.trigger(*job, request, now) {
                Ok(id) => (
                    run_reply(shared, world, id, &trigger_and_job(), now),
                    Some(id),
                ),
                Err(e) => (world_error(e), None),
            })
        }
        Route::RerunJob(job) => {
            let request = match trigger_body::parse_trigger(body, false) {
                Ok(request) => request,
                Err(errors) => return (Reply::field_errors(errors), None),
            };
            shared.with_world(|world, now| match world.rerun(*job, request, now) {
                Ok(id) => (
                    run_reply(shared, world, id, &trigger_and_job(), now),
                    Some(id),
                ),
                Err(e) => (world_error(e), None),
            })
        }
        Route::RetryRun(run) => shared.with_world(|world, now| match world.retry_run(*run, now) {
            Ok(id) => (
                run_reply(shared, world, id, &trigger_and_job(), now),
                Some(id),
            ),
            Err(e) => (world_error(e), None),
        }),
        Route::ListRuns => (lists::list_runs(shared, q, account), None),
        Route::GetRun(id) => {
            let include = query::include_related(q);
            (
                shared.with_world(|world, now| run_reply(shared, world, *id, &include, now)),
                None,
            )
        }
        Route::CancelRun(id) => {
            let reply = shared.with_world(|world, now| match world.cancel(*id, now) {
                Ok(()) => run_reply(shared, world, *id, &BTreeSet::new(), now),
                Err(e) => world_error(e),
            });
            (reply, None)
        }
        Route::ListArtifacts(id) => {
            let reply = shared.with_world(|world, now| match world.runs.get(id) {
                Some(run) => Reply::json(200, render::ok(json!(artifacts::list(world, run, now)))),
                None => Reply::not_found(),
            });
            (reply, None)
        }
        Route::GetArtifact(id, path) => {
            let step = match q.last("step").map(str::trim).filter(|s| !s.is_empty()) {
                None => None,
                Some(raw) => match raw.parse::<usize>() {
                    Ok(n) => Some(n),
                    Err(_) => {
                        let errors = FieldErrors::from([(
                            "step".to_string(),
                            format!("'{raw}' is not of type 'integer'"),
                        )]);
                        return (Reply::field_errors(errors), None);
                    }
                },
            };
            let reply = shared.with_world(|world, now| {
                let found = world
                    .runs
                    .get(id)
                    .and_then(|run| artifacts::get(world, run, path, step, now));
                match found {
                    Some((content_type, body)) => Reply::raw(content_type, body),
                    None => Reply::not_found(),
                }
            });
            (reply, None)
        }
        Route::GetStep(step) => {
            let reply = shared.with_world(|world, now| {
                let found = world.runs.values().find_map(|run| {
                    let index = usize::try_from(step.0.checked_sub(run.step_id_base)?).ok()?;
                    render::step_views(run, now)
                        .into_iter()
                        .find(|v| v.index == index)
                        .map(|v| (run, v))
                });
                match found {
                    Some((run, view)) => {
                        Reply::json(200, render::ok(render::step_json(world, run, &view, now)))
                    }
                    None => Reply::not_found(),
                }
            });
            (reply, None)
        }
        Route::RunFailureDetails(id) => {
            let reply = shared.with_world(|world, _| match world.runs.get(id) {
                None => Reply::not_found(),
                Some(run) => match world.retry_not_supported_reason(run) {
                    Some(reason) => Reply::bad_request(json!({ "reason": reason })),
                    None => Reply::json(200, render::ok(failure_details(run))),
                },
            });
            (reply, None)
        }
        Route::GetJob(id) => {
            let reply = shared.with_world(|world, _| match world.job(*id) {
                Some(spec) => Reply::json(200, render::ok(render::job_json(world, spec))),
                None => Reply::not_found(),
            });
            (reply, None)
        }
        Route::ListJobs => (lists::list_jobs(shared, q, account), None),
        Route::GetAccount => {
            let reply = shared
                .with_world(|world, _| Reply::json(200, render::ok(render::account_json(world))));
            (reply, None)
        }
        Route::ListAccounts => {
            let reply = shared.with_world(|world, _| {
                let mut filters = serde_json::Map::new();
                filters.insert("limit".into(), json!(100));
                filters.insert("offset".into(), json!(0));
                Reply::json(
                    200,
                    render::ok_list(vec![render::account_json(world)], filters, "id", 1),
                )
            });
            (reply, None)
        }
    }
}

fn failure_details(run: &RunState) -> Value {
    let failed = match run.ending {
        Some(super::state::Ending::Error { step }) => {
            run.steps.get(step.saturating_sub(1)).cloned()
        }
        _ => None,
    };
    let skipped: Vec<String> = match run.ending {
        Some(super::state::Ending::Error { step }) => {
            run.steps.iter().skip(step).cloned().collect()
        }
        _ => Vec::new(),
    };
    json!({"failed_step": failed, "skipped_steps": skipped})
}

fn control_reply(
    shared: &Shared,
    control: ControlRoute,
    headers: &HeaderMap,
    body: &[u8],
) -> Reply {
    if !authorized(shared, headers) {
        return Reply::error(401, INVALID_TOKEN);
    }
    match control {
        ControlRoute::GetFaults => Reply::json(200, render::ok(json!(*lock(&shared.faults)))),
        ControlRoute::PutFaults => match serde_json::from_slice::<super::Faults>(body) {
            Ok(faults) => {
                *lock(&shared.faults) = faults.clone();
                Reply::json(200, render::ok(json!(faults)))
            }
            Err(e) => Reply::bad_request(json!({ "faults": e.to_string() })),
        },
        ControlRoute::RequestCounts => {
            let counts: Vec<Value> = lock(&shared.counts)
                .iter()
                .map(|((route, status), count)| json!({"route": route, "status": status, "count": count}))
                .collect();
            Reply::json(200, render::ok(json!(counts)))
        }
        ControlRoute::Runs => Reply::json(200, render::ok(json!(shared.recorded_runs()))),
    }
}
