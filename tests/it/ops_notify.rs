//! Notifications over real HTTP: the daemon and emulator on a manual clock run a pipeline whose
//! second step keeps failing; a JSON target (whose first answer is a 503) hears of the retry and
//! the failure, in that order, a Slack target of the failure only, each with the failed step, its
//! error and a link to the dbt Cloud run, and no secret.

#![allow(clippy::unwrap_used)]

use crate::support::daemon::{pipeline, Harness};
use crate::support::scenario::{scenario, BROKEN_JOB};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use baton::config::daemon::{NotificationEvent, NotificationFormat};
use baton::engine::event::{Event, OperatorRequest};
use baton::model::pipeline::PipelineName;
use baton::ops::notify::{DeliverySettings, Notifier, Target};
use baton::secret::Secret;
use serde_json::Value;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{watch, Notify};
use tokio_util::sync::CancellationToken;

fn scenario_yaml() -> String {
    scenario(&["{ id: 101, name: staging, duration: 1m }", BROKEN_JOB])
}

const PIPELINE: &str = r#"
name: alerting
steps:
  staging: { job_id: 101 }
  marts:
    job_id: 105
    depends_on: [staging]
    retry: { attempts: 2, backoff: 1m }
"#;

#[derive(Default)]
struct Inbox {
    /// (path, status answered, content type, body), in the order the requests arrived
    requests: Mutex<Vec<(String, u16, String, Value)>>,
    refuse_json_first: Mutex<bool>,
    /// The refused first JSON request is answered only once the test says so.
    answer_refusal: Notify,
}

