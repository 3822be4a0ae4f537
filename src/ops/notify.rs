//! Notifications: on a pipeline run's failure (and, where a target asks, its success, a retry,
//! missed schedule ticks or a run late for its deadline) POST a generic JSON body or a Slack-compatible one to each configured
//! target, with the pipeline, logical date, failed steps, their first error lines and links to
//! dbt Cloud. Each target has its own delivery queue and task, never the scheduler loop: a target
//! hears of events in the order they happened, a refused delivery is retried (with backoff)
//! before anything later goes to that target, and a slow target holds up no other. Deliveries
//! carry no secret: the target URL is itself kept as a `Secret` and never logged.

use crate::config::daemon::{
    ConfigError, NotificationEvent, NotificationFormat, NotificationTarget,
};
use crate::engine::event::{Transition, TransitionKind};
use crate::engine::state::{AttemptOutcome, PipelineRun, StepState};
use crate::engine::Engine;
use crate::runtime::DaemonHandle;
use crate::secret::Secret;
use chrono::SecondsFormat;
use serde::Serialize;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Lines of a step's error message a notification carries.
const ERROR_LINES: usize = 5;
/// Characters of a step's error message a notification carries.
const ERROR_CHARS: usize = 600;

/// One target, its URL read from its source.
#[derive(Debug, Clone)]
pub struct Target {
    pub name: String,
    pub url: Secret,
    pub format: NotificationFormat,
    pub on: Vec<NotificationEvent>,
}

impl Target {
    pub fn from_config(config: &NotificationTarget) -> Result<Self, ConfigError> {
        Ok(Self {
            name: config.name.clone(),
            url: config.resolve_url()?,
            format: config.format,
            on: config.on.clone(),
        })
    }
}

/// How deliveries are retried.
#[derive(Debug, Clone)]
pub struct DeliverySettings {
    /// Tries per delivery, the first included.
    pub attempts: u32,
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    /// Limit on one POST.
    pub timeout: Duration,
    /// How long a stopping daemon waits for deliveries still retrying.
    pub shutdown_grace: Duration,
}

impl Default for DeliverySettings {
    fn default() -> Self {
        Self {
            attempts: 6,
            initial_backoff: Duration::from_secs(2),
            max_backoff: Duration::from_secs(120),
            timeout: Duration::from_secs(10),
            shutdown_grace: Duration::from_secs(5),
        }
    }
}

/// A step worth naming in a notification.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StepReport {
    pub step: String,
    pub state: &'static str,
    pub attempts: usize,
    /// The first lines of the last attempt's message (dbt Cloud's `status_message`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dbt_run_id: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub href: Option<String>,
}

/// What a notification says, before it is shaped for a target's format.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Notification {
    pub event: &'static str,
    pub pipeline: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pipeline_run: Option<String>,
    /// The logical date in the pipeline's time zone (RFC 3339).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub logical_date: Option<String>,
    pub at: String,
    pub summary: String,
    pub steps: Vec<StepReport>,
}

fn event_name(event: NotificationEvent) -> &'static str {
    match event {
        NotificationEvent::Failure => "failure",
        NotificationEvent::Success => "success",
        NotificationEvent::Retry => "retry",
        NotificationEvent::Missed => "missed",
        NotificationEvent::Late => "late",
    }
}

fn event_of(kind: TransitionKind) -> Option<NotificationEvent> {
    match kind {
        TransitionKind::PipelineRunFailed => Some(NotificationEvent::Failure),
        TransitionKind::PipelineRunSucceeded => Some(NotificationEvent::Success),
        TransitionKind::StepRetryScheduled => Some(NotificationEvent::Retry),
        TransitionKind::TicksMissed => Some(NotificationEvent::Missed),
        TransitionKind::PipelineRunLate => Some(NotificationEvent::Late),
        _ => None,
    }
}

/// The first lines of an error message, within bounds.
pub fn first_lines(message: &str) -> String {
    let lines: Vec<&str> = message
        .lines()
        .map(str::trim_end)
        .filter(|l| !l.trim().is_empty())
        .take(ERROR_LINES)
        .collect();
    let joined = lines.join("\n");
    if joined.chars().count() > ERROR_CHARS {
        let cut: String = joined.chars().take(ERROR_CHARS).collect();
        format!("{cut}…")
    } else {
        joined
    }
}

