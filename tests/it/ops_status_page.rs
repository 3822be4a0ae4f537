//! The status page served by the real daemon (manual clock, emulator): it shows each pipeline's DAG
//! with the state of its latest run, the runs in flight with links to dbt Cloud, the failures and
//! the next fire times, matching the engine's state; and it renders in headless Chromium (Debian's
//! `chromium`), whose DOM is checked and whose links are followed.

#![allow(clippy::unwrap_used)]

use crate::support::chromium::{chromium, dom};
use crate::support::daemon::{pipeline, Harness};
use crate::support::scenario::{scenario_with, BROKEN_JOB, HANGS_JOB};
use crate::support::t;
use baton::engine::event::{Event, OperatorRequest};
use baton::model::pipeline::PipelineName;
use baton::ops::status_page::router;

fn scenario(href_base: &str) -> String {
    scenario_with(
        &format!("href_base: {href_base}"),
        &[
            "{ id: 101, name: staging, duration: 1m }",
            BROKEN_JOB,
            HANGS_JOB,
        ],
    )
}

const BROKEN: &str = r#"
name: broken_chain
description: "staging & marts <nightly>"
steps:
  staging: { job_id: 101 }
  marts: { job_id: 105, depends_on: [staging] }
  exposures: { job_id: 101, depends_on: [marts] }
"#;

const LONG: &str = r#"
name: long_haul
schedule: { cron: "30 2 * * *", timezone: Europe/Amsterdam }
steps:
  forever: { job_id: 106 }
"#;

/// A stand-in for dbt Cloud's web UI, where the runs' `href`s point.
async fn run_pages() -> String {
    let app = axum::Router::new()
        .fallback(|uri: axum::http::Uri| async move { format!("dbt Cloud page {}", uri.path()) });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    base
}

/// The daemon after 10 minutes: `broken_chain` failed at `marts`, `long_haul` still running.
async fn workload() -> (Harness, String) {
    let ui = run_pages().await;
    let h = Harness::start(
        "2026-01-05T10:00:00Z",
        &scenario(&ui),
        vec![pipeline(BROKEN), pipeline(LONG)],
    )
    .await;
    for name in ["broken_chain", "long_haul"] {
        h.daemon
            .send(Event::Operator(OperatorRequest::TriggerPipeline {
                pipeline: PipelineName(name.into()),
                logical_date: Some(t("2026-01-05T00:00:00Z").into()),
            }))
            .unwrap();
    }
    h.run_for(600, 10).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    let app = router(h.daemon.clone());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (h, url)
}

/// The href the engine holds for a step's current attempt.
async fn href_of(h: &Harness, run: &str, step: &str) -> String {
    let run = h.pipeline_run(run).await;
    run.steps[&baton::model::pipeline::StepName(step.into())]
        .current()
        .unwrap()
        .href
        .clone()
        .unwrap()
}

#[tokio::test]
async fn the_page_shows_what_the_engine_holds() {
    let (h, url) = workload().await;
    let answer = reqwest::get(&url).await.unwrap();
    assert_eq!(answer.status(), 200);
    assert!(answer.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    let html = answer.text().await.unwrap();

    assert!(
        html.contains("staging &amp; marts &lt;nightly&gt;"),
        "{html}"
    );
    assert!(html.contains(r#"data-step="staging" data-state="succeeded""#));
    assert!(html.contains(r#"data-step="marts" data-state="failed""#));
    assert!(html.contains(r#"data-step="exposures" data-state="upstream_failed""#));
    assert!(html.contains(r#"data-step="forever" data-state="running""#));
    assert!(html.contains("Latest run <code>broken_chain@2026-01-05T00:00:00Z</code>: <span class=\"failed\">failed</span>"));
    // The next tick of 02:30 Amsterdam after 10:10 UTC on 5 January is 01:30 UTC on the 6th.
    assert!(
        html.contains(r#"<time datetime="2026-01-06T01:30:00Z">"#),
        "{html}"
    );
    assert!(html.contains("2026-01-06 02:30 CET"));
    // In flight: the long run, linked to its dbt Cloud page.
    let forever = href_of(&h, "long_haul@2026-01-05T00:00:00Z", "forever").await;
    assert!(html.contains("Runs in flight (1)"));
    assert!(html.contains(&format!("<a href=\"{forever}\"")), "{html}");
    // Failures: the failed run and its failed step, linked.
    let marts = href_of(&h, "broken_chain@2026-01-05T00:00:00Z", "marts").await;
    assert!(html.contains("Recent failures (1)"));
    assert!(html.contains(&format!("<a href=\"{marts}\" rel=\"noreferrer\">marts</a>")));
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_renders_in_headless_chromium_and_its_links_work() {
    let Some(browser) = chromium() else {
        return;
    };
    let (h, url) = workload().await;
    let dom = dom(browser, &url).await;
    // The browser parsed what we sent: the title, the sections and the DAG nodes.
    assert!(dom.contains("<title>baton status</title>"), "{dom}");
    assert!(dom.contains(r#"id="pipeline-broken_chain""#));
    assert!(dom.contains(r#"data-step="marts" data-state="failed""#));
    assert!(dom.contains(r#"data-step="forever" data-state="running""#));
    assert!(
        dom.contains("staging &amp; marts &lt;nightly&gt;"),
        "text stays text"
    );

    // Every link the browser sees leads to a page that answers, for the runs the engine holds.
    let hrefs: Vec<String> = dom
        .split("href=\"")
        .skip(1)
        .map(|rest| rest[..rest.find('"').unwrap()].replace("&amp;", "&"))
        .collect();
    let forever = href_of(&h, "long_haul@2026-01-05T00:00:00Z", "forever").await;
    let marts = href_of(&h, "broken_chain@2026-01-05T00:00:00Z", "marts").await;
    assert!(
        hrefs.contains(&forever) && hrefs.contains(&marts),
        "{hrefs:?}"
    );
    // Relative links lead to the pipelines' own pages; absolute ones to dbt Cloud's.
    let page_url = url::Url::parse(&url).unwrap();
    for href in &hrefs {
        let target = page_url.join(href).unwrap();
        let page = reqwest::get(target.as_str()).await.unwrap();
        assert_eq!(page.status(), 200, "{href}");
        let text = page.text().await.unwrap();
        if href.starts_with("http") {
            assert!(text.starts_with("dbt Cloud page /"));
        } else {
            assert!(text.contains("<h1 data-pipeline="), "{href}: {text}");
        }
    }
    h.shutdown().await;
}
