//! Fault injection: added latency, 500/502/503 with HTML bodies, 429 bursts with or without
//! `Retry-After`, a trigger that queues its run and still answers 502, a connection dropped
//! mid-response. Settings come from the scenario and can be replaced while the emulator runs; a
//! tally of what was injected rides along so a long test can report it.

use rand::rngs::StdRng;
use rand::Rng;
use serde::{Deserialize, Serialize};

/// What goes wrong, and how often. `*_next` counters are deterministic (the next N matching
/// requests); `*_rate` fractions are drawn from the scenario's seeded generator.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Faults {
    /// Added to every API answer, in real milliseconds.
    pub latency_ms: u64,
    /// The next N requests answer 500, 502, 503 (in turn) with an HTML body, without effect.
    pub server_errors_next: u32,
    pub server_error_rate: f64,
    /// The next N requests answer 429, without effect.
    pub rate_limit_next: u32,
    pub rate_limit_rate: f64,
    /// A 429 drawn by `rate_limit_rate` opens a burst: this many requests in a row answer 429
    /// (through `rate_limit_next`). 0 or 1: single 429s.
    pub rate_limit_burst: u32,
    /// Sent as `Retry-After` with every 429; no header when absent.
    pub retry_after_seconds: Option<u64>,
    /// Fraction of 429s sent without `Retry-After` even when `retry_after_seconds` is set.
    pub retry_after_missing_rate: f64,
    /// The next N triggers (`run/`, `rerun/`, `retry/`) queue their run, then answer 502.
    pub trigger_502_next: u32,
    pub trigger_502_rate: f64,
    /// The next N requests take effect, then lose their connection mid-response.
    pub drop_connection_next: u32,
    pub drop_connection_rate: f64,
    /// Only these routes (see `routes::Route::name`) suffer the faults; every API route when empty.
    pub routes: Vec<String>,
    /// What `decide` injected so far (a replacement of the faults starts it over).
    pub injected: Injected,
}

/// Counts of injected faults, by kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Injected {
    pub server_errors: u64,
    pub rate_limited: u64,
    pub rate_limited_without_retry_after: u64,
    pub effect_then_502: u64,
    pub dropped: u64,
}

/// What the fault layer decided for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultAction {
    None,
    /// Answer with this 5xx status and an HTML body, before the request has any effect.
    ServerError(u16),
    /// Answer 429, before the request has any effect.
    RateLimited {
        retry_after_seconds: Option<u64>,
    },
    /// Let the request take effect, then answer 502 (only triggers).
    EffectThen502,
    /// Let the request take effect, then cut the connection in the middle of the body.
    EffectThenDrop,
}

impl Faults {
    /// Decides the fate of one request to `route` and uses up the counters it consumes.
    pub fn decide(&mut self, route: &str, is_trigger: bool, rng: &mut StdRng) -> FaultAction {
        if !self.routes.is_empty() && !self.routes.iter().any(|r| r == route) {
            return FaultAction::None;
        }
        let in_burst = take(&mut self.rate_limit_next);
        if in_burst || roll(rng, self.rate_limit_rate) {
            if !in_burst {
                self.rate_limit_next = self.rate_limit_burst.saturating_sub(1);
            }
            let retry_after_seconds = self
                .retry_after_seconds
                .filter(|_| !roll(rng, self.retry_after_missing_rate));
            self.injected.rate_limited += 1;
            if retry_after_seconds.is_none() {
                self.injected.rate_limited_without_retry_after += 1;
            }
            return FaultAction::RateLimited {
                retry_after_seconds,
            };
        }
        if take(&mut self.server_errors_next) || roll(rng, self.server_error_rate) {
            const STATUSES: [u16; 3] = [500, 502, 503];
            self.injected.server_errors += 1;
            return FaultAction::ServerError(STATUSES[rng.gen_range(0..STATUSES.len())]);
        }
        if is_trigger && (take(&mut self.trigger_502_next) || roll(rng, self.trigger_502_rate)) {
            self.injected.effect_then_502 += 1;
            return FaultAction::EffectThen502;
        }
        if take(&mut self.drop_connection_next) || roll(rng, self.drop_connection_rate) {
            self.injected.dropped += 1;
            return FaultAction::EffectThenDrop;
        }
        FaultAction::None
    }
}

