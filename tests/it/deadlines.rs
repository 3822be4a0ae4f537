//! Deadlines end to end on a manual clock: the real daemon loop and the in-process emulator run two
//! pipelines with a 30-minute deadline, one whose step takes an hour and one whose step takes a
//! minute. The slow one produces exactly one `late` notification (JSON and Slack), the late
//! metrics, a late mark that survives a restart without a second notification, and a success
//! notification that says how late it finished; the quick one produces none.

use crate::support::daemon::{pipeline, Harness};
use crate::support::t;
use axum::extract::State;
use axum::routing::post;
use baton::config::daemon::{NotificationEvent, NotificationFormat};
use baton::engine::event::{Event, OperatorRequest};
use baton::engine::state::PipelineRunState;
use baton::model::pipeline::PipelineName;
use baton::ops::metrics::Metrics;
use baton::ops::notify::{DeliverySettings, Notifier, Target};
use baton::secret::Secret;
use serde_json::Value;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

const SCENARIO: &str = r#"
account_id: 70403103922125
token: test-token
jobs:
  - { id: 101, name: slow, duration: 1h }
  - { id: 102, name: quick, duration: 1m }
"#;

const SLOW: &str = r#"
name: slow
deadline: 30m
steps:
  build: { job_id: 101 }
"#;

const QUICK: &str = r#"
name: quick
deadline: 30m
steps:
  build: { job_id: 102 }
"#;

type Inbox = Arc<Mutex<Vec<(String, Value)>>>;

async fn receive(
    State((inbox, count)): State<(Inbox, watch::Sender<usize>)>,
    uri: axum::http::Uri,
    body: axum::body::Bytes,
) -> axum::http::StatusCode {
    let value = serde_json::from_slice(&body).unwrap();
    inbox.lock().unwrap().push((uri.path().to_string(), value));
    count.send_modify(|n| *n += 1);
    axum::http::StatusCode::OK
}

fn value(text: &str, series: &str) -> f64 {
    let line = text
        .lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .unwrap_or_else(|| panic!("no series {series} in\n{text}"));
    line[series.len() + 1..].parse().unwrap()
}

/// Starts a notifier posting `late` to /json and /slack and `success` to /success.
fn notifier(base: &str) -> Notifier {
    let target = |path: &str, format, on| Target {
        name: path.into(),
        url: Secret::new(format!("{base}/{path}")),
        format,
        on,
    };
    let targets = vec![
        target(
            "json",
            NotificationFormat::Json,
            vec![NotificationEvent::Late],
        ),
        target(
            "slack",
            NotificationFormat::Slack,
            vec![NotificationEvent::Late],
        ),
        target(
            "success",
            NotificationFormat::Json,
            vec![NotificationEvent::Success],
        ),
    ];
    let settings = DeliverySettings {
        initial_backoff: Duration::from_millis(10),
        ..DeliverySettings::default()
    };
    Notifier::new(targets, settings).unwrap()
}