fn step_reports(run: &PipelineRun, only: Option<&str>) -> Vec<StepReport> {
    run.steps
        .iter()
        .filter(|(name, s)| match only {
            Some(step) => name.0 == step,
            None => s.state != StepState::Succeeded,
        })
        .map(|(name, s)| {
            let last = s.attempts.last();
            StepReport {
                step: name.0.clone(),
                state: s.state.name(),
                attempts: s.attempts.len(),
                error: last.and_then(|a| {
                    // baton's own timeouts and cancels say so, not only dbt Cloud's words.
                    if matches!(
                        a.outcome,
                        Some(
                            AttemptOutcome::TimedOut
                                | AttemptOutcome::QueueTimedOut
                                | AttemptOutcome::CancelledByBaton
                        )
                    ) {
                        let step = run.definition.step(name);
                        return crate::humanize::step_attempt_reason(a, step);
                    }
                    let message = a.message.as_deref().map(first_lines).unwrap_or_default();
                    match (message.is_empty(), a.outcome) {
                        (false, _) => Some(message),
                        // dbt Cloud often leaves `status_message` empty on errors; say how it ended.
                        (true, Some(outcome)) if outcome != AttemptOutcome::Success => {
                            Some(format!(
                            "attempt {} ended {} (dbt Cloud gave no message; see the run's logs)",
                            a.number,
                            outcome.name()
                        ))
                        }
                        _ => None,
                    }
                }),
                dbt_run_id: last.and_then(|a| a.run_id).map(|r| r.0),
                href: last.and_then(|a| a.href.clone()),
            }
        })
        .collect()
}

fn in_zone(run: &PipelineRun) -> String {
    match &run.definition.schedule {
        Some(s) => run
            .logical_date
            .with_timezone(&s.timezone)
            .to_rfc3339_opts(SecondsFormat::Secs, true),
        None => run.logical_date.to_rfc3339_opts(SecondsFormat::Secs, true),
    }
}

/// Builds the notification for `t` from the engine's state.
fn compose(engine: &Engine, t: &Transition, event: NotificationEvent) -> Notification {
    let run = t.run.as_ref().and_then(|id| engine.state().runs.get(id));
    let pipeline = t.pipeline.0.clone();
    let logical_date = run.map(in_zone);
    let steps = match (event, run) {
        (NotificationEvent::Failure | NotificationEvent::Late, Some(r)) => step_reports(r, None),
        (NotificationEvent::Retry, Some(r)) => step_reports(r, t.step.as_deref()),
        _ => Vec::new(),
    };
    let when = logical_date.clone().unwrap_or_default();
    let past_deadline = run
        .and_then(crate::engine::deadline::finished_late_by)
        .map(|by| format!(" ({by} after its deadline)"))
        .unwrap_or_default();
    let summary = match event {
        NotificationEvent::Failure => {
            let failed: Vec<String> = steps
                .iter()
                .map(|s| format!("{} {}", s.step, s.state))
                .collect();
            format!(
                "baton: {pipeline} failed for {when}: {}{past_deadline}",
                failed.join(", ")
            )
        }
        NotificationEvent::Success => {
            format!("baton: {pipeline} succeeded for {when}{past_deadline}")
        }
        NotificationEvent::Retry => format!(
            "baton: {pipeline} step {} retries for {when}: {}",
            t.step.as_deref().unwrap_or("?"),
            t.detail
        ),
        NotificationEvent::Missed => {
            format!("baton: {pipeline} missed schedule ticks: {}", t.detail)
        }
        NotificationEvent::Late => format!("baton: {pipeline} is late for {when}: {}", t.detail),
    };
    Notification {
        event: event_name(event),
        pipeline,
        pipeline_run: t.run.as_ref().map(|r| r.0.clone()),
        logical_date,
        at: t.at.to_rfc3339_opts(SecondsFormat::Secs, true),
        summary,
        steps,
    }
}

/// The generic JSON body.
pub fn json_body(n: &Notification) -> serde_json::Value {
    serde_json::to_value(n).unwrap_or_default()
}

