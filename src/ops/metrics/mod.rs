//! Prometheus metrics at `GET /metrics`: attempts by outcome (the failure class), retries, time
//! queued and running, dispatch latency, schedule lag, runs in flight, runs late, last success,
//! dbt Cloud requests, 429s and budget waits. Fed by the engine's `Transition` broadcast; timings
//! the transitions do not carry are read from the engine's state with one `peek` per batch.
//! Labels are pipeline and step names (bounded by the config), never run ids. The timing
//! histograms are per pipeline unless the operator asks for them per step
//! (`metrics.step_histograms`): with 10,000 pipelines of five steps, per-step series of three
//! histogram families were most of the daemon's memory.

mod read;
mod text;

use crate::dbt_cloud::budget::{BudgetStats, RequestBudget};
use crate::engine::event::{Transition, TransitionKind};
use crate::ids::AccountName;
use crate::model::pipeline::StepName;
use crate::ops::webhook::WebhookStats;
use crate::runtime::DaemonHandle;
use chrono::{DateTime, Utc};
use read::{gauges, resolve, Found, Gauges, Lookup};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use text::{Exposition, Histogram, LONG_BUCKETS, SHORT_BUCKETS};
use tokio::sync::{broadcast, watch};
use tokio_util::sync::CancellationToken;

pub use text::escape as escape_label_value;

pub(super) type Pair = (String, String);
type Triple = (String, String, String);

#[derive(Debug, Default)]
struct Registry {
    attempts: BTreeMap<Triple, u64>,
    retries: BTreeMap<Triple, u64>,
    queued: BTreeMap<Pair, Histogram>,
    running: BTreeMap<Pair, Histogram>,
    dispatch: BTreeMap<Pair, Histogram>,
    schedule_lag: BTreeMap<String, Histogram>,
    pipeline_runs: BTreeMap<Pair, u64>,
    ticks_missed: BTreeMap<String, u64>,
    runs_late: BTreeMap<String, u64>,
    late_now: BTreeMap<String, i64>,
    ticks_skipped: BTreeMap<String, u64>,
    triggers_ambiguous: BTreeMap<String, u64>,
    /// (account, endpoint, status)
    api: BTreeMap<(String, String, u16), u64>,
    active_runs: BTreeMap<Pair, i64>,
    /// The series of `active_runs` and `late_now` the last gauges counted (the others are zero).
    counted: (Vec<Pair>, Vec<String>),
    /// The definitions version the gauges last walked every pipeline at.
    pipelines_walked: Option<u64>,
    attempts_in_flight: i64,
    last_success: BTreeMap<String, DateTime<Utc>>,
    transitions_lost: u64,
}

/// The daemon's metrics. Shared (`Arc`) between the feeding task, the `/metrics` route and
/// whatever calls `observe_api`.
#[derive(Debug)]
pub struct Metrics {
    registry: Mutex<Registry>,
    /// Timing histograms per (pipeline, step) instead of per pipeline.
    step_histograms: bool,
    /// Each account's request budget, by account name.
    budgets: Mutex<BTreeMap<String, Arc<RequestBudget>>>,
    webhooks: Mutex<Option<Arc<Mutex<WebhookStats>>>>,
    /// Transitions taken into account so far (tests wait on it).
    processed: watch::Sender<u64>,
    /// More families rendered by another part (leadership, on a node of an HA deployment).
    extra: Mutex<Option<ExtraFamilies>>,
}

/// How often the feed reads the gauges (runs active, attempts in flight, runs late) while
/// transitions keep coming; a transition is `processed` once the gauges were read after it.
const GAUGES_EVERY: std::time::Duration = std::time::Duration::from_millis(250);

/// Renders more metric families in the exposition format.
#[derive(Clone)]
pub struct ExtraFamilies(pub Arc<dyn Fn() -> String + Send + Sync>);

impl std::fmt::Debug for ExtraFamilies {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ExtraFamilies")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            registry: Mutex::default(),
            step_histograms: false,
            budgets: Mutex::default(),
            webhooks: Mutex::default(),
            processed: watch::channel(0).0,
            extra: Mutex::default(),
        }
    }
}

