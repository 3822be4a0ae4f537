//! The per-account request budget: a token bucket of `requests_per_minute` shared by every client of
//! one dbt Cloud account, and the account-wide cooldown after a 429. Time comes from a `Clock`, so a
//! test with a manual clock decides when waiting requests may go.

use crate::clock::{SharedClock, SystemClock};
use chrono::{DateTime, Utc};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// dbt Cloud documents a five-minute cooldown once an account passes its limit; it does not document
/// `Retry-After`, so without one the whole account waits this long.
pub const DEFAULT_COOLDOWN: Duration = Duration::from_secs(300);

/// A `Retry-After` longer than this is treated as this: a misbehaving proxy must not stall the
/// daemon for days.
pub const MAX_COOLDOWN: Duration = Duration::from_secs(3600);

/// Counters for metrics. Monotonic except `waiting`, which is a gauge.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BudgetStats {
    /// Requests let through (each HTTP attempt, retries included).
    pub requests: u64,
    /// Requests that had to wait for a token or a cooldown before going.
    pub waits: u64,
    /// 429 answers reported to the budget.
    pub rate_limited: u64,
    /// Requests waiting right now.
    pub waiting: u64,
}

/// One per account. The bucket holds at most a minute's worth of requests and refills continuously
/// at `requests_per_minute / 60` a second, so a burst of `requests_per_minute` goes at once and the
/// rest are spread out. Keep the rate well under dbt Cloud's 5,000 a minute: a full bucket plus a
/// minute of refill can send twice the rate within one sliding minute.
pub struct RequestBudget {
    clock: SharedClock,
    requests_per_minute: u32,
    default_cooldown: Duration,
    bucket: Mutex<Bucket>,
    requests: AtomicU64,
    waits: AtomicU64,
    rate_limited: AtomicU64,
    waiting: AtomicU64,
}

struct Bucket {
    tokens: f64,
    refilled_at: DateTime<Utc>,
    cooldown_until: Option<DateTime<Utc>>,
}

impl RequestBudget {
    /// A full bucket of `requests_per_minute` (at least 1) on `clock`.
    pub fn new(requests_per_minute: u32, clock: SharedClock) -> Self {
        let requests_per_minute = requests_per_minute.max(1);
        let now = clock.now();
        Self {
            clock,
            requests_per_minute,
            default_cooldown: DEFAULT_COOLDOWN,
            bucket: Mutex::new(Bucket {
                tokens: f64::from(requests_per_minute),
                refilled_at: now,
                cooldown_until: None,
            }),
            requests: AtomicU64::new(0),
            waits: AtomicU64::new(0),
            rate_limited: AtomicU64::new(0),
            waiting: AtomicU64::new(0),
        }
    }

    /// A budget on the system clock.
    pub fn system(requests_per_minute: u32) -> Self {
        Self::new(requests_per_minute, Arc::new(SystemClock))
    }

    /// Sets how long the account waits after a 429 that carries no `Retry-After`.
    pub fn with_default_cooldown(mut self, cooldown: Duration) -> Self {
        self.default_cooldown = cooldown.min(MAX_COOLDOWN);
        self
    }

    pub fn requests_per_minute(&self) -> u32 {
        self.requests_per_minute
    }

    /// The clock every wait of this account's clients runs on (budget waits, cooldowns, backoff).
    pub fn clock(&self) -> &SharedClock {
        &self.clock
    }

    pub fn stats(&self) -> BudgetStats {
        BudgetStats {
            requests: self.requests.load(Ordering::Relaxed),
            waits: self.waits.load(Ordering::Relaxed),
            rate_limited: self.rate_limited.load(Ordering::Relaxed),
            waiting: self.waiting.load(Ordering::Relaxed),
        }
    }

    /// When a cooldown is in force, its end.
    pub fn cooldown_until(&self) -> Option<DateTime<Utc>> {
        let bucket = self.lock();
        bucket
            .cooldown_until
            .filter(|until| *until > self.clock.now())
    }