/// Slack's mrkdwn treats `&`, `<` and `>` as control characters.
fn slack_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// A Slack incoming-webhook body: `text` for notifications and clients without blocks, `blocks`
/// for the message itself.
pub fn slack_body(n: &Notification) -> serde_json::Value {
    let mut blocks = vec![serde_json::json!({
        "type": "section",
        "text": { "type": "mrkdwn", "text": slack_escape(&n.summary) },
    })];
    for s in &n.steps {
        let mut text = format!("*{}*: {}", slack_escape(&s.step), s.state);
        if s.attempts > 0 {
            text.push_str(&format!(" after {} attempt(s)", s.attempts));
        }
        if let (Some(href), Some(id)) = (&s.href, s.dbt_run_id) {
            text.push_str(&format!(" · <{}|dbt Cloud run {id}>", slack_escape(href)));
        }
        if let Some(error) = &s.error {
            text.push_str(&format!("\n```{}```", slack_escape(error)));
        }
        blocks.push(serde_json::json!({
            "type": "section",
            "text": { "type": "mrkdwn", "text": text },
        }));
    }
    let mut context = format!("event `{}`", n.event);
    if let Some(run) = &n.pipeline_run {
        context.push_str(&format!(" · pipeline run `{}`", slack_escape(run)));
    }
    blocks.push(serde_json::json!({
        "type": "context",
        "elements": [{ "type": "mrkdwn", "text": context }],
    }));
    serde_json::json!({ "text": slack_escape(&n.summary), "blocks": blocks })
}

/// One notification on its way to one target.
#[derive(Debug)]
struct Delivery {
    body: serde_json::Value,
    pipeline_run: Option<String>,
}

/// Sends notifications for the daemon's transitions.
#[derive(Debug)]
pub struct Notifier {
    targets: Vec<Arc<Target>>,
    settings: DeliverySettings,
    http: reqwest::Client,
    deliveries: TaskTracker,
}

impl Notifier {
    pub fn new(targets: Vec<Target>, settings: DeliverySettings) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(settings.timeout)
            .user_agent(concat!("baton/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self {
            targets: targets.into_iter().map(Arc::new).collect(),
            settings,
            http,
            deliveries: TaskTracker::new(),
        })
    }

    /// Listens to the transitions until `shutdown` or until the loop stops, then waits up to the
    /// shutdown grace for deliveries still in flight.
    /// Subscribes when called, before the returned future first runs: spawned before the loop
    /// starts, it sees every transition.
    pub fn run(
        self,
        handle: DaemonHandle,
        shutdown: CancellationToken,
    ) -> impl std::future::Future<Output = ()> + Send + 'static {
        let rx = handle.transitions();
        self.listen(handle, rx, shutdown)
    }

    async fn listen(
        self,
        handle: DaemonHandle,
        mut rx: broadcast::Receiver<Transition>,
        shutdown: CancellationToken,
    ) {
        // One queue per target, in the order of `self.targets`.
        let queues: Vec<mpsc::UnboundedSender<Delivery>> = self
            .targets
            .iter()
            .map(|target| {
                let (queue, pending) = mpsc::unbounded_channel();
                self.deliveries.spawn(deliver_in_order(
                    self.http.clone(),
                    target.clone(),
                    pending,
                    self.settings.clone(),
                ));
                queue
            })
            .collect();
        loop {
            let t = tokio::select! {
                _ = shutdown.cancelled() => break,
                next = rx.recv() => match next {
                    Ok(t) => t,
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        tracing::warn!(lost = n, "notifications fell behind; some transitions were not looked at");
                        continue;
                    }
                    Err(broadcast::error::RecvError::Closed) => break,
                },
            };
            let Some(event) = event_of(t.what) else {
                continue;
            };
            let wanted: Vec<(&Arc<Target>, &mpsc::UnboundedSender<Delivery>)> = self
                .targets
                .iter()
                .zip(&queues)
                .filter(|(target, _)| target.on.contains(&event))
                .collect();
            if wanted.is_empty() {
                continue;
            }
            let Ok(notification) = handle
                .inspect(move |engine, _| compose(engine, &t, event))
                .await
            else {
                break;
            };
            for (target, queue) in wanted {
                let body = match target.format {
                    NotificationFormat::Json => json_body(&notification),
                    NotificationFormat::Slack => slack_body(&notification),
                };
                // Fails only once the target's task has ended, which it does after the queue closes.
                let _ = queue.send(Delivery {
                    body,
                    pipeline_run: notification.pipeline_run.clone(),
                });
            }
        }
        // Closing the queues lets each target's task end once it has delivered what is queued.
        drop(queues);
        self.deliveries.close();
        if tokio::time::timeout(self.settings.shutdown_grace, self.deliveries.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                targets = self.deliveries.len(),
                "stopping with notifications not yet delivered to some targets"
            );
        }
    }
}

/// Delivers one target's notifications one after the other, each to its end (delivered or given
/// up), so the target sees them in order.
async fn deliver_in_order(
    http: reqwest::Client,
    target: Arc<Target>,
    mut pending: mpsc::UnboundedReceiver<Delivery>,
    settings: DeliverySettings,
) {
    while let Some(delivery) = pending.recv().await {
        deliver(
            &http,
            &target,
            &delivery.body,
            &settings,
            delivery.pipeline_run,
        )
        .await;
    }
}

