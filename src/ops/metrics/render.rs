//! The exposition document, written in chunks: a scrape walks the families in order and, within
//! a family, the pipelines by name, taking the registry's lock for one chunk at a time. With
//! 10,000 pipelines the document is tens of megabytes; a scrape holds one chunk of it, never the
//! whole, and never keeps the feeding task waiting for longer than a chunk takes.

use super::registry::{Long, Registry, Series, Short, Timings, RUN_STATES};
use super::text::{Exposition, LONG_BUCKETS, SHORT_BUCKETS};
use super::Metrics;
use crate::dbt_cloud::budget::BudgetStats;
use std::ops::Bound;
use std::sync::Arc;

/// A chunk is sent once it holds this much.
const CHUNK_BYTES: usize = 64 * 1024;

/// One family of per-pipeline series: its name, type, help and how one pipeline's samples read.
struct Family {
    name: &'static str,
    kind: &'static str,
    help: &'static str,
    write: fn(&mut Exposition, &Registry, &str, &Series, bool),
}

/// The document's parts in order: the families written per pipeline sit between a head and a
/// tail of process-wide ones (`None`).
const PARTS: &[Option<Family>] = &[
    None,
    Some(Family {
        name: "baton_attempts_total",
        kind: "counter",
        help: "Attempts (dbt Cloud runs) ended, by outcome: success or the failure class (error, timed_out, queue_timed_out, cancelled, cancelled_outside, rejected).",
        write: |e, reg, p, s, _| counts(e, reg, p, s, false),
    }),
    Some(Family {
        name: "baton_retries_total",
        kind: "counter",
        help: "Retries scheduled, by the failure class of the attempt that ended.",
        write: |e, reg, p, s, _| counts(e, reg, p, s, true),
    }),
    Some(Family {
        name: "baton_step_queued_seconds",
        kind: "histogram",
        help: "Time an attempt spent queued in dbt Cloud (accepted to running, or to its end if it never ran).",
        write: |e, reg, p, s, per_step| {
            timings(e, reg, p, s, per_step, "baton_step_queued_seconds", |t| {
                long(&t.queued)
            })
        },
    }),
    Some(Family {
        name: "baton_step_running_seconds",
        kind: "histogram",
        help: "Time an attempt spent running in dbt Cloud.",
        write: |e, reg, p, s, per_step| {
            timings(e, reg, p, s, per_step, "baton_step_running_seconds", |t| {
                long(&t.running)
            })
        },
    }),
    Some(Family {
        name: "baton_dispatch_latency_seconds",
        kind: "histogram",
        help: "Time from the last upstream step seen finished to the downstream step's run accepted by dbt Cloud.",
        write: |e, reg, p, s, per_step| {
            timings(e, reg, p, s, per_step, "baton_dispatch_latency_seconds", |t| {
                short(&t.dispatch)
            })
        },
    }),
    Some(Family {
        name: "baton_schedule_lag_seconds",
        kind: "histogram",
        help: "Time from a schedule tick (the logical date) to its pipeline run's creation.",
        write: |e, _, p, s, _| {
            if !s.lag.is_empty() {
                let (bounds, counts, sum) = short(&s.lag);
                e.histogram(
                    "baton_schedule_lag_seconds",
                    &[("pipeline", p)],
                    bounds,
                    counts,
                    sum,
                );
            }
        },
    }),
    Some(Family {
        name: "baton_pipeline_runs_total",
        kind: "counter",
        help: "Pipeline runs ended, by final state.",
        write: |e, _, p, s, _| {
            for (state, n) in RUN_STATES.iter().zip(s.runs) {
                if n > 0 {
                    e.sample(
                        "baton_pipeline_runs_total",
                        &[("pipeline", p), ("state", state)],
                        n as f64,
                    );
                }
            }
        },
    }),
    Some(Family {
        name: "baton_pipeline_runs_active",
        kind: "gauge",
        help: "Pipeline runs not finished, by state (queued behind an earlier run, or running).",
        write: |e, _, p, s, _| {
            if s.present {
                for (state, n) in ["queued", "running"].iter().zip(s.active) {
                    e.sample(
                        "baton_pipeline_runs_active",
                        &[("pipeline", p), ("state", state)],
                        f64::from(n),
                    );
                }
            }
        },
    }),
    None,
    Some(Family {
        name: "baton_pipeline_last_success_timestamp_seconds",
        kind: "gauge",
        help: "When the pipeline's latest successful run finished (Unix time).",
        write: |e, _, p, s, _| {
            if let Some(at) = s.last_success {
                e.sample(
                    "baton_pipeline_last_success_timestamp_seconds",
                    &[("pipeline", p)],
                    at.timestamp_millis() as f64 / 1000.0,
                );
            }
        },
    }),
    Some(Family {
        name: "baton_pipeline_runs_late_total",
        kind: "counter",
        help: "Pipeline runs found not done by their pipeline's deadline (counted once per run).",
        write: |e, _, p, s, _| counter(e, "baton_pipeline_runs_late_total", p, s.runs_late),
    }),
    Some(Family {
        name: "baton_pipeline_runs_late",
        kind: "gauge",
        help: "Pipeline runs past their deadline and not finished yet.",
        write: |e, _, p, s, _| {
            if s.deadline || s.late_now > 0 {
                e.sample(
                    "baton_pipeline_runs_late",
                    &[("pipeline", p)],
                    f64::from(s.late_now),
                );
            }
        },
    }),
    Some(Family {
        name: "baton_schedule_ticks_missed_total",
        kind: "counter",
        help: "Times ticks were found missed (after downtime); the catch-up policy decided which ran.",
        write: |e, _, p, s, _| counter(e, "baton_schedule_ticks_missed_total", p, s.ticks_missed),
    }),
    Some(Family {
        name: "baton_schedule_ticks_skipped_total",
        kind: "counter",
        help: "Ticks skipped because the previous run was still active (concurrency: skip).",
        write: |e, _, p, s, _| counter(e, "baton_schedule_ticks_skipped_total", p, s.ticks_skipped),
    }),
    Some(Family {
        name: "baton_triggers_ambiguous_total",
        kind: "counter",
        help: "Trigger calls with an ambiguous answer (timeout, 5xx), reconciled by key before any re-send.",
        write: |e, _, p, s, _| counter(e, "baton_triggers_ambiguous_total", p, s.triggers_ambiguous),
    }),
    None,
];

