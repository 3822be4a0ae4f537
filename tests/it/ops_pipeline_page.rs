//! The pipeline page (`/pipelines/{name}`) and the front page's links to it, served by the real
//! daemon (manual clock, emulator) and rendered in headless Chromium (Debian's `chromium`): the
//! DOM holds the steps, the runs and the dbt Cloud links of a known history, the Gantt shows a
//! retried attempt and the critical path, a timed-out step says so, and every link works behind a
//! reverse proxy under a path prefix (relative links, and `X-Forwarded-Prefix`).
//!
//! `BATON_SCREENSHOTS=DIR` also keeps the 1280 px screenshots there (the README's come from it).

use crate::support::chromium::{browse, chromium, dom};
use crate::support::daemon::{pipeline, Harness};
use crate::support::t;
use axum::response::IntoResponse;
use baton::engine::event::{Event, OperatorRequest, TransitionKind};
use baton::model::pipeline::{PipelineName, StepName};
use baton::ops::status_page::router;

fn scenario(href_base: &str) -> String {
    format!(
        r#"
account_id: 70403103922125
token: test-token
href_base: {href_base}
seed: 7
jobs:
  - {{ id: 101, name: seeds, duration: {{ min: 20s, max: 40s }} }}
  - {{ id: 102, name: staging, duration: {{ min: 60s, max: 150s }} }}
  - {{ id: 103, name: snapshots, duration: {{ min: 30s, max: 60s }} }}
  - {{ id: 104, name: marts, duration: {{ min: 90s, max: 200s }}, outcome: fail_first, fail_first: 1 }}
  - {{ id: 105, name: exposures, duration: {{ min: 20s, max: 50s }} }}
  - {{ id: 106, name: hangs, duration: 10h }}
"#
    )
}

const NIGHTLY: &str = r#"
name: nightly
description: "staging & marts <every night>"
schedule: { cron: "0 2 * * *", timezone: Europe/Amsterdam }
steps:
  seeds: { job_id: 101 }
  staging: { job_id: 102, depends_on: [seeds] }
  snapshots: { job_id: 103, depends_on: [seeds] }
  marts: { job_id: 104, depends_on: [staging, snapshots], retry: { attempts: 2, backoff: 1m } }
  exposures: { job_id: 105, depends_on: [marts] }
"#;

const STUCK: &str = r#"
name: stuck
steps:
  hangs: { job_id: 106, timeout: 2m }
"#;

/// The first of the nightly runs: `marts` failed once and was retried.
const FIRST: &str = "nightly@2026-01-01T01:00:00Z";
const RUNS: usize = 5;

/// A stand-in for dbt Cloud's web UI, where the runs' `href`s point.
async fn run_pages() -> String {
    let app = axum::Router::new()
        .fallback(|uri: axum::http::Uri| async move { format!("dbt Cloud page {}", uri.path()) });
    serve(app).await
}

async fn serve(app: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    base
}

/// A reverse proxy that serves `upstream` under `/prefix/` (as nginx's `location /prefix/ {
/// proxy_pass http://upstream/; }`), sending `X-Forwarded-Prefix` when `tell` is set.
async fn proxy(upstream: String, prefix: &'static str, tell: bool) -> String {
    let client = reqwest::Client::new();
    let app = axum::Router::new().fallback(move |uri: axum::http::Uri| {
        let (client, upstream) = (client.clone(), upstream.clone());
        async move {
            let path_and_query = uri.path_and_query().map_or("/", |p| p.as_str());
            let Some(rest) = path_and_query.strip_prefix(prefix) else {
                return (axum::http::StatusCode::NOT_FOUND, String::new()).into_response();
            };
            let mut request = client.get(format!("{upstream}{rest}"));
            if tell {
                request = request.header("X-Forwarded-Prefix", prefix);
            }
            let answer = request.send().await.unwrap();
            let status = axum::http::StatusCode::from_u16(answer.status().as_u16()).unwrap();
            let body = answer.text().await.unwrap();
            (status, [("content-type", "text/html; charset=utf-8")], body).into_response()
        }
    });
    serve(app).await
}

