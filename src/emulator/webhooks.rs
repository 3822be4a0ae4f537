//! Webhook deliveries: each subscription gets `job.run.started`, `job.run.completed` and
//! `job.run.errored` with dbt Cloud's body and the lowercase hex HMAC-SHA256 of the raw body in
//! `Authorization`, retried (with a doubling real-time backoff) while the receiver fails.

use super::scenario::WebhookSpec;
use super::state::{LifecycleEvent, LifecycleKind, RunState, World};
use crate::dbt_cloud::wire::{WebhookEvent, WebhookRunData};
use crate::ids::{JobId, RunId};
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sha2::Sha256;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// dbt Cloud gives a receiver ten seconds to answer.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(10);

/// What happened to one delivery, for tests and the control API.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DeliveryRecord {
    pub webhook: String,
    pub event_type: String,
    pub event_id: String,
    pub run_id: RunId,
    pub job_id: JobId,
    pub attempts: u32,
    pub delivered: bool,
    /// The HTTP status of the last attempt, `None` when it got no answer.
    pub last_status: Option<u16>,
}

#[derive(Debug)]
struct Delivery {
    event_type: String,
    event_id: String,
    run_id: RunId,
    job_id: JobId,
    body: String,
}

/// The value of the `Authorization` header for `body`.
pub fn signature(secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes())
        .expect("HMAC-SHA256 accepts keys of any length");
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

/// Fans lifecycle events out to one queue per subscription.
#[derive(Debug)]
pub struct Dispatcher {
    subscriptions: Vec<(WebhookSpec, mpsc::UnboundedSender<Delivery>)>,
    pending: watch::Sender<usize>,
    records: Arc<Mutex<Vec<DeliveryRecord>>>,
    ids: Mutex<StdRng>,
}

impl Dispatcher {
    pub fn start(
        specs: &[WebhookSpec],
        seed: u64,
        tracker: &TaskTracker,
        shutdown: &CancellationToken,
    ) -> Self {
        let (pending, _) = watch::channel(0usize);
        let records = Arc::new(Mutex::new(Vec::new()));
        let client = reqwest::Client::builder()
            .timeout(DELIVERY_TIMEOUT)
            .build()
            .unwrap_or_default();
        let subscriptions = specs
            .iter()
            .map(|spec| {
                let (tx, rx) = mpsc::unbounded_channel();
                tracker.spawn(deliver_all(
                    spec.clone(),
                    rx,
                    client.clone(),
                    pending.clone(),
                    records.clone(),
                    shutdown.clone(),
                ));
                (spec.clone(), tx)
            })
            .collect();
        Self {
            subscriptions,
            pending,
            records,
            ids: Mutex::new(StdRng::seed_from_u64(seed ^ 0x05ee_d0fe_7e47)),
        }
    }

    /// Queues `event` for every subscription that wants it.
    pub fn enqueue(&self, world: &World, event: LifecycleEvent) {
        let Some(run) = world.runs.get(&event.run_id) else {
            return;
        };
        let event_type = match event.kind {
            LifecycleKind::Started => "job.run.started",
            LifecycleKind::Completed => "job.run.completed",
            LifecycleKind::Errored => "job.run.errored",
        };
        for (spec, tx) in &self.subscriptions {
            if !spec.events.iter().any(|e| e == event_type)
                || !(spec.job_ids.is_empty() || spec.job_ids.contains(&run.job_id))
            {
                continue;
            }
            let event_id = self.event_id();
            let body = body(world, run, spec, event_type, &event_id, event.at);
            self.pending.send_modify(|n| *n += 1);
            let delivery = Delivery {
                event_type: event_type.into(),
                event_id,
                run_id: run.id,
                job_id: run.job_id,
                body,
            };
            if tx.send(delivery).is_err() {
                self.pending.send_modify(|n| *n = n.saturating_sub(1));
            }
        }
    }

    fn event_id(&self) -> String {
        const ALPHABET: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
        let mut rng = self.ids.lock().unwrap_or_else(|p| p.into_inner());
        let tail: String = (0..27)
            .map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())] as char)
            .collect();
        format!("wev_{tail}")
    }

    pub fn records(&self) -> Vec<DeliveryRecord> {
        self.records
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Waits until every delivery queued so far has been delivered or given up.
    pub async fn wait_until_idle(&self) {
        let mut rx = self.pending.subscribe();
        let _ = rx.wait_for(|n| *n == 0).await;
    }
}

