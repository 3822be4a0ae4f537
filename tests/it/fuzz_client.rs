//! Fuzzes the dbt Cloud client's response handling. Each input is a raw HTTP response
//! (`HTTP/1.1 <status> ...`, headers, body; a non-HTTP input is taken as a 200's body). It goes two
//! ways:
//! - directly through the decoding the client uses (`parse_retry_after`, `error_from_response`,
//!   `decode_enveloped` for runs, run lists, jobs and artifact lists), with `now` also at the ends
//!   of chrono's range; a decoded run must survive re-encoding;
//! - over real loopback HTTP: a raw TCP server answers the bytes as given to the real
//!   `DbtCloudClient` (`get_run`, `list_runs_page` or `trigger`, picked by the input's length).
//!   When the response is well-formed HTTP, the client's result must equal what the direct
//!   decoding predicts, including the trigger's Rejected / Ambiguous / NotSent class.
//!
//! Properties: nothing panics; every outcome is a typed result or typed error; the token never
//! shows in an error.

#![allow(clippy::unwrap_used)] // helpers of a test crate, not only #[test] fns

use crate::support::fuzz;
use crate::support::fuzz::{Target, Verdict};
use crate::support::http_responses::{http_response, TOKEN};
use baton::clock::{Clock, ManualClock};
use baton::dbt_cloud::budget::RequestBudget;
use baton::dbt_cloud::client::{decode_enveloped, ClientConfig, DbtCloudClient, ListRuns};
use baton::dbt_cloud::error::{error_from_response, parse_retry_after, ApiError, TriggerError};
use baton::dbt_cloud::wire::{Job, Pagination, Run, TriggerRequest};
use baton::ids::{AccountId, JobId, RunId};
use baton::secret::Secret;
use chrono::{DateTime, Utc};
use proptest::prelude::*;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const DICTIONARY: &[&str] = &[
    "\r\n",
    "HTTP/1.1 ",
    "200 OK",
    "429 ",
    "503 ",
    "401 ",
    "400 ",
    "404 ",
    "204 ",
    "Retry-After: ",
    "Retry-After: 1e30\r\n",
    "Retry-After: -1\r\n",
    "Retry-After: NaN\r\n",
    "Retry-After: Fri, 31 Dec 9999 23:59:59 GMT\r\n",
    "Content-Length: 0\r\n",
    "Transfer-Encoding: chunked\r\n",
    "{",
    "}",
    "[",
    "]",
    "\"",
    ":",
    ",",
    "null",
    "true",
    "-1",
    "9223372036854775808",
    "1e400",
    "\"data\":",
    "\"status\":",
    "\"extra\":",
    "\"pagination\":",
    "\"id\":",
    "\"created_at\":",
    "\"2024-07-03 13:59:00.653171+00:00\"",
    "\"+262143-12-31T23:59:59Z\"",
    "\"run_steps\":",
    "\"trigger\":",
    "\"job\":",
    "\"user_message\":",
    "\\u0000",
    "\\ud800",
    TOKEN,
];

/// A raw response split into status, `Retry-After` (as the client reads it) and body; `well_formed`
/// when a compliant HTTP client must read it exactly so.
struct Response<'a> {
    status: u16,
    retry_after: Option<String>,
    body: &'a [u8],
    well_formed: bool,
}

fn split_response(bytes: &[u8]) -> Response<'_> {
    let as_body = Response {
        status: 200,
        retry_after: None,
        body: bytes,
        well_formed: false,
    };
    let Some(head_end) = bytes.windows(4).position(|w| w == b"\r\n\r\n") else {
        return as_body;
    };
    let Ok(head) = std::str::from_utf8(&bytes[..head_end]) else {
        return as_body;
    };
    let body = &bytes[head_end + 4..];
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let Some(status) = status_line
        .strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .filter(|code| code.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|code| code.parse::<u16>().ok())
    else {
        return as_body;
    };
    let visible = |s: &str| s.bytes().all(|b| b == b'\t' || (0x20..0x7f).contains(&b));
    let mut well_formed = (200..=599).contains(&status)
        && status != 204
        && status != 304
        && visible(status_line)
        && status_line.as_bytes().get(12).is_none_or(|b| *b == b' ');
    let mut retry_after = None;
    let mut lengths = 0;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            well_formed = false;
            continue;
        };
        let value = value.trim_matches([' ', '\t']);
        let known = [
            "retry-after",
            "content-length",
            "content-type",
            "date",
            "server",
        ];
        if !known.contains(&name.to_ascii_lowercase().as_str()) || !visible(value) {
            well_formed = false;
        }
        if name.eq_ignore_ascii_case("retry-after") {
            if retry_after.is_some() {
                well_formed = false;
            }
            retry_after = Some(value.to_string());
        }
        if name.eq_ignore_ascii_case("content-length") {
            lengths += 1;
            well_formed &= value == body.len().to_string();
        }
    }
    Response {
        status,
        retry_after,
        body,
        well_formed: well_formed && lengths == 1,
    }
}

fn scrubbed(text: &str) -> String {
    text.replace(TOKEN, "***")
}