/// A histogram as written: its bounds, counts per bucket and sum.
type Buckets<'a> = (&'static [f64], &'a [u32], f64);

fn long(h: &Long) -> Buckets<'_> {
    (LONG_BUCKETS, h.counts(), h.sum())
}

fn short(h: &Short) -> Buckets<'_> {
    (SHORT_BUCKETS, h.counts(), h.sum())
}

fn counter(e: &mut Exposition, name: &str, pipeline: &str, n: u64) {
    if n > 0 {
        e.sample(name, &[("pipeline", pipeline)], n as f64);
    }
}

fn counts(e: &mut Exposition, reg: &Registry, pipeline: &str, s: &Series, retry: bool) {
    let (name, label) = if retry {
        ("baton_retries_total", "class")
    } else {
        ("baton_attempts_total", "outcome")
    };
    for c in s.counts.iter().filter(|c| c.retry == retry) {
        e.sample(
            name,
            &[
                ("pipeline", pipeline),
                ("step", reg.steps.name(c.step)),
                (label, c.outcome.name()),
            ],
            c.n as f64,
        );
    }
}

fn timings(
    e: &mut Exposition,
    reg: &Registry,
    pipeline: &str,
    s: &Series,
    per_step: bool,
    name: &str,
    pick: fn(&Timings) -> Buckets<'_>,
) {
    if per_step {
        for (step, t) in &s.step_timings {
            let (bounds, counts, sum) = pick(t);
            if counts.iter().any(|c| *c > 0) {
                let step = reg.steps.name(*step);
                e.histogram(
                    name,
                    &[("pipeline", pipeline), ("step", step)],
                    bounds,
                    counts,
                    sum,
                );
            }
        }
    } else {
        let (bounds, counts, sum) = pick(&s.timings);
        if counts.iter().any(|c| *c > 0) {
            e.histogram(name, &[("pipeline", pipeline)], bounds, counts, sum);
        }
    }
}

