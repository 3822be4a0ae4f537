//! Fault injection: added latency, 500/502/503 with HTML bodies, 429 bursts with or without
//! `Retry-After`, a trigger that queues its run and still answers 502, a connection dropped
//! mid-response. Settings come from the scenario and can be replaced while the emulator runs.

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
    /// Sent as `Retry-After` with every 429; no header when absent.
    pub retry_after_seconds: Option<u64>,
    /// The next N triggers (`run/`, `rerun/`, `retry/`) queue their run, then answer 502.
    pub trigger_502_next: u32,
    pub trigger_502_rate: f64,
    /// The next N requests take effect, then lose their connection mid-response.
    pub drop_connection_next: u32,
    pub drop_connection_rate: f64,
    /// Only these routes (see `routes::Route::name`) suffer the faults; every API route when empty.
    pub routes: Vec<String>,
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
        if take(&mut self.rate_limit_next) || roll(rng, self.rate_limit_rate) {
            return FaultAction::RateLimited {
                retry_after_seconds: self.retry_after_seconds,
            };
        }
        if take(&mut self.server_errors_next) || roll(rng, self.server_error_rate) {
            const STATUSES: [u16; 3] = [500, 502, 503];
            return FaultAction::ServerError(STATUSES[rng.gen_range(0..STATUSES.len())]);
        }
        if is_trigger && (take(&mut self.trigger_502_next) || roll(rng, self.trigger_502_rate)) {
            return FaultAction::EffectThen502;
        }
        if take(&mut self.drop_connection_next) || roll(rng, self.drop_connection_rate) {
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
}