fn no_token(what: &str, text: &str) -> Verdict {
    if text.contains(TOKEN) {
        return Err(format!("token leaked: into {what}: {text}"));
    }
    Ok(())
}

/// What the client must return for a 2xx of `body` decoded as `T`, or for an error answer.
fn expected_error(response: &Response<'_>, now: DateTime<Utc>) -> ApiError {
    let retry_after = response
        .retry_after
        .as_deref()
        .and_then(|v| parse_retry_after(v, now));
    let body = scrubbed(&String::from_utf8_lossy(response.body));
    error_from_response(response.status, retry_after, body.as_bytes())
}

fn expected_decode<T: serde::de::DeserializeOwned>(body: &[u8], what: &str) -> Result<T, ApiError> {
    match decode_enveloped::<T>(body, what) {
        Ok((value, _)) => Ok(value),
        Err(ApiError::Decode { expected, excerpt }) => Err(ApiError::Decode {
            expected,
            excerpt: scrubbed(&excerpt),
        }),
        Err(other) => Err(other),
    }
}

/// The direct half: every decoder the client has, on this body, at several `now`s.
fn check_direct(response: &Response<'_>) -> Verdict {
    if let Some(value) = &response.retry_after {
        for now in [
            DateTime::<Utc>::UNIX_EPOCH,
            DateTime::<Utc>::MIN_UTC,
            DateTime::<Utc>::MAX_UTC,
        ] {
            let _ = parse_retry_after(value, now);
        }
    }
    let error = expected_error(response, DateTime::<Utc>::UNIX_EPOCH);
    no_token("an error", &error.to_string())?;
    let _ = (error.is_transient(), error.retry_after(), error.status());
    if let Ok((run, _)) = decode_enveloped::<Run>(response.body, "a run") {
        fuzz::count("bodies decoded as a run");
        check_reencoding(&run)?;
    }
    if let Ok((runs, extra)) = decode_enveloped::<Vec<Run>>(response.body, "a list of runs") {
        for run in &runs {
            check_reencoding(run)?;
        }
        let _ = extra.and_then(|e| e.pagination);
    }
    let _ =
        decode_enveloped::<Job>(response.body, "a job").map(|(job, _)| serde_json::to_string(&job));
    let _ = decode_enveloped::<Vec<String>>(response.body, "a list of artifact paths");
    Ok(())
}

/// A run we decoded must encode to JSON that decodes again, and stay the same from then on.
fn check_reencoding(run: &Run) -> Verdict {
    let _ = (
        run.status.is_terminal(),
        run.status.humanized(),
        run.status.to_string(),
    );
    let once = serde_json::to_value(run).map_err(|e| format!("run does not re-encode: {e}"))?;
    let again: Run = serde_json::from_value(once.clone())
        .map_err(|e| format!("re-encoded run does not decode: {e}: {once}"))?;
    let twice: Run = serde_json::from_value(serde_json::to_value(&again).unwrap())
        .map_err(|e| format!("re-encoded run does not decode: {e}"))?;
    if twice != again {
        return Err(format!("re-encoding changes the run: {once}"));
    }
    Ok(())
}

/// The loopback half: a server answering every request with the current response bytes.
struct Loopback {
    runtime: tokio::runtime::Runtime,
    client: DbtCloudClient,
    clock: ManualClock,
    answer: Arc<Mutex<Vec<u8>>>,
}