/// One scrape in progress: where the next chunk starts.
#[derive(Debug)]
pub(super) struct Scrape {
    metrics: Arc<Metrics>,
    part: usize,
    /// Within a per-pipeline family: the last pipeline written (`None`: its header comes next).
    after: Option<Box<str>>,
}

impl Scrape {
    pub(super) fn new(metrics: Arc<Metrics>) -> Self {
        Self {
            metrics,
            part: 0,
            after: None,
        }
    }

    /// The next chunk of the document, `None` once it is all written.
    pub(super) fn next_chunk(&mut self) -> Option<String> {
        let mut e = Exposition::default();
        while e.written() < CHUNK_BYTES {
            let part = PARTS.get(self.part)?;
            match part {
                None => {
                    self.global(&mut e);
                    self.part += 1;
                }
                Some(family) => {
                    if self.family(&mut e, family) {
                        self.part += 1;
                        self.after = None;
                    }
                }
            }
            if self.part >= PARTS.len() {
                break;
            }
        }
        let text = e.finish();
        (!text.is_empty()).then_some(text)
    }

    /// Writes the family's next pipelines into `e` until the chunk is full; whether the family
    /// is done.
    fn family(&mut self, e: &mut Exposition, family: &Family) -> bool {
        if self.after.is_none() {
            e.family(family.name, family.kind, family.help);
        }
        let reg = self.metrics.lock();
        let from = match &self.after {
            Some(name) => Bound::Excluded(name.as_ref()),
            None => Bound::Unbounded,
        };
        let mut last = None;
        for (name, series) in reg.pipelines.range::<str, _>((from, Bound::Unbounded)) {
            (family.write)(e, &reg, name, series, self.metrics.step_histograms);
            last = Some(name);
            if e.written() >= CHUNK_BYTES {
                break;
            }
        }
        match last {
            Some(name) if e.written() >= CHUNK_BYTES => {
                self.after = Some(name.clone());
                false
            }
            _ => true,
        }
    }

    /// The process-wide families of this part of the document.
    fn global(&self, e: &mut Exposition) {
        let m = &self.metrics;
        match self.part {
            0 => {
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
            }
            p if p + 1 < PARTS.len() => {
                e.family(
                    "baton_attempts_in_flight",
                    "gauge",
                    "Attempts triggering or running in dbt Cloud.",
                );
                let in_flight = m.lock().attempts_in_flight;
                e.sample("baton_attempts_in_flight", &[], in_flight as f64);
            }
            _ => self.tail(e),
        }
    }

    fn tail(&self, e: &mut Exposition) {
        let m = &self.metrics;
        e.family(
            "baton_dbt_cloud_api_requests_total",
            "counter",
            "dbt Cloud API requests answered, by account, endpoint and HTTP status (0: no answer).",
        );
        let reg = m.lock();
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
        let budgets: Vec<(String, BudgetStats)> = m
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
        if let Some(stats) = m
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
        if let Some(extra) = m.extra.lock().unwrap_or_else(|p| p.into_inner()).clone() {
            e.raw(&(extra.0)());
        }
    }
}

/// The scrape as a body stream: each poll writes the next chunk.
impl futures_core::Stream for Scrape {
    type Item = Result<axum::body::Bytes, std::convert::Infallible>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        std::task::Poll::Ready(self.next_chunk().map(|c| Ok(c.into())))
    }
}
