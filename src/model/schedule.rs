//! SHIM (replaced by the foundation branch): cron in a time zone.

use super::pipeline::ScheduleSpec;
use chrono::{DateTime, Utc};

#[derive(Debug, Clone)]
pub struct Schedule {
    spec: ScheduleSpec,
    cron: croner::Cron,
}

#[derive(Debug, thiserror::Error)]
#[error("bad cron: {0}")]
pub struct ScheduleError(String);

impl Schedule {
    pub fn new(spec: &ScheduleSpec) -> Result<Self, ScheduleError> {
        let cron = croner::parser::CronParser::new()
            .parse(&spec.cron)
            .map_err(|e| ScheduleError(e.to_string()))?;
        Ok(Self {
            spec: spec.clone(),
            cron,
        })
    }

    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let local = after.with_timezone(&self.spec.timezone);
        self.cron
            .find_next_occurrence(&local, false)
            .ok()
            .map(|t| t.with_timezone(&Utc))
    }

    pub fn previous_before(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let local = t.with_timezone(&self.spec.timezone);
        self.cron
            .find_previous_occurrence(&local, false)
            .ok()
            .map(|t| t.with_timezone(&Utc))
    }

    pub fn ticks_between(
        &self,
        after: DateTime<Utc>,
        until: DateTime<Utc>,
        max: usize,
    ) -> Vec<DateTime<Utc>> {
        let mut out = Vec::new();
        let mut t = after;
        while out.len() < max {
            match self.next_after(t) {
                Some(n) if n <= until => {
                    out.push(n);
                    t = n;
                }
                _ => break,
            }
        }
        out
    }
}
