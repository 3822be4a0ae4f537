//! Prometheus metrics at `GET /metrics`: attempts by outcome (the failure class), retries, time
//! queued and running, dispatch latency, schedule lag, runs in flight, runs late, last success,
//! dbt Cloud requests, 429s and budget waits. Fed by the engine's `Transition` broadcast; timings
//! the transitions do not carry are read from the engine's state with one `peek` per batch.
//! Labels are pipeline and step names (bounded by the config), never run ids. The timing
//! histograms are per pipeline unless the operator asks for them per step
//! (`metrics.step_histograms`): with 10,000 pipelines of five steps, per-step series of three
//! histogram families were most of the daemon's memory. The registry keeps one compact entry per
//! pipeline (`registry.rs`) and a scrape streams the document in chunks (`render.rs`).

mod read;
mod registry;
mod render;
mod text;

use crate::dbt_cloud::budget::RequestBudget;
use crate::engine::event::{Transition, TransitionKind};
use crate::ids::AccountName;
use crate::model::pipeline::StepName;
use crate::ops::webhook::WebhookStats;
use crate::runtime::DaemonHandle;
use read::{gauges, last_success, resolve, Found, Lookup};
use registry::Registry;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use tokio::sync::{broadcast, watch};
use tokio_util::sync::CancellationToken;

pub use text::escape as escape_label_value;

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
        let me = self.clone();
        let _ = handle
            .peek(move |engine, _| gauges(engine, &mut me.lock()))
            .await;
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
            let read_gauges = gauges_read.elapsed() >= GAUGES_EVERY;
            let me = self.clone();
            let answer = handle
                .peek(move |engine, _| {
                    let found: Vec<Found> =
                        lookups.iter().filter_map(|l| resolve(engine, l)).collect();
                    if read_gauges {
                        gauges(engine, &mut me.lock());
                    }
                    found
                })
                .await;
            let Ok(found) = answer else { return };
            self.apply_found(found);
            unread += batch.len() as u64;
            if read_gauges {
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
            let pipeline = t.pipeline.0.as_str();
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
                    reg.series(pipeline).runs[2] += 1;
                    last_success(&mut reg, pipeline, t.at);
                }
                TransitionKind::PipelineRunFailed => reg.series(pipeline).runs[1] += 1,
                TransitionKind::PipelineRunCancelled => reg.series(pipeline).runs[0] += 1,
                TransitionKind::TicksMissed => reg.series(pipeline).ticks_missed += 1,
                TransitionKind::PipelineRunLate => reg.series(pipeline).runs_late += 1,
                TransitionKind::TickSkipped => reg.series(pipeline).ticks_skipped += 1,
                TransitionKind::TriggerAmbiguous => reg.series(pipeline).triggers_ambiguous += 1,
                _ => {}
            }
        }
        lookups
    }

    fn apply_found(&self, found: Vec<Found>) {
        let mut reg = self.lock();
        let per_step = self.step_histograms;
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
                    reg.count(&pipeline, &step, outcome, false);
                    if retry {
                        reg.count(&pipeline, &step, outcome, true);
                    }
                    let timings = reg.timings(&pipeline, &step, per_step);
                    if let Some(q) = queued {
                        timings.queued.add(q);
                    }
                    if let Some(r) = running {
                        timings.running.add(r);
                    }
                }
                Found::Dispatch {
                    pipeline,
                    step,
                    seconds,
                } => reg
                    .timings(&pipeline, &step, per_step)
                    .dispatch
                    .add(seconds),
                Found::Lag { pipeline, seconds } => reg.series(&pipeline).lag.add(seconds),
            }
        }
    }

    /// The whole exposition document at once (tests, and callers that want it as one string;
    /// `GET /metrics` streams it).
    pub fn render(self: &Arc<Self>) -> String {
        let mut scrape = render::Scrape::new(self.clone());
        let mut text = String::new();
        while let Some(chunk) = scrape.next_chunk() {
            text.push_str(&chunk);
        }
        text
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
                    axum::body::Body::from_stream(render::Scrape::new(metrics)),
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
        let clock = crate::clock::ManualClock::new(chrono::DateTime::<chrono::Utc>::UNIX_EPOCH);
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

    #[test]
    fn a_scrape_of_many_pipelines_comes_in_chunks_that_make_the_whole_document() {
        let m = Metrics::new();
        {
            let mut reg = m.lock();
            for i in 0..3000 {
                let p = format!("p{i:05}");
                reg.count(
                    &p,
                    "s0",
                    crate::engine::state::AttemptOutcome::Success,
                    false,
                );
                reg.series(&p).lag.add(0.2);
                reg.series(&p).runs[2] += 1;
            }
        }
        let mut scrape = render::Scrape::new(m.clone());
        let mut chunks = Vec::new();
        while let Some(chunk) = scrape.next_chunk() {
            chunks.push(chunk);
        }
        assert!(chunks.len() > 3, "{} chunks", chunks.len());
        assert!(chunks.iter().all(|c| c.len() < 2 * 64 * 1024));
        let text = chunks.concat();
        assert_eq!(text, m.render());
        for family in [
            "baton_attempts_total",
            "baton_schedule_lag_seconds",
            "baton_pipeline_runs_total",
        ] {
            assert_eq!(
                text.matches(&format!("# TYPE {family} ")).count(),
                1,
                "{family}"
            );
        }
        assert_eq!(
            text.matches("baton_schedule_lag_seconds_count{").count(),
            3000
        );
        assert!(text.contains(
            "baton_attempts_total{pipeline=\"p02999\",step=\"s0\",outcome=\"success\"} 1\n"
        ));
        assert!(text.ends_with("baton_metrics_transitions_lost_total 0\n"));
    }
}
