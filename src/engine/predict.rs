//! Polling that predicts: each job's recent run durations (a small window per job of an account,
//! learned from the runs the engine saw succeed) and the per-run poll schedule built from them. A run is looked
//! at around its expected end; the fixed `poll_interval` stays the fallback for jobs without
//! history and the longest wait between two looks at any run. Pure data: `now` comes in.

use crate::ids::{AccountName, JobId, RunId};
use chrono::{DateTime, Duration, Utc};
use rustc_hash::FxHashMap;
use std::collections::BTreeSet;

/// Durations remembered per job: enough to see its spread, small enough for 50,000 jobs.
const WINDOW: usize = 5;
/// Looks spread over a run's expected window (fewer when the window is narrow).
const LOOKS_IN_WINDOW: i32 = 4;
/// Shortest wait between two looks at one run: a run is found at most this late inside its
/// window, and a window of many runs costs a request this often.
const MIN_GAP: Duration = Duration::seconds(2);
/// Shortest margin around the learned range.
const MIN_MARGIN: Duration = Duration::milliseconds(500);
/// Runs due this soon after the earliest due one share its request.
pub const COALESCE: Duration = Duration::seconds(1);

/// The last `WINDOW` durations of one job, in milliseconds (a ring).
#[derive(Debug, Clone, Copy, Default)]
struct Window {
    ms: [u32; WINDOW],
    len: u8,
    next: u8,
}

impl Window {
    fn push(&mut self, ms: u32) {
        self.ms[self.next as usize] = ms;
        self.next = ((self.next as usize + 1) % WINDOW) as u8;
        self.len = (self.len + 1).min(WINDOW as u8);
    }

    fn samples(&self) -> &[u32] {
        &self.ms[..self.len as usize]
    }
}

/// When a run of a job is expected to end, counted from when dbt Cloud accepted its trigger.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expected {
    pub earliest: Duration,
    pub latest: Duration,
}

/// Each job's recent durations (successful runs only: a failure's length says little about the
/// next success), per account: job ids are numbered by each account, so two accounts' job 7 are
/// two jobs.
#[derive(Debug, Default)]
pub struct Durations {
    by_account: FxHashMap<AccountName, FxHashMap<JobId, Window>>,
}

impl Durations {
    pub fn record(&mut self, account: &AccountName, job: JobId, took: Duration) {
        let ms = took.num_milliseconds();
        if ms <= 0 {
            return;
        }
        let ms = u32::try_from(ms).unwrap_or(u32::MAX);
        let jobs = match self.by_account.get_mut(account) {
            Some(jobs) => jobs,
            None => self.by_account.entry(account.clone()).or_default(),
        };
        jobs.entry(job).or_default().push(ms);
    }

    /// The learned range widened by a margin: a tenth of the median while there are fewer than
    /// three samples (one run says little about the spread), a twentieth after.
    pub fn expected(&self, account: &AccountName, job: JobId) -> Option<Expected> {
        let window = self.by_account.get(account)?.get(&job)?;
        let mut samples = window.samples().to_vec();
        if samples.is_empty() {
            return None;
        }
        samples.sort_unstable();
        let lo = Duration::milliseconds(i64::from(samples[0]));
        let hi = Duration::milliseconds(i64::from(samples[samples.len() - 1]));
        let median = Duration::milliseconds(i64::from(samples[samples.len() / 2]));
        let share = if samples.len() < 3 { 10 } else { 20 };
        let margin = (median / share).max(MIN_MARGIN);
        Some(Expected {
            earliest: (lo - margin).max(Duration::zero()),
            latest: hi + margin,
        })
    }

    pub fn jobs(&self) -> usize {
        self.by_account.values().map(FxHashMap::len).sum()
    }
}

/// When to look next at a run accepted at `accepted`, after a look at `now`: before its expected
/// window at the fallback interval (a run may fail early) but no later than the window's start;
/// inside it every `gap` (the window split in `LOOKS_IN_WINDOW`, between `MIN_GAP` and half the
/// interval, a whole number of `MIN_GAP`s); after it, or without history, at the fallback
/// interval. Looks inside a window land on a grid of `gap` counted from the Unix epoch, which all
/// runs share: runs whose windows overlap are looked at by the same requests, however their
/// windows are offset, so many runs in their windows cost one request per `MIN_GAP` at most.
pub fn next_look(
    expected: Option<Expected>,
    accepted: DateTime<Utc>,
    now: DateTime<Utc>,
    interval: Duration,
) -> DateTime<Utc> {
    let fallback = now + interval;
    let Some(e) = expected else {
        return fallback;
    };
    let start = accepted + e.earliest;
    let end = accepted + e.latest;
    let gap = window_gap(e, interval);
    if now < start {
        return fallback.min(on_grid(start, gap));
    }
    if now < end {
        return on_grid(now + gap / 2, gap);
    }
    fallback
}

/// The wait between two looks inside a window, a whole number of `MIN_GAP`s.
fn window_gap(e: Expected, interval: Duration) -> Duration {
    let gap = ((e.latest - e.earliest) / LOOKS_IN_WINDOW)
        .max(MIN_GAP)
        .min((interval / 2).max(MIN_GAP));
    let unit = MIN_GAP.num_milliseconds();
    let units = (gap.num_milliseconds() + unit - 1) / unit;
    Duration::milliseconds(units * unit)
}