async fn receive(
    State((inbox, count)): State<(Arc<Inbox>, watch::Sender<usize>)>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> StatusCode {
    let path = uri.path().to_string();
    let refuse = {
        let mut refuse = inbox.refuse_json_first.lock().unwrap();
        path == "/json" && std::mem::replace(&mut *refuse, false)
    };
    let status = if refuse {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    let content_type = headers
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let value = serde_json::from_slice(&body).unwrap();
    inbox
        .requests
        .lock()
        .unwrap()
        .push((path, status.as_u16(), content_type, value));
    count.send_modify(|n| *n += 1);
    if refuse {
        inbox.answer_refusal.notified().await;
    }
    status
}

#[tokio::test]
async fn failures_and_retries_reach_json_and_slack_targets_with_retries() {
    let inbox = Arc::new(Inbox {
        refuse_json_first: Mutex::new(true),
        ..Inbox::default()
    });
    let (count_tx, mut count_rx) = watch::channel(0usize);
    let app = axum::Router::new()
        .route("/json", post(receive))
        .route("/slack", post(receive))
        .with_state((inbox.clone(), count_tx));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let h = Harness::start(
        "2026-01-05T10:00:00Z",
        &scenario_yaml(),
        vec![pipeline(PIPELINE)],
    )
    .await;
    let targets = vec![
        Target {
            name: "generic".into(),
            url: Secret::new(format!("{base}/json")),
            format: NotificationFormat::Json,
            on: vec![NotificationEvent::Failure, NotificationEvent::Retry],
        },
        Target {
            name: "slack".into(),
            url: Secret::new(format!("{base}/slack")),
            format: NotificationFormat::Slack,
            on: vec![NotificationEvent::Failure],
        },
        Target {
            name: "success-only".into(),
            url: Secret::new(format!("{base}/never")),
            format: NotificationFormat::Json,
            on: vec![NotificationEvent::Success],
        },
    ];
    let settings = DeliverySettings {
        initial_backoff: Duration::from_millis(10),
        // The refused request is held open while the pipeline runs to its failure.
        timeout: Duration::from_secs(60),
        ..DeliverySettings::default()
    };
    let notifier = Notifier::new(targets, settings).unwrap();
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(notifier.run(h.daemon.clone(), shutdown.clone()));
    h.daemon.inspect(|_, _| ()).await.unwrap();

    h.daemon
        .send(Event::Operator(OperatorRequest::TriggerPipeline {
            pipeline: PipelineName("alerting".into()),
            logical_date: Some(crate::support::t("2026-01-05T00:00:00Z").into()),
        }))
        .unwrap();
    h.run_for(600, 10).await;
    let run = h.pipeline_run("alerting@2026-01-05T00:00:00Z").await;
    assert_eq!(run.state, baton::engine::state::PipelineRunState::Failed);

    // The failure has reached Slack while the JSON target still holds the retry's first request
    // open: the JSON failure is queued behind it, not sent beside it.
    tokio::time::timeout(Duration::from_secs(20), count_rx.wait_for(|n| *n >= 2))
        .await
        .expect("the held retry and the Slack failure")
        .unwrap();
    let arrived: Vec<(String, Value)> = inbox
        .requests
        .lock()
        .unwrap()
        .iter()
        .map(|r| (r.0.clone(), r.3["event"].clone()))
        .collect();
    assert_eq!(
        arrived,
        [
            ("/json".to_string(), Value::from("retry")),
            ("/slack".to_string(), Value::Null),
        ],
        "only the held retry may have reached the JSON target"
    );
    inbox.answer_refusal.notify_one();

    // JSON: the retry (refused once with 503, then delivered) and the failure; Slack: the failure.
    tokio::time::timeout(Duration::from_secs(20), count_rx.wait_for(|n| *n >= 4))
        .await
        .expect("four deliveries")
        .unwrap();
    let requests = inbox.requests.lock().unwrap().clone();
    let json: Vec<_> = requests.iter().filter(|r| r.0 == "/json").collect();
    let slack: Vec<_> = requests.iter().filter(|r| r.0 == "/slack").collect();
    assert_eq!(json.len(), 3, "{requests:#?}");
    assert_eq!(slack.len(), 1, "{requests:#?}");
    assert!(requests.iter().all(|r| r.0 != "/never"));
    assert_eq!(json[0].1, 503);
    assert_eq!(
        json[0].3, json[1].3,
        "the refused delivery is sent again as it was"
    );
    assert!(requests.iter().all(|r| r.2 == "application/json"));

    let retry = &json[1].3;
    assert_eq!(retry["event"], "retry");
    assert_eq!(retry["steps"][0]["step"], "marts");
    let failure = &json[2].3;
    assert_eq!(failure["event"], "failure");
    assert_eq!(failure["pipeline"], "alerting");
    assert_eq!(failure["pipeline_run"], "alerting@2026-01-05T00:00:00Z");
    assert_eq!(failure["logical_date"], "2026-01-05T00:00:00Z");
    let steps = failure["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 1, "only the failed step: {failure}");
    assert_eq!(steps[0]["step"], "marts");
    assert_eq!(steps[0]["state"], "failed");
    assert_eq!(steps[0]["attempts"], 2);
    // The emulator, like dbt Cloud, gives errored runs no status message: the outcome stands in.
    assert_eq!(
        steps[0]["error"],
        "attempt 2 ended error (dbt Cloud gave no message; see the run's logs)"
    );
    let dbt_run = steps[0]["dbt_run_id"].as_i64().unwrap();
    assert!(steps[0]["href"]
        .as_str()
        .unwrap()
        .contains(&dbt_run.to_string()));

    let slack = &slack[0].3;
    assert!(slack["text"].as_str().unwrap().contains("alerting failed"));
    let blocks = slack["blocks"].as_array().unwrap();
    assert!(blocks[1]["text"]["text"]
        .as_str()
        .unwrap()
        .contains(&format!("|dbt Cloud run {dbt_run}>")));

    for r in &requests {
        let text = r.3.to_string();
        assert!(
            !text.contains("test-token"),
            "a secret in a notification: {text}"
        );
        assert!(
            !text.contains(&base),
            "a target URL in a notification: {text}"
        );
    }
    shutdown.cancel();
    task.await.unwrap();
    h.shutdown().await;
}

#[tokio::test]
async fn ticks_missed_during_downtime_are_notified() {
    let inbox = Arc::new(Inbox::default());
    let (count_tx, mut count_rx) = watch::channel(0usize);
    let app = axum::Router::new()
        .route("/json", post(receive))
        .with_state((inbox.clone(), count_tx));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let scheduled = pipeline(
        "name: hourly\nschedule: { cron: \"0 * * * *\", catchup: none }\nsteps:\n  staging: { job_id: 101 }\n",
    );
    let mut h = Harness::start("2026-01-05T09:58:00Z", &scenario_yaml(), vec![scheduled]).await;
    h.run_for(60, 10).await;
    h.stop().await;
    // Down over two ticks; the next daemon finds them missed.
    h.clock.set(crate::support::t("2026-01-05T11:30:00Z"));
    h.restart(None).await;
    let target = Target {
        name: "missed".into(),
        url: Secret::new(format!("{base}/json")),
        format: NotificationFormat::Json,
        on: vec![NotificationEvent::Missed],
    };
    let notifier = Notifier::new(vec![target], DeliverySettings::default()).unwrap();
    let shutdown = CancellationToken::new();
    // The test runtime has one thread: the new loop cannot plan before `run` subscribes.
    let task = tokio::spawn(notifier.run(h.daemon.clone(), shutdown.clone()));
    h.settle().await;
    tokio::time::timeout(Duration::from_secs(20), count_rx.wait_for(|n| *n >= 1))
        .await
        .expect("a missed-ticks notification")
        .unwrap();
    let requests = inbox.requests.lock().unwrap().clone();
    assert_eq!(requests.len(), 1, "{requests:#?}");
    let body = &requests[0].3;
    assert_eq!(body["event"], "missed");
    assert_eq!(body["pipeline"], "hourly");
    assert!(
        body["summary"].as_str().unwrap().contains("missed"),
        "{body}"
    );
    shutdown.cancel();
    task.await.unwrap();
    h.shutdown().await;
}