/// Five nightly runs by the schedule, a day apart (the first retries `marts`; the older ones are
/// archived by then), and `stuck`, whose step times out.
async fn history() -> (Harness, String, Vec<String>) {
    let ui = run_pages().await;
    let h = Harness::start(
        "2026-01-01T00:30:00Z",
        &scenario(&ui),
        vec![pipeline(NIGHTLY), pipeline(STUCK)],
    )
    .await;
    for day in 0..RUNS {
        // 02:00 in Amsterdam is 01:00 UTC: wake just before the tick, then let the run finish.
        let before = t("2026-01-01T00:55:00Z") + chrono::Duration::days(day as i64);
        h.clock.set(before.max(h.now()));
        h.run_for(1800, 5).await;
    }
    let mut transitions = h.daemon.transitions();
    h.daemon
        .send(Event::Operator(OperatorRequest::TriggerPipeline {
            pipeline: PipelineName("stuck".into()),
            logical_date: Some(t("2026-01-05T00:00:00Z").into()),
        }))
        .unwrap();
    h.run_for(400, 5).await;
    // What the logs and `baton demo` print when the step fails.
    let mut failed = Vec::new();
    while let Ok(t) = transitions.try_recv() {
        if t.what == TransitionKind::StepFailed {
            failed.push(t.detail.clone());
        }
    }
    let pages = serve(router(h.daemon.clone())).await;
    (h, pages, failed)
}

async fn href_of(h: &Harness, run: &str, step: &str) -> String {
    let run = h.pipeline_run(run).await;
    run.steps[&StepName(step.into())]
        .current()
        .unwrap()
        .href
        .clone()
        .unwrap()
}

/// The `href`s of a DOM, unescaped.
fn hrefs(dom: &str) -> Vec<String> {
    dom.split("href=\"")
        .skip(1)
        .map(|rest| rest[..rest.find('"').unwrap()].replace("&amp;", "&"))
        .collect()
}