/// The first instant at or after `t` that is a whole number of `gap`s since the Unix epoch.
fn on_grid(t: DateTime<Utc>, gap: Duration) -> DateTime<Utc> {
    let step = gap.num_milliseconds().max(1);
    let ms = t.timestamp_millis();
    let up = ms.div_euclid(step) * step + if ms.rem_euclid(step) == 0 { 0 } else { step };
    DateTime::from_timestamp_millis(up).unwrap_or(t)
}

/// When each watched run is next due for a look, in time order.
#[derive(Debug, Default)]
pub struct PollSchedule {
    due: FxHashMap<RunId, DateTime<Utc>>,
    queue: BTreeSet<(DateTime<Utc>, RunId)>,
}

impl PollSchedule {
    pub fn set(&mut self, run: RunId, at: DateTime<Utc>) {
        if let Some(old) = self.due.insert(run, at) {
            self.queue.remove(&(old, run));
        }
        self.queue.insert((at, run));
    }

    pub fn remove(&mut self, run: RunId) {
        if let Some(old) = self.due.remove(&run) {
            self.queue.remove(&(old, run));
        }
    }

    /// The earliest due look.
    pub fn next(&self) -> Option<DateTime<Utc>> {
        self.queue.first().map(|(at, _)| *at)
    }

    pub fn due_at(&self, run: RunId) -> Option<DateTime<Utc>> {
        self.due.get(&run).copied()
    }

    /// The runs due by `now` (and those due within `COALESCE` after it, which would otherwise
    /// cost a request of their own a moment later), then, since a request reads up to `page` runs,
    /// the soonest due others until the last request is full. Sorted by id.
    pub fn batch(&self, now: DateTime<Utc>, page: usize) -> Vec<RunId> {
        let horizon = now + COALESCE;
        let due = self
            .queue
            .iter()
            .take_while(|(at, _)| *at <= horizon)
            .count();
        let page = page.max(1);
        let wanted = due.div_ceil(page) * page;
        let mut runs: Vec<RunId> = self.queue.iter().take(wanted).map(|(_, r)| *r).collect();
        runs.sort_unstable();
        runs
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: i64) -> Duration {
        Duration::seconds(s)
    }

    fn t0() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
            .unwrap()
            .to_utc()
    }

    fn default_account() -> AccountName {
        AccountName::default()
    }

    #[test]
    fn the_window_keeps_the_newest_durations_and_widens_by_a_margin() {
        let a = default_account();
        let mut d = Durations::default();
        assert_eq!(d.expected(&a, JobId(1)), None);
        d.record(&a, JobId(1), secs(30));
        assert_eq!(
            d.expected(&a, JobId(1)),
            Some(Expected {
                earliest: secs(27),
                latest: secs(33)
            })
        );
        for s in [100, 100, 100, 100, 28, 30, 32, 29, 31] {
            d.record(&a, JobId(1), secs(s));
        }
        let e = d.expected(&a, JobId(1)).unwrap();
        assert_eq!(e.earliest, secs(28) - Duration::milliseconds(1500));
        assert_eq!(e.latest, secs(32) + Duration::milliseconds(1500));
        d.record(&a, JobId(2), Duration::zero());
        assert_eq!(d.expected(&a, JobId(2)), None);
    }

    #[test]
    fn the_same_job_id_in_two_accounts_is_two_jobs() {
        let (a, b) = (default_account(), AccountName("emea".into()));
        let mut d = Durations::default();
        d.record(&a, JobId(7), secs(30));
        assert_eq!(d.expected(&b, JobId(7)), None);
        d.record(&b, JobId(7), secs(300));
        assert_eq!(d.expected(&a, JobId(7)).unwrap().latest, secs(33));
        assert_eq!(d.expected(&b, JobId(7)).unwrap().latest, secs(330));
        assert_eq!(d.jobs(), 2);
    }

    #[test]
    fn looks_wait_for_the_window_then_come_often_then_fall_back() {
        let e = Some(Expected {
            earliest: secs(27),
            latest: secs(33),
        });
        let accepted = t0();
        let interval = secs(10);
        assert_eq!(next_look(e, accepted, t0(), interval), t0() + secs(10));
        // The window opens at 27 s; its looks fall on the shared 2 s grid.
        assert_eq!(
            next_look(e, accepted, t0() + secs(20), interval),
            t0() + secs(28)
        );
        assert_eq!(
            next_look(e, accepted, t0() + secs(28), interval),
            t0() + secs(30)
        );
        assert_eq!(
            next_look(e, accepted, t0() + Duration::milliseconds(28_300), interval),
            t0() + secs(30)
        );
        assert_eq!(
            next_look(e, accepted, t0() + secs(33), interval),
            t0() + secs(43)
        );
        assert_eq!(
            next_look(None, accepted, t0() + secs(5), interval),
            t0() + secs(15)
        );
    }

    #[test]
    fn a_batch_takes_the_due_runs_and_fills_its_last_request() {
        let mut s = PollSchedule::default();
        s.set(RunId(1), t0() + secs(5));
        s.set(RunId(2), t0());
        s.set(RunId(3), t0() + Duration::milliseconds(800));
        s.set(RunId(4), t0() + secs(9));
        s.set(RunId(2), t0() + secs(1));
        assert_eq!(s.next(), Some(t0() + Duration::milliseconds(800)));
        assert_eq!(s.batch(t0(), 2), vec![RunId(2), RunId(3)]);
        assert_eq!(
            s.batch(t0() + secs(4), 3),
            vec![RunId(1), RunId(2), RunId(3)]
        );
        assert_eq!(s.batch(t0(), 100).len(), 4);
        s.remove(RunId(3));
        assert_eq!(s.next(), Some(t0() + secs(1)));
        assert_eq!(s.due_at(RunId(3)), None);
    }
}