#[tokio::test]
async fn a_run_past_its_deadline_is_announced_once_and_one_in_time_never() {
    let inbox: Inbox = Arc::default();
    let (count_tx, mut count_rx) = watch::channel(0usize);
    let app = axum::Router::new()
        .route("/{target}", post(receive))
        .with_state((inbox.clone(), count_tx));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let mut h = Harness::start(
        "2026-01-05T10:00:00Z",
        SCENARIO,
        vec![pipeline(SLOW), pipeline(QUICK)],
    )
    .await;
    let shutdown = CancellationToken::new();
    let notify_task = tokio::spawn(notifier(&base).run(h.daemon.clone(), shutdown.clone()));
    let metrics = Metrics::new();
    let metrics_task = tokio::spawn(metrics.clone().run(h.daemon.clone(), shutdown.clone()));
    let mut seen = h.daemon.transitions();
    h.daemon.inspect(|_, _| ()).await.unwrap();

    for name in ["slow", "quick"] {
        h.daemon
            .send(Event::Operator(OperatorRequest::TriggerPipeline {
                pipeline: PipelineName(name.into()),
                logical_date: Some(t("2026-01-05T10:00:00Z").into()),
            }))
            .unwrap();
    }
    // Past the deadline with the slow run still going: one jump, so only the engine's own
    // wake-up at the deadline can notice it.
    h.run_until(t("2026-01-05T10:05:00Z"), 30).await;
    assert_eq!(
        h.pipeline_run("quick@2026-01-05T10:00:00Z").await.state,
        PipelineRunState::Succeeded
    );
    h.clock.set(t("2026-01-05T10:40:00Z"));
    h.settle().await;
    let slow = h.pipeline_run("slow@2026-01-05T10:00:00Z").await;
    assert_eq!(slow.state, PipelineRunState::Running);
    assert!(slow.late_since.is_some());
    tokio::time::timeout(Duration::from_secs(20), count_rx.wait_for(|n| *n >= 3))
        .await
        .expect("late notifications and the quick success")
        .unwrap();

    // The gauge counts the late run while it runs.
    let mut emitted = 0u64;
    while seen.try_recv().is_ok() {
        emitted += 1;
    }
    metrics
        .processed()
        .wait_for(|n| *n >= emitted)
        .await
        .unwrap();
    let text = metrics.render();
    assert_eq!(
        value(&text, "baton_pipeline_runs_late_total{pipeline=\"slow\"}"),
        1.0
    );
    assert_eq!(
        value(&text, "baton_pipeline_runs_late{pipeline=\"slow\"}"),
        1.0
    );
    assert_eq!(
        value(&text, "baton_pipeline_runs_late{pipeline=\"quick\"}"),
        0.0
    );
    assert!(!text.contains("baton_pipeline_runs_late_total{pipeline=\"quick\"}"));

    // `why` says what the late run still waits for.
    let why = h
        .daemon
        .inspect(|engine, now| engine.why(&PipelineName("slow".into()), None, now))
        .await
        .unwrap()
        .unwrap();
    assert!(
        why.sentence.contains("is late") && why.sentence.contains("still waiting for build"),
        "{}",
        why.sentence
    );

    // A restart does not announce the late run again.
    shutdown.cancel();
    notify_task.await.unwrap();
    metrics_task.await.unwrap();
    h.restart(None).await;
    let shutdown = CancellationToken::new();
    let notify_task = tokio::spawn(notifier(&base).run(h.daemon.clone(), shutdown.clone()));
    h.daemon.inspect(|_, _| ()).await.unwrap();
    h.run_until(t("2026-01-05T11:30:00Z"), 60).await;
    let slow = h.pipeline_run("slow@2026-01-05T10:00:00Z").await;
    assert_eq!(slow.state, PipelineRunState::Succeeded);
    tokio::time::timeout(Duration::from_secs(20), count_rx.wait_for(|n| *n >= 4))
        .await
        .expect("the slow success")
        .unwrap();
    shutdown.cancel();
    notify_task.await.unwrap();

    let requests = inbox.lock().unwrap().clone();
    let late: Vec<&(String, Value)> = requests
        .iter()
        .filter(|(path, _)| path != "/success")
        .collect();
    assert_eq!(
        late.len(),
        2,
        "one late notification per target: {requests:#?}"
    );
    let json = &late.iter().find(|(p, _)| p == "/json").unwrap().1;
    assert_eq!(json["event"], "late");
    assert_eq!(json["pipeline"], "slow");
    assert_eq!(json["pipeline_run"], "slow@2026-01-05T10:00:00Z");
    assert_eq!(json["steps"][0]["step"], "build");
    assert_eq!(json["steps"][0]["state"], "running");
    let summary = json["summary"].as_str().unwrap();
    assert!(
        summary.contains("slow is late") && summary.contains("deadline 2026-01-05 10:30:00 UTC"),
        "{summary}"
    );
    let slack = &late.iter().find(|(p, _)| p == "/slack").unwrap().1;
    assert!(slack["text"].as_str().unwrap().contains("slow is late"));
    assert!(slack["blocks"].to_string().contains("event `late`"));

    let successes: Vec<&Value> = requests
        .iter()
        .filter(|(path, _)| path == "/success")
        .map(|(_, v)| v)
        .collect();
    assert_eq!(successes.len(), 2, "{requests:#?}");
    let quick = successes.iter().find(|v| v["pipeline"] == "quick").unwrap();
    assert!(!quick["summary"].as_str().unwrap().contains("deadline"));
    let slow = successes.iter().find(|v| v["pipeline"] == "slow").unwrap();
    let summary = slow["summary"].as_str().unwrap();
    assert!(summary.contains("after its deadline"), "{summary}");
    h.shutdown().await;
}