    /// Waits until this account may send one more request, then takes its token.
    pub async fn acquire(&self) {
        let mut counted_wait = false;
        loop {
            let wake_at = match self.try_take() {
                None => break,
                Some(wake_at) => wake_at,
            };
            if !counted_wait {
                counted_wait = true;
                self.waits.fetch_add(1, Ordering::Relaxed);
                self.waiting.fetch_add(1, Ordering::Relaxed);
            }
            self.clock.sleep_until(wake_at).await;
        }
        if counted_wait {
            self.waiting.fetch_sub(1, Ordering::Relaxed);
        }
        self.requests.fetch_add(1, Ordering::Relaxed);
    }

    /// Takes a token now, or says when to look again.
    fn try_take(&self) -> Option<DateTime<Utc>> {
        let now = self.clock.now();
        let mut bucket = self.lock();
        if let Some(until) = bucket.cooldown_until {
            if now < until {
                return Some(until);
            }
            bucket.cooldown_until = None;
        }
        let per_second = f64::from(self.requests_per_minute) / 60.0;
        let elapsed = (now - bucket.refilled_at).to_std().unwrap_or_default();
        bucket.tokens = (bucket.tokens + elapsed.as_secs_f64() * per_second)
            .min(f64::from(self.requests_per_minute));
        bucket.refilled_at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            return None;
        }
        let missing = Duration::from_secs_f64((1.0 - bucket.tokens) / per_second);
        // Round up to a whole millisecond so the next look finds the token refilled.
        let wait = chrono::Duration::milliseconds(missing.as_millis() as i64 + 1);
        Some(now + wait)
    }

    /// A 429 arrived: the whole account waits `retry_after` (or the default cooldown) before its
    /// next request. A longer cooldown already in force is kept.
    pub fn on_rate_limited(&self, retry_after: Option<Duration>) {
        self.rate_limited.fetch_add(1, Ordering::Relaxed);
        let wait = retry_after
            .unwrap_or(self.default_cooldown)
            .min(MAX_COOLDOWN);
        let until = self.clock.now()
            + chrono::Duration::from_std(wait).unwrap_or_else(|_| chrono::Duration::seconds(3600));
        let mut bucket = self.lock();
        bucket.cooldown_until = Some(match bucket.cooldown_until {
            Some(existing) if existing > until => existing,
            _ => until,
        });
        tracing::warn!(
            cooldown_secs = wait.as_secs_f64(),
            "dbt Cloud rate limit: the account waits before its next request"
        );
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Bucket> {
        self.bucket.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl std::fmt::Debug for RequestBudget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestBudget")
            .field("requests_per_minute", &self.requests_per_minute)
            .field("default_cooldown", &self.default_cooldown)
            .field("stats", &self.stats())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    fn start() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    #[tokio::test]
    async fn requests_past_the_rate_wait_for_the_clock() {
        let clock = ManualClock::new(start());
        let budget = Arc::new(RequestBudget::new(60, Arc::new(clock.clone())));
        for _ in 0..60 {
            budget.acquire().await;
        }
        assert_eq!(budget.stats().waits, 0);
        let waiter = {
            let budget = budget.clone();
            tokio::spawn(async move { budget.acquire().await })
        };
        while budget.stats().waiting == 0 {
            tokio::task::yield_now().await;
        }
        assert!(!waiter.is_finished());
        clock.advance(chrono::Duration::milliseconds(1100));
        waiter.await.unwrap();
        let stats = budget.stats();
        assert_eq!((stats.requests, stats.waits, stats.waiting), (61, 1, 0));
    }

    #[tokio::test]
    async fn a_429_makes_the_whole_account_wait() {
        let clock = ManualClock::new(start());
        let budget = Arc::new(RequestBudget::new(1000, Arc::new(clock.clone())));
        budget.on_rate_limited(Some(Duration::from_secs(30)));
        assert_eq!(
            budget.cooldown_until(),
            Some(start() + chrono::Duration::seconds(30))
        );
        let waiter = {
            let budget = budget.clone();
            tokio::spawn(async move { budget.acquire().await })
        };
        while budget.stats().waiting == 0 {
            tokio::task::yield_now().await;
        }
        clock.advance(chrono::Duration::seconds(29));
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        clock.advance(chrono::Duration::seconds(1));
        waiter.await.unwrap();
        assert_eq!(budget.stats().rate_limited, 1);
        // Without Retry-After the default cooldown applies.
        budget.on_rate_limited(None);
        assert_eq!(
            budget.cooldown_until(),
            Some(start() + chrono::Duration::seconds(30) + chrono::Duration::seconds(300))
        );
    }
}
