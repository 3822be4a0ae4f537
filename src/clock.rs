//! The only reader of wall-clock time: a `Clock` trait with the system clock and a manual clock for
//! time-warped tests.

use chrono::{DateTime, Utc};
use std::fmt;
use std::sync::{Arc, Mutex};
use tokio::sync::watch;

/// A source of "now". Everything that needs the current time receives one of these.
pub trait Clock: Send + Sync + fmt::Debug + 'static {
    fn now(&self) -> DateTime<Utc>;

    /// Sleeps until `deadline` on this clock's time line. A manual clock wakes when a test advances
    /// it past the deadline; the system clock sleeps in real time.
    fn sleep_until(
        &self,
        deadline: DateTime<Utc>,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + '_>>;
}

/// Shared handle to a clock.
pub type SharedClock = Arc<dyn Clock>;

/// The real wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    #[allow(clippy::disallowed_methods)]
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }

    fn sleep_until(
        &self,
        deadline: DateTime<Utc>,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + '_>> {
        Box::pin(async move {
            let wait = (deadline - self.now()).to_std().unwrap_or_default();
            tokio::time::sleep(wait).await;
        })
    }
}

/// A clock that only moves when told to. Sleepers wake as soon as the time passes their deadline.
#[derive(Debug, Clone)]
pub struct ManualClock {
    inner: Arc<Mutex<DateTime<Utc>>>,
    changed: watch::Sender<DateTime<Utc>>,
}

impl ManualClock {
    pub fn new(start: DateTime<Utc>) -> Self {
        let (changed, _) = watch::channel(start);
        Self {
            inner: Arc::new(Mutex::new(start)),
            changed,
        }
    }

    /// Moves time forward by `by` and wakes every sleeper whose deadline has passed.
    pub fn advance(&self, by: chrono::Duration) {
        let now = {
            let mut guard = self.inner.lock().unwrap_or_else(|p| p.into_inner());
            *guard += by;
            *guard
        };
        self.changed.send_replace(now);
    }

    /// Sets the time to `to` (never backwards) and wakes sleepers.
    pub fn set(&self, to: DateTime<Utc>) {
        let now = {
            let mut guard = self.inner.lock().unwrap_or_else(|p| p.into_inner());
            if to > *guard {
                *guard = to;
            }
            *guard
        };
        self.changed.send_replace(now);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn sleep_until(
        &self,
        deadline: DateTime<Utc>,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + '_>> {
        let mut rx = self.changed.subscribe();
        Box::pin(async move {
            loop {
                if *rx.borrow_and_update() >= deadline {
                    return;
                }
                if rx.changed().await.is_err() {
                    return;
                }
            }
        })
    }
}

/// A clock that runs `speed` times faster than real time from a starting instant, for demos and
/// the emulator's `--speed`.
#[derive(Debug, Clone, Copy)]
pub struct ScaledClock {
    origin_real: DateTime<Utc>,
    origin_virtual: DateTime<Utc>,
    speed: f64,
}

impl ScaledClock {
    #[allow(clippy::disallowed_methods)]
    pub fn new(speed: f64) -> Self {
        let now = Utc::now();
        Self {
            origin_real: now,
            origin_virtual: now,
            speed: speed.max(0.001),
        }
    }
}

impl ScaledClock {
    /// A time line on which `virtual_origin` was "now" at the real instant `real_origin`, running
    /// `speed` times faster. Two processes built with the same three values share one time line,
    /// and a restarted process finds the time line where it left it: a testing and demo aid
    /// (`--clock-epoch`, `--clock-start`, `--clock-speed` on `baton run` and `baton emulator`).
    pub fn anchored(real_origin: DateTime<Utc>, virtual_origin: DateTime<Utc>, speed: f64) -> Self {
        Self {
            origin_real: real_origin,
            origin_virtual: virtual_origin,
            speed: if speed.is_finite() {
                speed.max(0.001)
            } else {
                1.0
            },
        }
    }