impl Metrics {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Metrics whose timing histograms carry a `step` label beside `pipeline` (one series per
    /// step: use it where the number of steps is known to be small).
    pub fn with_step_histograms() -> Arc<Self> {
        Arc::new(Self {
            step_histograms: true,
            ..Self::default()
        })
    }

    /// Reads the `default` account's request budget (requests, waits, 429s) at every scrape.
    pub fn set_budget(&self, budget: Arc<RequestBudget>) {
        self.set_account_budget(AccountName::DEFAULT, budget);
    }

    /// Reads the request budget of the account `account` at every scrape (label `account`).
    pub fn set_account_budget(&self, account: &str, budget: Arc<RequestBudget>) {
        self.budgets
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(account.to_string(), budget);
    }

    /// Appends `extra`'s families at every scrape.
    pub fn set_extra(&self, extra: ExtraFamilies) {
        *self.extra.lock().unwrap_or_else(|p| p.into_inner()) = Some(extra);
    }

    /// Reads the webhook receiver's counters at every scrape.
    pub fn set_webhook_stats(&self, stats: Arc<Mutex<WebhookStats>>) {
        *self.webhooks.lock().unwrap_or_else(|p| p.into_inner()) = Some(stats);
    }

    /// One answered dbt Cloud API request. `endpoint` must be a route name (`runs.list`,
    /// `jobs.trigger`), never a URL with ids in it; `status` 0 means no answer (transport error).
    pub fn observe_api(&self, endpoint: &str, status: u16) {
        self.observe_account_api(AccountName::DEFAULT, endpoint, status);
    }

    /// As `observe_api`, for the account named `account`.
    pub fn observe_account_api(&self, account: &str, endpoint: &str, status: u16) {
        *self
            .lock()
            .api
            .entry((account.to_string(), endpoint.to_string(), status))
            .or_default() += 1;
    }

    /// How many transitions have been counted (lost ones included), for tests to wait on.
    pub fn processed(&self) -> watch::Receiver<u64> {
        self.processed.subscribe()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Registry> {
        self.registry.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Feeds the metrics from the daemon's transitions until `shutdown` or until the loop stops.
    /// Subscribes when called, before the returned future first runs: spawned before the loop
    /// starts, it sees every transition.
    pub fn run(
        self: Arc<Self>,
        handle: DaemonHandle,
        shutdown: CancellationToken,
    ) -> impl std::future::Future<Output = ()> + Send + 'static {
        let rx = handle.transitions();
        self.feed(handle, rx, shutdown)
    }

    async fn feed(
        self: Arc<Self>,
        handle: DaemonHandle,
        mut rx: broadcast::Receiver<Transition>,
        shutdown: CancellationToken,
    ) {
        if let Ok(g) = handle.peek(|engine, _| gauges(engine, None)).await {
            self.apply_gauges(g);
        }
        let mut gauges_read = tokio::time::Instant::now();
        // Transitions counted whose gauges are not read yet: `processed` waits for them.
        let mut unread: u64 = 0;
        loop {
            let first = tokio::select! {
                _ = shutdown.cancelled() => return,
                next = rx.recv() => Some(next),
                _ = tokio::time::sleep_until(gauges_read + GAUGES_EVERY), if unread > 0 => None,
            };
            let mut batch = Vec::new();
            match first {
                Some(Ok(t)) => batch.push(t),
                Some(Err(broadcast::error::RecvError::Lagged(n))) => self.lost(n),
                Some(Err(broadcast::error::RecvError::Closed)) => return,
                None => {}
            }
            loop {
                match rx.try_recv() {
                    Ok(t) => batch.push(t),
                    Err(broadcast::error::TryRecvError::Lagged(n)) => self.lost(n),
                    Err(_) => break,
                }
            }
            let lookups = self.count(&batch);
            // Gauges are instants a scrape reads: read at most every `GAUGES_EVERY` (a batch of
            // transitions comes with nearly every turn, a gauge read walks every active run).
            let walked =
                (gauges_read.elapsed() >= GAUGES_EVERY).then(|| self.lock().pipelines_walked);
            // What waits for the next turn comes with the next batch of transitions.
            let answer = handle
                .peek(move |engine, _| {
                    let found: Vec<Found> =
                        lookups.iter().filter_map(|l| resolve(engine, l)).collect();
                    (found, walked.map(|walked| gauges(engine, walked)))
                })
                .await;
            let Ok((found, g)) = answer else { return };
            self.apply_found(found);
            unread += batch.len() as u64;
            if let Some(g) = g {
                self.apply_gauges(g);
                gauges_read = tokio::time::Instant::now();
                let read = std::mem::take(&mut unread);
                self.processed.send_modify(|n| *n += read);
            }
        }
    }

    fn lost(&self, n: u64) {
        tracing::warn!(
            lost = n,
            "metrics fell behind the transitions; some were not counted"
        );
        self.lock().transitions_lost += n;
        self.processed.send_modify(|count| *count += n);
    }

    /// Counts what the transitions alone tell, and lists what must be read from the engine.
    fn count(&self, batch: &[Transition]) -> Vec<Lookup> {
        let mut lookups = Vec::new();
        let mut reg = self.lock();
        for t in batch {
            let pipeline = t.pipeline.0.clone();
            let attempt = match (&t.run, &t.step, t.attempt) {
                (Some(run), Some(step), Some(number)) if number > 0 => {
                    Some((run.clone(), StepName(step.clone()), number))
                }
                _ => None,
            };
            match t.what {
                TransitionKind::StepSucceeded
                | TransitionKind::StepFailed
                | TransitionKind::StepCancelled
                | TransitionKind::StepRetryScheduled => {
                    if let Some((run, step, number)) = attempt {
                        lookups.push(Lookup::AttemptEnded {
                            run,
                            step,
                            number,
                            retry: t.what == TransitionKind::StepRetryScheduled,
                        });
                    }
                }
                TransitionKind::StepTriggered | TransitionKind::TriggerAdopted => {
                    if let Some((run, step, 1)) = attempt {
                        lookups.push(Lookup::FirstTriggered { run, step });
                    }
                }
                TransitionKind::PipelineRunCreated => {
                    if let Some(run) = &t.run {
                        lookups.push(Lookup::RunCreated { run: run.clone() });
                    }
                }
                TransitionKind::PipelineRunSucceeded => {
                    *reg.pipeline_runs
                        .entry((pipeline.clone(), "succeeded".into()))
                        .or_default() += 1;
                    let last = reg.last_success.entry(pipeline).or_insert(t.at);
                    *last = (*last).max(t.at);
                }
                TransitionKind::PipelineRunFailed => {
                    *reg.pipeline_runs
                        .entry((pipeline, "failed".into()))
                        .or_default() += 1;
                }
                TransitionKind::PipelineRunCancelled => {
                    *reg.pipeline_runs
                        .entry((pipeline, "cancelled".into()))
                        .or_default() += 1;
                }
                TransitionKind::TicksMissed => *reg.ticks_missed.entry(pipeline).or_default() += 1,
                TransitionKind::PipelineRunLate => *reg.runs_late.entry(pipeline).or_default() += 1,
                TransitionKind::TickSkipped => *reg.ticks_skipped.entry(pipeline).or_default() += 1,
                TransitionKind::TriggerAmbiguous => {
                    *reg.triggers_ambiguous.entry(pipeline).or_default() += 1
                }
                _ => {}
            }
        }
        lookups
    }

    fn apply_found(&self, found: Vec<Found>) {
        let mut reg = self.lock();
        for f in found {
            match f {
                Found::Attempt {
                    pipeline,
                    step,
                    outcome,
                    retry,
                    queued,
                    running,
                } => {
                    let key = self.histogram_key(&pipeline, &step);
                    *reg.attempts
                        .entry((pipeline.clone(), step.clone(), outcome.into()))
                        .or_default() += 1;
                    if retry {
                        *reg.retries
                            .entry((pipeline, step, outcome.into()))
                            .or_default() += 1;
                    }
                    if let Some(q) = queued {
                        reg.queued
                            .entry(key.clone())
                            .or_insert_with(|| Histogram::new(LONG_BUCKETS))
                            .observe(q);
                    }
                    if let Some(r) = running {
                        reg.running
                            .entry(key)
                            .or_insert_with(|| Histogram::new(LONG_BUCKETS))
                            .observe(r);
                    }
                }
                Found::Dispatch {
                    pipeline,
                    step,
                    seconds,
                } => reg
                    .dispatch
                    .entry(self.histogram_key(&pipeline, &step))
                    .or_insert_with(|| Histogram::new(SHORT_BUCKETS))
                    .observe(seconds),
                Found::Lag { pipeline, seconds } => reg
                    .schedule_lag
                    .entry(pipeline)
                    .or_insert_with(|| Histogram::new(SHORT_BUCKETS))
                    .observe(seconds),
            }
        }
    }

    /// The series a timing goes to: (pipeline, step), or (pipeline, "") without step histograms.
    fn histogram_key(&self, pipeline: &str, step: &str) -> Pair {
        let step = if self.step_histograms { step } else { "" };
        (pipeline.to_string(), step.to_string())
    }

    fn apply_gauges(&self, g: Gauges) {
        let mut reg = self.lock();
        let reg = &mut *reg;
        if g.pipelines_walked.is_some() {
            reg.pipelines_walked = g.pipelines_walked;
            reg.counted = (
                g.active_runs
                    .iter()
                    .filter(|(_, n)| **n != 0)
                    .map(|(k, _)| k.clone())
                    .collect(),
                g.late_now
                    .iter()
                    .filter(|(_, n)| **n != 0)
                    .map(|(k, _)| k.clone())
                    .collect(),
            );
            reg.active_runs = g.active_runs;
            reg.late_now = g.late_now;
        } else {
            // Only the series counted now are listed: the ones counted last time go back to zero.
            for key in &reg.counted.0 {
                if let Some(n) = reg.active_runs.get_mut(key) {
                    *n = 0;
                }
            }
            for key in &reg.counted.1 {
                if let Some(n) = reg.late_now.get_mut(key) {
                    *n = 0;
                }
            }
            reg.counted = (
                g.active_runs.keys().cloned().collect(),
                g.late_now.keys().cloned().collect(),
            );
            reg.active_runs.extend(g.active_runs);
            reg.late_now.extend(g.late_now);
        }
        reg.attempts_in_flight = g.attempts_in_flight;
        for (pipeline, at) in g.last_success {
            let last = reg.last_success.entry(pipeline).or_insert(at);
            *last = (*last).max(at);
        }
    }

    /// The exposition document.
    pub fn render(&self) -> String {
        let mut e = Exposition::default();
        e.family(
            "baton_build_info",
            "gauge",
            "Always 1; the version in a label.",
        );
        e.sample(
            "baton_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))],
            1.0,
        );
        let reg = self.lock();
        counter3(
            &mut e,
            "baton_attempts_total",
            "Attempts (dbt Cloud runs) ended, by outcome: success or the failure class (error, timed_out, queue_timed_out, cancelled, cancelled_outside, rejected).",
            "outcome",
            &reg.attempts,
        );
        counter3(
            &mut e,
            "baton_retries_total",
            "Retries scheduled, by the failure class of the attempt that ended.",
            "class",
            &reg.retries,
        );
        histograms2(&mut e, "baton_step_queued_seconds", "Time an attempt spent queued in dbt Cloud (accepted to running, or to its end if it never ran).", &reg.queued);
        histograms2(
            &mut e,
            "baton_step_running_seconds",
            "Time an attempt spent running in dbt Cloud.",
            &reg.running,
        );
        histograms2(&mut e, "baton_dispatch_latency_seconds", "Time from the last upstream step seen finished to the downstream step's run accepted by dbt Cloud.", &reg.dispatch);
        e.family(
            "baton_schedule_lag_seconds",
            "histogram",
            "Time from a schedule tick (the logical date) to its pipeline run's creation.",
        );
        for (p, h) in &reg.schedule_lag {
            e.histogram("baton_schedule_lag_seconds", &[("pipeline", p)], h);
        }
        e.family(
            "baton_pipeline_runs_total",
            "counter",
            "Pipeline runs ended, by final state.",
        );
        for ((p, s), v) in &reg.pipeline_runs {
            e.sample(
                "baton_pipeline_runs_total",
                &[("pipeline", p), ("state", s)],
                *v as f64,
            );
        }
        e.family(
            "baton_pipeline_runs_active",
            "gauge",
            "Pipeline runs not finished, by state (queued behind an earlier run, or running).",
        );
        for ((p, s), v) in &reg.active_runs {
            e.sample(
                "baton_pipeline_runs_active",
                &[("pipeline", p), ("state", s)],
                *v as f64,
            );
        }
        e.family(
            "baton_attempts_in_flight",
            "gauge",
            "Attempts triggering or running in dbt Cloud.",
        );
        e.sample(
            "baton_attempts_in_flight",
            &[],
            reg.attempts_in_flight as f64,
        );
        e.family(
            "baton_pipeline_last_success_timestamp_seconds",
            "gauge",
            "When the pipeline's latest successful run finished (Unix time).",
        );
        for (p, at) in &reg.last_success {
            e.sample(
                "baton_pipeline_last_success_timestamp_seconds",
                &[("pipeline", p)],
                at.timestamp_millis() as f64 / 1000.0,
            );
        }
        counter1(
            &mut e,
            "baton_pipeline_runs_late_total",
            "Pipeline runs found not done by their pipeline's deadline (counted once per run).",
            &reg.runs_late,
        );
        e.family(
            "baton_pipeline_runs_late",
            "gauge",
            "Pipeline runs past their deadline and not finished yet.",
        );
        for (p, v) in &reg.late_now {
            e.sample("baton_pipeline_runs_late", &[("pipeline", p)], *v as f64);
        }
        counter1(&mut e, "baton_schedule_ticks_missed_total", "Times ticks were found missed (after downtime); the catch-up policy decided which ran.", &reg.ticks_missed);
        counter1(
            &mut e,
            "baton_schedule_ticks_skipped_total",
            "Ticks skipped because the previous run was still active (concurrency: skip).",
            &reg.ticks_skipped,
        );
        counter1(&mut e, "baton_triggers_ambiguous_total", "Trigger calls with an ambiguous answer (timeout, 5xx), reconciled by key before any re-send.", &reg.triggers_ambiguous);
        e.family(
            "baton_dbt_cloud_api_requests_total",
            "counter",
            "dbt Cloud API requests answered, by account, endpoint and HTTP status (0: no answer).",
        );
        for ((account, endpoint, status), v) in &reg.api {
            e.sample(
                "baton_dbt_cloud_api_requests_total",
                &[
                    ("account", account),
                    ("endpoint", endpoint),
                    ("status", &status.to_string()),
                ],
                *v as f64,
            );
        }
        e.family(
            "baton_metrics_transitions_lost_total",
            "counter",
            "Transitions the metrics task fell too far behind to count.",
        );
        e.sample(
            "baton_metrics_transitions_lost_total",
            &[],
            reg.transitions_lost as f64,
        );
        drop(reg);
        let budgets: Vec<(String, BudgetStats)> = self
            .budgets
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(account, budget)| (account.clone(), budget.stats()))
            .collect();
        if !budgets.is_empty() {
            for (name, kind, help, value) in [
                (
                    "baton_dbt_cloud_requests_total",
                    "counter",
                    "HTTP requests sent to dbt Cloud, retries included, by account.",
                    (|s: &BudgetStats| s.requests) as fn(&BudgetStats) -> u64,
                ),
                (
                    "baton_dbt_cloud_rate_limited_total",
                    "counter",
                    "429 answers from dbt Cloud, by account.",
                    |s| s.rate_limited,
                ),
                (
                    "baton_dbt_cloud_budget_waits_total",
                    "counter",
                    "Requests that waited for the request budget or a 429 cooldown, by account.",
                    |s| s.waits,
                ),
                (
                    "baton_dbt_cloud_budget_waiting",
                    "gauge",
                    "Requests waiting for the request budget now, by account.",
                    |s| s.waiting,
                ),
            ] {
                e.family(name, kind, help);
                for (account, stats) in &budgets {
                    e.sample(name, &[("account", account)], value(stats) as f64);
                }
            }
        }
        if let Some(stats) = self
            .webhooks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
        {
            let s = *stats.lock().unwrap_or_else(|p| p.into_inner());
            e.family(
                "baton_webhooks_received_total",
                "counter",
                "dbt Cloud webhook deliveries received, by what became of them.",
            );
            for (result, v) in [
                ("accepted", s.accepted),
                ("duplicate", s.duplicates),
                ("bad_signature", s.bad_signature),
                ("malformed", s.malformed),
                ("ignored", s.ignored),
            ] {
                e.sample(
                    "baton_webhooks_received_total",
                    &[("result", result)],
                    v as f64,
                );
            }
        }
        let mut text = e.finish();
        if let Some(extra) = self.extra.lock().unwrap_or_else(|p| p.into_inner()).clone() {
            text.push_str(&(extra.0)());
        }
        text
    }
}

fn counter1(e: &mut Exposition, name: &str, help: &str, values: &BTreeMap<String, u64>) {
    e.family(name, "counter", help);
    for (p, v) in values {
        e.sample(name, &[("pipeline", p)], *v as f64);
    }
}

fn counter3(
    e: &mut Exposition,
    name: &str,
    help: &str,
    label: &str,
    values: &BTreeMap<Triple, u64>,
) {
    e.family(name, "counter", help);
    for ((p, s, x), v) in values {
        e.sample(name, &[("pipeline", p), ("step", s), (label, x)], *v as f64);
    }
}

fn histograms2(e: &mut Exposition, name: &str, help: &str, values: &BTreeMap<Pair, Histogram>) {
    e.family(name, "histogram", help);
    for ((p, s), h) in values {
        if s.is_empty() {
            e.histogram(name, &[("pipeline", p)], h);
        } else {
            e.histogram(name, &[("pipeline", p), ("step", s)], h);
        }
    }
}

/// `GET /metrics`.
pub fn router(metrics: Arc<Metrics>) -> axum::Router {
    axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let metrics = metrics.clone();
            async move {
                (
                    [(
                        axum::http::header::CONTENT_TYPE,
                        "text/plain; version=0.0.4; charset=utf-8",
                    )],
                    metrics.render(),
                )
            }
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_counters_are_read_at_scrape_time() {
        let clock = crate::clock::ManualClock::new(chrono::DateTime::<Utc>::UNIX_EPOCH);
        let budget = Arc::new(RequestBudget::new(60, Arc::new(clock)));
        let m = Metrics::new();
        m.set_budget(budget.clone());
        assert!(m
            .render()
            .contains("baton_dbt_cloud_rate_limited_total{account=\"default\"} 0\n"));
        budget.on_rate_limited(None);
        let text = m.render();
        assert!(text.contains("# TYPE baton_dbt_cloud_rate_limited_total counter\n"));
        assert!(
            text.contains("baton_dbt_cloud_rate_limited_total{account=\"default\"} 1\n"),
            "{text}"
        );
        assert!(text.contains("baton_dbt_cloud_budget_waiting{account=\"default\"} 0\n"));
    }

    #[test]
    fn timing_histograms_are_per_pipeline_unless_step_histograms_are_asked_for() {
        let found = || {
            vec![Found::Dispatch {
                pipeline: "nightly".into(),
                step: "marts".into(),
                seconds: 0.2,
            }]
        };
        let m = Metrics::new();
        m.apply_found(found());
        let text = m.render();
        assert!(
            text.contains("baton_dispatch_latency_seconds_count{pipeline=\"nightly\"} 1\n"),
            "{text}"
        );
        assert!(!text.contains("step=\"marts\""));
        let m = Metrics::with_step_histograms();
        m.apply_found(found());
        assert!(m.render().contains(
            "baton_dispatch_latency_seconds_count{pipeline=\"nightly\",step=\"marts\"} 1\n"
        ));
    }

    #[test]
    fn api_requests_are_counted_by_endpoint_and_status() {
        let m = Metrics::new();
        m.observe_api("runs.list", 200);
        m.observe_api("runs.list", 200);
        m.observe_api("jobs.trigger", 429);
        let text = m.render();
        assert!(text.contains(
            "baton_dbt_cloud_api_requests_total{account=\"default\",endpoint=\"runs.list\",status=\"200\"} 2\n"
        ));
        assert!(text.contains(
            "baton_dbt_cloud_api_requests_total{account=\"default\",endpoint=\"jobs.trigger\",status=\"429\"} 1\n"
        ));
    }
}