impl Loopback {
    fn start() -> Loopback {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let answer = Arc::new(Mutex::new(Vec::new()));
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let port = listener.local_addr().unwrap().port();
        let served = answer.clone();
        runtime.spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                let bytes = served.lock().unwrap().clone();
                tokio::spawn(serve_one(socket, bytes));
            }
        });
        let clock = ManualClock::new("2026-01-01T00:00:00Z".parse().unwrap());
        let mut config = ClientConfig::new(
            format!("http://127.0.0.1:{port}").parse().unwrap(),
            AccountId(1),
            Secret::new(TOKEN),
        );
        config.max_retries = 0;
        config.request_timeout = Duration::from_secs(2);
        let budget = Arc::new(RequestBudget::new(1_000_000, Arc::new(clock.clone())));
        let client = DbtCloudClient::with_budget(config, budget).unwrap();
        Loopback {
            runtime,
            client,
            clock,
            answer,
        }
    }

    fn check(&self, bytes: &[u8], response: &Response<'_>) -> Verdict {
        *self.answer.lock().unwrap() = bytes.to_vec();
        // Past any cooldown a previous 429 set.
        self.clock.advance(chrono::Duration::hours(2));
        let now = self.clock.now();
        let comparable = response.well_formed;
        if comparable {
            fuzz::count("well-formed responses, client result compared with the decoding");
        }
        match bytes.len() % 3 {
            0 => {
                let got = self.runtime.block_on(self.client.get_run(RunId(1), &[]));
                if let Err(e) = &got {
                    no_token("an error", &e.to_string())?;
                    no_token("a debug error", &format!("{e:?}"))?;
                }
                if comparable && !is_transport(got.as_ref().err()) {
                    let expected = if (200..300).contains(&response.status) {
                        expected_decode::<Run>(response.body, "a run")
                    } else {
                        Err(expected_error(response, now))
                    };
                    if got != expected {
                        return Err(format!(
                            "get_run differs from the decoding: got {got:?}, expected {expected:?}"
                        ));
                    }
                }
            }
            1 => {
                let got = self.runtime.block_on(
                    self.client
                        .list_runs_page(&ListRuns::newest_of_job(JobId(2))),
                );
                if let Err(e) = &got {
                    no_token("an error", &e.to_string())?;
                }
                if comparable && !is_transport(got.as_ref().err()) {
                    let expected = if (200..300).contains(&response.status) {
                        expected_decode::<Vec<Run>>(response.body, "a list of runs").map(|runs| {
                            let extra = decode_enveloped::<Vec<Run>>(response.body, "x")
                                .ok()
                                .and_then(|(_, extra)| extra)
                                .and_then(|e| e.pagination);
                            let total = runs.len() as u64;
                            let pagination = extra.unwrap_or(Pagination {
                                count: total,
                                total_count: total,
                            });
                            (runs, pagination)
                        })
                    } else {
                        Err(expected_error(response, now))
                    };
                    if got != expected {
                        return Err(format!("list_runs_page differs from the decoding: got {got:?}, expected {expected:?}"));
                    }
                }
            }
            _ => {
                let request = TriggerRequest {
                    cause: "fuzz".into(),
                    ..TriggerRequest::default()
                };
                let got = self
                    .runtime
                    .block_on(self.client.trigger(JobId(3), &request));
                if let Err(e) = &got {
                    no_token("an error", &e.to_string())?;
                }
                if comparable && !is_transport(got.as_ref().err().map(TriggerError::api_error)) {
                    let expected = if (200..300).contains(&response.status) {
                        expected_decode::<Run>(response.body, "a run")
                            .map_err(TriggerError::Ambiguous)
                    } else {
                        Err(match expected_error(response, now) {
                            e @ ApiError::RateLimited { .. } => TriggerError::NotSent(e),
                            e @ ApiError::Server { .. } => TriggerError::Ambiguous(e),
                            e => TriggerError::Rejected(e),
                        })
                    };
                    if got != expected {
                        return Err(format!(
                            "trigger differs from the decoding: got {got:?}, expected {expected:?}"
                        ));
                    }
                }
            }
        }
        Ok(())
    }
}

fn is_transport(error: Option<&ApiError>) -> bool {
    matches!(error, Some(ApiError::Transport(_) | ApiError::Timeout))
}

/// Reads one request (head and `Content-Length` body), answers `bytes` with `Connection: close`
/// added after the status line, and closes.
async fn serve_one(mut socket: tokio::net::TcpStream, bytes: Vec<u8>) {
    let mut request = Vec::new();
    let mut buffer = [0u8; 4096];
    loop {
        let Ok(n) = socket.read(&mut buffer).await else {
            return;
        };
        if n == 0 {
            return;
        }
        request.extend_from_slice(&buffer[..n]);
        if let Some(end) = request.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&request[..end]).to_ascii_lowercase();
            let length = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok())
                .unwrap_or(0);
            if request.len() >= end + 4 + length {
                break;
            }
        }
    }
    let answer = match bytes.windows(2).position(|w| w == b"\r\n") {
        Some(i) if bytes.starts_with(b"HTTP/1.1 ") => {
            let mut out = bytes[..i + 2].to_vec();
            out.extend_from_slice(b"Connection: close\r\n");
            out.extend_from_slice(&bytes[i + 2..]);
            out
        }
        _ => bytes,
    };
    let _ = socket.write_all(&answer).await;
    let _ = socket.shutdown().await;
}

/// Bodies the project and the shared reference data hold, each as a 200 answer.
fn seeds() -> Vec<Vec<u8>> {
    let root = fuzz::crate_root();
    let mut bodies: Vec<Vec<u8>> = fuzz::read_files(&root.join("tests/data/client"))
        .into_iter()
        .map(|(_, b)| b)
        .collect();
    let shared = root.join("../shared/dbt-cloud-api/fixtures");
    if shared.is_dir() {
        let mut stack = vec![shared];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                let path = entry.path();
                if path.is_dir() {
                    stack.push(path);
                } else if path.extension().is_some_and(|e| e == "json") {
                    bodies.extend(std::fs::read(&path).ok().filter(|b| b.len() < 64 * 1024));
                }
            }
        }
    } else {
        println!(
            "fuzz client: ../shared/dbt-cloud-api/fixtures is absent; seeding from tests/data only"
        );
    }
    bodies
        .into_iter()
        .map(|body| {
            let mut out =
                format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", body.len()).into_bytes();
            out.extend_from_slice(&body);
            out
        })
        .collect()
}

#[test]
fn client_response_handling_never_panics_and_matches_the_decoding() {
    let loopback = Loopback::start();
    let check = |bytes: &[u8]| {
        let response = split_response(bytes);
        check_direct(&response)?;
        loopback.check(bytes, &response)
    };
    fuzz::run(
        Target {
            name: "client",
            seeds: seeds(),
            dictionary: DICTIONARY,
            check: &check,
        },
        http_response().boxed(),
    );
}