    pub fn speed(&self) -> f64 {
        self.speed
    }
}

impl Clock for ScaledClock {
    #[allow(clippy::disallowed_methods)]
    fn now(&self) -> DateTime<Utc> {
        let real = Utc::now() - self.origin_real;
        let micros = (real.num_microseconds().unwrap_or(i64::MAX) as f64 * self.speed) as i64;
        self.origin_virtual + chrono::Duration::microseconds(micros)
    }

    fn sleep_until(
        &self,
        deadline: DateTime<Utc>,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + '_>> {
        Box::pin(async move {
            let virtual_wait = (deadline - self.now()).to_std().unwrap_or_default();
            tokio::time::sleep(virtual_wait.div_f64(self.speed)).await;
        })
    }
}

/// A testing and demo aid, hidden from `--help`: run on a fast time line anchored at a fixed real
/// instant, so that `baton run` and `baton emulator` started with the same values (each as its own
/// process) agree on the time, and a restarted daemon finds the time line where it left it.
/// Never for production: every schedule, timeout and backoff runs `--clock-speed` times faster.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ClockArgs {
    /// The real instant (RFC 3339) at which the fast time line reads `--clock-start`.
    #[arg(long, hide = true, requires = "clock_speed")]
    pub clock_epoch: Option<chrono::DateTime<chrono::Utc>>,
    /// How many times faster than real time the time line runs.
    #[arg(long, hide = true, requires = "clock_epoch")]
    pub clock_speed: Option<f64>,
    /// The time the time line reads at `--clock-epoch` (default: the epoch itself).
    #[arg(long, hide = true, requires = "clock_epoch")]
    pub clock_start: Option<chrono::DateTime<chrono::Utc>>,
}

impl ClockArgs {
    /// The anchored scaled clock the flags describe, or `None` when they are absent.
    pub fn scaled(&self) -> anyhow::Result<Option<ScaledClock>> {
        let (Some(epoch), Some(speed)) = (self.clock_epoch, self.clock_speed) else {
            return Ok(None);
        };
        if !(speed.is_finite() && speed > 0.0) {
            anyhow::bail!("--clock-speed must be a number above 0, not {speed}");
        }
        Ok(Some(ScaledClock::anchored(
            epoch,
            self.clock_start.unwrap_or(epoch),
            speed,
        )))
    }

    /// The clock the flags describe, the system clock when they are absent.
    pub fn clock(&self) -> anyhow::Result<SharedClock> {
        Ok(match self.scaled()? {
            Some(scaled) => {
                tracing::warn!(
                    speed = scaled.speed(),
                    "running on a scaled test clock (--clock-epoch): not for production"
                );
                std::sync::Arc::new(scaled)
            }
            None => std::sync::Arc::new(SystemClock),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn anchored_clocks_built_alike_share_one_time_line() {
        let real = SystemClock.now() - chrono::Duration::seconds(10);
        let start = DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let a = ScaledClock::anchored(real, start, 60.0);
        let b = ScaledClock::anchored(real, start, 60.0);
        let (first, second) = (a.now(), b.now());
        // Ten real seconds at 60x: about ten virtual minutes past the start, on both clocks.
        assert!(first >= start + chrono::Duration::minutes(10), "{first}");
        assert!(second >= first);
        assert!(
            second - first < chrono::Duration::minutes(1),
            "{first} {second}"
        );
    }

    #[tokio::test]
    async fn manual_clock_wakes_sleepers_when_advanced_past_deadline() {
        let start = DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let clock = ManualClock::new(start);
        let sleeper = {
            let clock = clock.clone();
            tokio::spawn(async move {
                clock
                    .sleep_until(start + chrono::Duration::seconds(10))
                    .await;
                clock.now()
            })
        };
        clock.advance(chrono::Duration::seconds(5));
        tokio::task::yield_now().await;
        assert!(!sleeper.is_finished());
        clock.advance(chrono::Duration::seconds(5));
        let woke_at = sleeper.await.unwrap();
        assert_eq!(woke_at, start + chrono::Duration::seconds(10));
    }
}