/// Posts `body`, retrying server errors, 408, 429 and transport failures with a doubling backoff.
async fn deliver(
    http: &reqwest::Client,
    target: &Target,
    body: &serde_json::Value,
    settings: &DeliverySettings,
    run: Option<String>,
) {
    let mut backoff = settings.initial_backoff;
    let run = run.unwrap_or_default();
    for attempt in 1..=settings.attempts.max(1) {
        let answer = http.post(target.url.expose()).json(body).send().await;
        let retryable = match &answer {
            Ok(r) if r.status().is_success() => {
                tracing::debug!(target = %target.name, pipeline_run = %run, "notification delivered");
                return;
            }
            Ok(r) => {
                let status = r.status();
                status.is_server_error() || status.as_u16() == 408 || status.as_u16() == 429
            }
            Err(_) => true,
        };
        // The error of a failed send may spell out the URL, which may be a secret: log the status
        // or the kind of failure only.
        let what = match &answer {
            Ok(r) => format!("HTTP {}", r.status().as_u16()),
            Err(e) if e.is_timeout() => "timed out".to_string(),
            Err(e) if e.is_connect() => "cannot connect".to_string(),
            Err(_) => "transport error".to_string(),
        };
        if !retryable || attempt == settings.attempts {
            tracing::warn!(target = %target.name, pipeline_run = %run, attempt, answer = %what, "notification not delivered; giving up");
            return;
        }
        tracing::info!(target = %target.name, pipeline_run = %run, attempt, answer = %what, retry_in_ms = backoff.as_millis() as u64, "notification not delivered; retrying");
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(settings.max_backoff);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Notification {
        Notification {
            event: "failure",
            pipeline: "nightly <prod>".into(),
            pipeline_run: Some("nightly <prod>@2026-01-05T02:00:00Z".into()),
            logical_date: Some("2026-01-05T03:00:00+01:00".into()),
            at: "2026-01-05T02:10:00Z".into(),
            summary: "baton: nightly <prod> failed for 2026-01-05T03:00:00+01:00: marts failed"
                .into(),
            steps: vec![StepReport {
                step: "marts".into(),
                state: "failed",
                attempts: 2,
                error: Some(first_lines(
                    "Database Error in model x\n  relation & <y> missing\n",
                )),
                dbt_run_id: Some(70403110000001),
                href: Some(
                    "https://cloud.getdbt.com/deploy/1/projects/2/runs/70403110000001/".into(),
                ),
            }],
        }
    }

    #[test]
    fn first_lines_keep_a_few_lines_and_bounded_length() {
        let long = (1..=20)
            .map(|i| format!("line {i}"))
            .collect::<Vec<_>>()
            .join("\n");
        assert_eq!(first_lines(&long).lines().count(), ERROR_LINES);
        let wide = "x".repeat(5000);
        assert_eq!(first_lines(&wide).chars().count(), ERROR_CHARS + 1);
        assert_eq!(first_lines("\n\n  \nboom\n"), "boom");
    }

    #[test]
    fn slack_bodies_escape_control_characters_and_link_runs() {
        let body = slack_body(&sample());
        assert_eq!(
            body["text"],
            "baton: nightly &lt;prod&gt; failed for 2026-01-05T03:00:00+01:00: marts failed"
        );
        let blocks = body["blocks"].as_array().unwrap();
        let first = blocks[0]["text"]["text"].as_str().unwrap();
        assert!(first.contains("nightly &lt;prod&gt;"), "{first}");
        let step = blocks[1]["text"]["text"].as_str().unwrap();
        assert!(step.contains("<https://cloud.getdbt.com/deploy/1/projects/2/runs/70403110000001/|dbt Cloud run 70403110000001>"), "{step}");
        assert!(step.contains("relation &amp; &lt;y&gt; missing"), "{step}");
    }

    #[test]
    fn json_bodies_carry_every_field() {
        let body = json_body(&sample());
        assert_eq!(body["event"], "failure");
        assert_eq!(body["pipeline"], "nightly <prod>");
        assert_eq!(body["logical_date"], "2026-01-05T03:00:00+01:00");
        assert_eq!(body["steps"][0]["step"], "marts");
        assert_eq!(body["steps"][0]["attempts"], 2);
        assert_eq!(
            body["steps"][0]["error"],
            "Database Error in model x\n  relation & <y> missing"
        );
        assert_eq!(body["steps"][0]["dbt_run_id"], 70403110000001i64);
    }
}
