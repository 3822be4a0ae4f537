//! The dbt Cloud webhook receiver over real HTTP: signatures checked, replays ignored, and — with
//! the emulator delivering to it — a downstream step triggered as soon as its upstream finishes,
//! long before the next poll tick.

#![allow(clippy::unwrap_used)]

use crate::support::daemon::{pipeline, settings, Harness};
use crate::support::scenario::scenario_with;
use baton::emulator::webhooks::signature;
use baton::engine::event::{Event, OperatorRequest, TransitionKind};
use baton::model::pipeline::PipelineName;
use baton::ops::webhook::{router_with_stats, WebhookStats, PATH};
use baton::secret::Secret;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;

const SECRET: &str = "whsec-ops-test";

fn scenario(url: &str) -> String {
    scenario_with(
        &format!(
            "webhooks:\n  - name: baton\n    url: {url}\n    secret: {SECRET}\n    retry_backoff: 10ms"
        ),
        &[
            "{ id: 100, name: upstream, duration: 5s }",
            "{ id: 200, name: downstream, duration: 5s }",
        ],
    )
}

const PIPELINE: &str = r#"
name: hooked
steps:
  up: { job_id: 100 }
  down: { job_id: 200, depends_on: [up] }
"#;

/// A daemon polling once an hour, the emulator delivering webhooks to the receiver.
async fn start() -> (Harness, String, Arc<Mutex<WebhookStats>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let mut s = settings();
    s.engine.poll_interval = Duration::from_secs(3600);
    let h = Harness::start_with(
        "2026-01-05T10:00:00Z",
        &scenario(&format!("{base}{PATH}")),
        vec![pipeline(PIPELINE)],
        s,
    )
    .await;
    let (app, stats) = router_with_stats(Secret::new(SECRET), h.daemon.clone());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (h, base, stats)
}

fn stats(s: &Arc<Mutex<WebhookStats>>) -> WebhookStats {
    *s.lock().unwrap()
}

#[tokio::test]
async fn good_signatures_are_accepted_once_bad_and_missing_ones_refused() {
    let (h, base, counters) = start().await;
    let url = format!("{base}{PATH}");
    let body = r#"{"accountId":70403103922125,"eventId":"wev_one","timestamp":"2026-01-05T10:00:00.000000000Z","eventType":"job.run.completed","webhookName":"baton","data":{"jobId":"100","runId":"70403110000001","runStatus":"Success","runStatusCode":10}}"#;
    let http = reqwest::Client::new();
    let post = |auth: Option<String>, body: &'static str| {
        let mut req = http.post(&url).body(body);
        if let Some(auth) = auth {
            req = req.header("Authorization", auth);
        }
        async move { req.send().await.unwrap() }
    };
    let good = signature(SECRET, body.as_bytes());

    let first = post(Some(good.clone()), body).await;
    assert_eq!(first.status(), 200);
    assert_eq!(first.text().await.unwrap(), r#"{"status":"accepted"}"#);
    let replay = post(Some(good.clone()), body).await;
    assert_eq!(replay.status(), 200);
    assert_eq!(replay.text().await.unwrap(), r#"{"status":"duplicate"}"#);

    assert_eq!(post(None, body).await.status(), 401);
    assert_eq!(
        post(Some(signature("wrong", body.as_bytes())), body)
            .await
            .status(),
        401
    );
    assert_eq!(post(Some("not hex".into()), body).await.status(), 401);
    let tampered = r#"{"accountId":70403103922125,"eventId":"wev_one","timestamp":"2026-01-05T10:00:00.000000000Z","eventType":"job.run.completed","webhookName":"baton","data":{"jobId":"100","runId":"70403110000002","runStatus":"Success","runStatusCode":10}}"#;
    assert_eq!(post(Some(good.clone()), tampered).await.status(), 401);
    let not_json = "{";
    assert_eq!(
        post(Some(signature(SECRET, not_json.as_bytes())), not_json)
            .await
            .status(),
        400
    );
    let s = stats(&counters);
    assert_eq!(
        (s.accepted, s.duplicates, s.bad_signature, s.malformed),
        (1, 1, 4, 1)
    );
    h.shutdown().await;
}

#[tokio::test]
async fn a_webhook_starts_the_downstream_step_without_waiting_for_a_poll() {
    let (h, _base, counters) = start().await;
    let mut transitions = h.daemon.transitions();
    h.daemon
        .send(Event::Operator(OperatorRequest::TriggerPipeline {
            pipeline: PipelineName("hooked".into()),
            logical_date: None,
        }))
        .unwrap();
    h.settle().await;
    let started = h.now();
    assert_eq!(h.runs_of(100).len(), 1, "the upstream step is triggered");
    assert!(h.runs_of(200).is_empty());

    // The upstream run ends 7 s later (1 s queued, 1 s starting, 5 s running); the next poll is
    // an hour away. Only the webhook can tell the daemon.
    let real = std::time::Instant::now();
    h.clock.advance(chrono::Duration::seconds(10));
    let waited = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            let t = transitions.recv().await.unwrap();
            if t.what == TransitionKind::StepTriggered && t.step.as_deref() == Some("down") {
                return t;
            }
        }
    })
    .await
    .expect("the downstream step is triggered after the webhook, with no poll tick due");
    // Reported, not asserted: wall-clock time depends on the machine.
    println!(
        "upstream finished -> downstream accepted by dbt Cloud: {:?} of real time (webhook delivery, poll, trigger)",
        real.elapsed()
    );
    assert_eq!(waited.at, started + chrono::Duration::seconds(10));
    assert_eq!(h.now(), started + chrono::Duration::seconds(10));
    let down = h.runs_of(200);
    assert_eq!(down.len(), 1);
    assert_eq!(down[0].created_at, started + chrono::Duration::seconds(10));
    let s = stats(&counters);
    assert!(s.accepted >= 1, "{s:?}");
    assert_eq!(s.bad_signature, 0);
    h.shutdown().await;
}