fn rfc3339(t: DateTime<Utc>, digits: usize) -> String {
    match digits {
        9 => t.format("%Y-%m-%dT%H:%M:%S%.9fZ").to_string(),
        _ => t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string(),
    }
}

fn body(
    world: &World,
    run: &RunState,
    spec: &WebhookSpec,
    event_type: &str,
    event_id: &str,
    at: DateTime<Utc>,
) -> String {
    let job = world.job(run.job_id);
    let (run_status, finished, errored) = match event_type {
        "job.run.started" => ("Running", None, None),
        "job.run.errored" => ("Errored", None, run.finished_at),
        _ => (
            match run.status {
                crate::dbt_cloud::wire::RunStatus::Success => "Success",
                crate::dbt_cloud::wire::RunStatus::Error => "Errored",
                _ => "Cancelled",
            },
            run.finished_at,
            None,
        ),
    };
    let code = if event_type == "job.run.started" {
        3
    } else {
        run.status.code()
    };
    let event = WebhookEvent {
        account_id: world.scenario.account_id.0,
        event_id: event_id.into(),
        timestamp: rfc3339(at, 9),
        event_type: event_type.into(),
        webhook_name: Some(spec.name.clone()),
        data: WebhookRunData {
            job_id: run.job_id.to_string(),
            job_name: job.map(|j| j.name.clone()),
            run_id: run.id.to_string(),
            environment_id: job.map(|j| super::render::environment_id(world, j).to_string()),
            environment_name: job.map(|j| j.environment_name.clone()),
            dbt_version: Some(world.scenario.dbt_version.clone()),
            project_name: job.map(|j| j.project_name.clone()),
            project_id: job.map(|j| super::render::project_id(world, j).to_string()),
            run_reason: Some(run.request.cause.clone()),
            run_started_at: run.started_at.map(|t| rfc3339(t, 6)),
            run_finished_at: finished.map(|t| rfc3339(t, 6)),
            run_errored_at: errored.map(|t| rfc3339(t, 6)),
            run_status: Some(run_status.into()),
            run_status_code: Some(code),
            run_status_message: Some(
                run.status_message
                    .clone()
                    .filter(|_| event_type != "job.run.started")
                    .unwrap_or_else(|| "None".into()),
            ),
        },
    };
    serde_json::to_string(&event).unwrap_or_default()
}

async fn deliver_all(
    spec: WebhookSpec,
    mut rx: mpsc::UnboundedReceiver<Delivery>,
    client: reqwest::Client,
    pending: watch::Sender<usize>,
    records: Arc<Mutex<Vec<DeliveryRecord>>>,
    shutdown: CancellationToken,
) {
    loop {
        let delivery = tokio::select! {
            _ = shutdown.cancelled() => return,
            next = rx.recv() => match next { Some(d) => d, None => return },
        };
        let record = deliver_one(&spec, &delivery, &client, &shutdown).await;
        records
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(record);
        pending.send_modify(|n| *n = n.saturating_sub(1));
    }
}

async fn deliver_one(
    spec: &WebhookSpec,
    delivery: &Delivery,
    client: &reqwest::Client,
    shutdown: &CancellationToken,
) -> DeliveryRecord {
    let signature = signature(spec.secret.expose(), delivery.body.as_bytes());
    let mut record = DeliveryRecord {
        webhook: spec.name.clone(),
        event_type: delivery.event_type.clone(),
        event_id: delivery.event_id.clone(),
        run_id: delivery.run_id,
        job_id: delivery.job_id,
        attempts: 0,
        delivered: false,
        last_status: None,
    };
    let mut backoff = spec.retry_backoff.0;
    for attempt in 1..=spec.max_attempts.max(1) {
        record.attempts = attempt;
        let answer = client
            .post(&spec.url)
            .header("Content-Type", "application/json")
            .header("Authorization", &signature)
            .body(delivery.body.clone())
            .send()
            .await;
        record.last_status = answer.as_ref().ok().map(|r| r.status().as_u16());
        if answer.as_ref().is_ok_and(|r| r.status().is_success()) {
            record.delivered = true;
            break;
        }
        tracing::debug!(
            webhook = %spec.name,
            event = %delivery.event_type,
            run_id = %delivery.run_id,
            attempt,
            status = ?record.last_status,
            "webhook delivery failed"
        );
        if attempt < spec.max_attempts {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = backoff.saturating_mul(2);
        }
    }
    record
}