fn take(counter: &mut u32) -> bool {
    if *counter > 0 {
        *counter -= 1;
        true
    } else {
        false
    }
}

fn roll(rng: &mut StdRng, rate: f64) -> bool {
    rate > 0.0 && rng.gen_bool(rate.min(1.0))
}

/// The HTML page a load balancer sends with a 5xx.
pub fn html_error_page(status: u16) -> String {
    let reason = match status {
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Temporarily Unavailable",
        504 => "Gateway Time-out",
        _ => "Error",
    };
    format!(
        "<html>\r\n<head><title>{status} {reason}</title></head>\r\n<body>\r\n<center><h1>{status} {reason}</h1></center>\r\n</body>\r\n</html>\r\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn counters_are_used_up_in_order_and_respect_the_route_filter() {
        let mut rng = StdRng::seed_from_u64(1);
        let mut f = Faults {
            rate_limit_next: 1,
            retry_after_seconds: Some(3),
            trigger_502_next: 1,
            routes: vec!["trigger_run".into()],
            ..Faults::default()
        };
        assert_eq!(f.decide("list_runs", false, &mut rng), FaultAction::None);
        assert_eq!(
            f.decide("trigger_run", true, &mut rng),
            FaultAction::RateLimited {
                retry_after_seconds: Some(3)
            }
        );
        assert_eq!(
            f.decide("trigger_run", true, &mut rng),
            FaultAction::EffectThen502
        );
        assert_eq!(f.decide("trigger_run", true, &mut rng), FaultAction::None);
    }

    #[test]
    fn a_drawn_429_opens_a_burst_and_some_go_without_retry_after() {
        let mut rng = StdRng::seed_from_u64(7);
        let mut f = Faults {
            rate_limit_rate: 1.0,
            rate_limit_burst: 3,
            retry_after_seconds: Some(5),
            retry_after_missing_rate: 0.5,
            ..Faults::default()
        };
        assert!(matches!(
            f.decide("list_runs", false, &mut rng),
            FaultAction::RateLimited { .. }
        ));
        assert_eq!(
            f.rate_limit_next, 2,
            "the burst continues for two more requests"
        );
        f.rate_limit_rate = 0.0;
        let rest: Vec<FaultAction> = (0..3)
            .map(|_| f.decide("list_runs", false, &mut rng))
            .collect();
        assert!(matches!(rest[0], FaultAction::RateLimited { .. }));
        assert!(matches!(rest[1], FaultAction::RateLimited { .. }));
        assert_eq!(rest[2], FaultAction::None, "the burst is over");
        assert_eq!(f.injected.rate_limited, 3);

        let mut with = 0;
        let mut without = 0;
        let without_before = f.injected.rate_limited_without_retry_after;
        f.rate_limit_burst = 0;
        for _ in 0..200 {
            f.rate_limit_next = 1;
            match f.decide("list_runs", false, &mut rng) {
                FaultAction::RateLimited {
                    retry_after_seconds: Some(5),
                } => with += 1,
                FaultAction::RateLimited {
                    retry_after_seconds: None,
                } => without += 1,
                other => panic!("{other:?}"),
            }
        }
        assert!(with > 50 && without > 50, "{with} with, {without} without");
        assert_eq!(
            f.injected.rate_limited_without_retry_after,
            without_before + without
        );
    }

    #[test]
    fn injected_faults_are_tallied_by_kind() {
        let mut rng = StdRng::seed_from_u64(3);
        let mut f = Faults {
            server_errors_next: 2,
            trigger_502_next: 1,
            drop_connection_next: 1,
            ..Faults::default()
        };
        for _ in 0..5 {
            f.decide("trigger_run", true, &mut rng);
        }
        assert_eq!(
            f.injected,
            Injected {
                server_errors: 2,
                effect_then_502: 1,
                dropped: 1,
                ..Injected::default()
            }
        );
    }
}