/// Follows every link of `dom`, read at `page`: our pages answer with HTML, dbt Cloud's with its
/// stand-in.
async fn every_link_works(dom: &str, page: &str) {
    let base = url::Url::parse(page).unwrap();
    for href in hrefs(dom) {
        let target = base.join(&href).unwrap();
        let answer = reqwest::get(target.as_str()).await.unwrap();
        assert_eq!(answer.status(), 200, "{href} from {page} ({target})");
        let text = answer.text().await.unwrap();
        assert!(
            text.starts_with("dbt Cloud page /") || text.starts_with("<!DOCTYPE html>"),
            "{href}: {text}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pipeline_page_shows_the_history_in_chromium_behind_a_prefix() {
    let Some(browser) = chromium() else { return };
    let (h, pages, failed) = history().await;
    // The timed-out step says so in the transition the logs and the demo print.
    assert_eq!(
        failed,
        ["attempt 1: timed out after 2m; cancel confirmed by dbt Cloud"]
    );
    let behind = proxy(pages.clone(), "/baton", false).await;

    // The front page links to each pipeline's page and marks the failed one.
    let front = dom(browser, &format!("{behind}/baton/")).await;
    assert!(
        front.contains(r#"<a class="pipeline-link" href="pipelines/nightly">nightly</a>"#),
        "{front}"
    );
    assert!(front.contains(r#"data-pipeline="stuck" data-failed="true""#));
    assert!(front.contains(r#"<span class="mark failed">failed</span>"#));
    assert!(
        front.contains("timed out after 2m; cancel confirmed by dbt Cloud"),
        "{front}"
    );
    every_link_works(&front, &format!("{behind}/baton/")).await;

    let url = format!("{behind}/baton/pipelines/nightly");
    let page = dom(browser, &url).await;
    assert!(page.contains("<title>nightly · baton</title>"), "{page}");
    assert!(
        page.contains("staging &amp; marts &lt;every night&gt;"),
        "text stays text"
    );
    // The DAG with its edges.
    for (from, to) in [
        ("seeds", "staging"),
        ("seeds", "snapshots"),
        ("staging", "marts"),
        ("snapshots", "marts"),
        ("marts", "exposures"),
    ] {
        assert!(
            page.contains(&format!(
                r#"class="edge" data-from="{from}" data-to="{to}""#
            )),
            "{from} → {to}"
        );
    }
    // The grid: a column per run, a row per step, each cell linking to its dbt Cloud run.
    let runs: Vec<String> = (0..RUNS)
        .map(|d| format!("nightly@2026-01-0{}T01:00:00Z", d + 1))
        .collect();
    for run in &runs {
        assert!(
            page.contains(&format!(r#"<th class="run succeeded" data-run="{run}""#)),
            "{run}"
        );
        for step in ["seeds", "staging", "snapshots", "marts", "exposures"] {
            let href = href_of(&h, run, step).await;
            assert!(
                page.contains(&format!(r#"<td class="succeeded" data-run="{run}" data-state="succeeded"><a href="{href}""#)),
                "{run} {step} {href}"
            );
        }
    }
    // The newest run's Gantt by default, with its critical path.
    assert!(page.contains(&format!(
        r#"<p class="gantt-run" data-run="{}">"#,
        runs[RUNS - 1]
    )));
    assert!(page.contains(r#"data-step="exposures" data-critical="true""#));
    assert!(page.contains(r#"data-step="marts" data-critical="true""#));
    assert!(page.contains(r#"data-step="seeds" data-critical="true""#));
    assert!(page.contains("<svg class=\"trend-svg\""));
    every_link_works(&page, &url).await;

    // The first run's Gantt shows marts' failed attempt, its backoff and the retry.
    let first = format!("{url}?run={}", baton::ops::html::encode(FIRST));
    let gantt = dom(browser, &first).await;
    assert!(
        gantt.contains(&format!(r#"<p class="gantt-run" data-run="{FIRST}">"#)),
        "{gantt}"
    );
    assert!(gantt.contains(r#"class="span retried" data-kind="retried""#));
    assert!(gantt.contains(r#"class="span waiting_retry" data-kind="waiting_retry""#));
    assert!(gantt.contains(r#"class="span waiting_upstream" data-kind="waiting_upstream""#));
    assert!(gantt.contains(r#"<td class="succeeded" data-run="nightly@2026-01-01T01:00:00Z" data-state="succeeded"><a href=""#));

    // The Gantt alone, to link or print.
    let alone = dom(browser, &format!("{first}&view=gantt")).await;
    assert!(alone.contains(r#"class="span retried""#));
    assert!(!alone.contains("<table class=\"grid\""));
    every_link_works(&alone, &first).await;

    // Screenshots at 1280 px: the page, and the Gantt (its anchor).
    let shots = tempfile::tempdir().unwrap();
    for (name, target, height) in [
        ("pipeline-page.png", url.clone(), 1400),
        ("gantt.png", format!("{first}&view=gantt"), 560),
    ] {
        let path = shots.path().join(name);
        browse(
            browser,
            &target,
            &[
                format!("--screenshot={}", path.display()),
                format!("--window-size=1280,{height}"),
            ],
        )
        .await;
        let png = std::fs::read(&path).unwrap();
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "{name} is a PNG");
        let width = u32::from_be_bytes(png[16..20].try_into().unwrap());
        assert_eq!(width, 1280, "{name}");
        if let Ok(dir) = std::env::var("BATON_SCREENSHOTS") {
            std::fs::copy(&path, std::path::Path::new(&dir).join(name)).unwrap();
        }
    }
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn links_follow_x_forwarded_prefix() {
    let Some(browser) = chromium() else { return };
    let (h, pages, _) = history().await;
    let behind = proxy(pages, "/ops/baton", true).await;
    let front_url = format!("{behind}/ops/baton/");
    let front = dom(browser, &front_url).await;
    assert!(
        front.contains(r#"<a class="pipeline-link" href="/ops/baton/pipelines/nightly">"#),
        "{front}"
    );
    every_link_works(&front, &front_url).await;
    let page_url = format!("{behind}/ops/baton/pipelines/nightly");
    let page = dom(browser, &page_url).await;
    assert!(
        page.contains(r#"<a class="home" href="/ops/baton/">"#),
        "{page}"
    );
    every_link_works(&page, &page_url).await;
    h.shutdown().await;
}

#[tokio::test]
async fn the_trends_api_answers_the_chart_numbers() {
    let (h, _, _) = history().await;
    let state = baton::http::AppState::new(h.daemon.clone(), None, None);
    let api = serve(baton::http::router(state)).await;
    let trends: serde_json::Value = reqwest::get(format!("{api}/api/v1/pipelines/nightly/trends"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(trends["pipeline"], "nightly");
    assert_eq!(trends["runs"], RUNS);
    let steps = trends["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 5);
    for s in steps {
        let points = s["points"].as_array().unwrap();
        assert_eq!(points.len(), RUNS, "{s}");
        let mut secs: Vec<f64> = points
            .iter()
            .map(|p| p["seconds"].as_f64().unwrap())
            .collect();
        secs.sort_by(f64::total_cmp);
        assert_eq!(s["median_seconds"].as_f64().unwrap(), secs[(RUNS - 1) / 2]);
        assert_eq!(s["slowest"][0]["seconds"].as_f64().unwrap(), secs[RUNS - 1]);
    }
    let missing = reqwest::get(format!("{api}/api/v1/pipelines/nope/trends"))
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);

    // With a token configured, the route wants it like every other `/api/v1` route.
    let token = baton::secret::Secret::new("s3cret-token");
    let state = baton::http::AppState::new(h.daemon.clone(), Some(token), None);
    let api = serve(baton::http::router(state)).await;
    let url = format!("{api}/api/v1/pipelines/nightly/trends");
    let refused = reqwest::get(&url).await.unwrap();
    assert_eq!(refused.status(), 401);
    assert!(!refused.text().await.unwrap().contains("s3cret-token"));
    let answered = reqwest::Client::new()
        .get(&url)
        .bearer_auth("s3cret-token")
        .send()
        .await
        .unwrap();
    assert_eq!(answered.status(), 200);
    h.shutdown().await;
}
