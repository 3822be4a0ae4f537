//! What memory keeps of each archived pipeline run, compactly: the run's id as (pipeline number,
//! logical second) instead of a string, since an id is a pipeline name and a logical date and the
//! history holds millions of them over a retention period.

use super::state::{ArchivedRun, PipelineRunId};
use crate::model::pipeline::PipelineName;
use chrono::{DateTime, NaiveDate, Utc};
use rustc_hash::FxHashMap;

/// Archived runs by id. Ids of the plain form (`PipelineRunId::new`, a logical date from 1970 to
/// 2106) take 24 bytes a run and nothing on the heap; any other (a backfill's reprocessed run)
/// is kept whole.
#[derive(Debug, Clone, Default)]
pub struct Archive {
    /// Pipeline names by number, and numbers by name (numbers are never reused).
    names: Vec<PipelineName>,
    numbers: FxHashMap<String, u32>,
    /// (pipeline number, logical date in seconds since 1970) → the run.
    plain: FxHashMap<(u32, u32), ArchivedRun>,
    other: FxHashMap<PipelineRunId, ArchivedRun>,
}

impl Archive {
    pub fn len(&self) -> usize {
        self.plain.len() + self.other.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Room for `additional` more plain ids.
    pub fn reserve(&mut self, additional: usize) {
        self.plain.reserve(additional);
    }

    pub fn get(&self, id: &PipelineRunId) -> Option<&ArchivedRun> {
        match self.key(id) {
            Some(key) => self.plain.get(&key),
            None => self.other.get(id),
        }
    }

    pub fn contains_key(&self, id: &PipelineRunId) -> bool {
        self.get(id).is_some()
    }

    pub fn insert(&mut self, id: PipelineRunId, run: ArchivedRun) -> Option<ArchivedRun> {
        match plain_parts(&id.0) {
            Some((name, second)) => {
                let number = self.number(name);
                self.plain.insert((number, second), run)
            }
            None => self.other.insert(id, run),
        }
    }

    pub fn remove(&mut self, id: &PipelineRunId) -> Option<ArchivedRun> {
        match self.key(id) {
            Some(key) => self.plain.remove(&key),
            None => self.other.remove(id),
        }
    }

    pub fn values(&self) -> impl Iterator<Item = &ArchivedRun> {
        self.plain.values().chain(self.other.values())
    }

    /// Every id with its run (plain ids are rebuilt: for tools and tests, not hot paths).
    pub fn iter(&self) -> impl Iterator<Item = (PipelineRunId, &ArchivedRun)> {
        self.plain
            .iter()
            .map(|(key, run)| (self.id(*key), run))
            .chain(self.other.iter().map(|(id, run)| (id.clone(), run)))
    }

    pub fn keys(&self) -> impl Iterator<Item = PipelineRunId> + '_ {
        self.iter().map(|(id, _)| id)
    }

    /// The ids of the runs that finished before `cutoff` (only those are rebuilt).
    pub fn finished_before(
        &self,
        cutoff: DateTime<Utc>,
    ) -> impl Iterator<Item = PipelineRunId> + '_ {
        self.plain
            .iter()
            .filter(move |(_, run)| run.finished_at < cutoff)
            .map(|(key, _)| self.id(*key))
            .chain(
                self.other
                    .iter()
                    .filter(move |(_, run)| run.finished_at < cutoff)
                    .map(|(id, _)| id.clone()),
            )
    }

    /// The plain key of an id already numbered; None for another form or an unknown pipeline
    /// (whose runs are then not in `plain`, so looking in `other` answers right).
    fn key(&self, id: &PipelineRunId) -> Option<(u32, u32)> {
        let (name, second) = plain_parts(&id.0)?;
        let number = *self.numbers.get(name)?;
        Some((number, second))
    }

    fn number(&mut self, name: &str) -> u32 {
        if let Some(number) = self.numbers.get(name) {
            return *number;
        }
        let number = u32::try_from(self.names.len()).expect("fewer than 2^32 pipelines");
        self.names.push(PipelineName(name.to_string()));
        self.numbers.insert(name.to_string(), number);
        number
    }

    fn id(&self, (number, second): (u32, u32)) -> PipelineRunId {
        let at = DateTime::from_timestamp(i64::from(second), 0).unwrap_or_default();
        PipelineRunId::new(&self.names[number as usize], at)
    }
}

/// The pipeline name and logical second of an id of the plain form `name@YYYY-MM-DDTHH:MM:SSZ`,
/// exactly as `PipelineRunId::new` writes it (so the id can be rebuilt from them); None for any
/// other form.
fn plain_parts(id: &str) -> Option<(&str, u32)> {
    let (name, date) = id.rsplit_once('@')?;
    let b = date.as_bytes();
    if b.len() != 20
        || b[4] != b'-'
        || b[7] != b'-'
        || b[10] != b'T'
        || b[13] != b':'
        || b[16] != b':'
        || b[19] != b'Z'
    {
        return None;
    }
    let number = |from: usize, to: usize| -> Option<u32> {
        b[from..to].iter().try_fold(0u32, |n, d| {
            d.is_ascii_digit().then(|| n * 10 + u32::from(d - b'0'))
        })
    };
    let year = i32::try_from(number(0, 4)?).ok()?;
    let at = NaiveDate::from_ymd_opt(year, number(5, 7)?, number(8, 10)?)?
        .and_hms_opt(number(11, 13)?, number(14, 16)?, number(17, 19)?)?
        .and_utc();
    let second = u32::try_from(at.timestamp()).ok()?;
    Some((name, second))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::state::PipelineRunState;

    fn run(at: &str) -> ArchivedRun {
        ArchivedRun {
            state: PipelineRunState::Succeeded,
            finished_at: at.parse().unwrap(),
        }
    }

    #[test]
    fn plain_and_other_ids_are_found_rebuilt_and_removed() {
        let nightly = PipelineName("nightly".into());
        let at: DateTime<Utc> = "2026-01-02T03:04:05Z".parse().unwrap();
        let plain = PipelineRunId::new(&nightly, at);
        let reprocessed = PipelineRunId::reprocessed(&nightly, at, "b1");
        let early = PipelineRunId::new(&nightly, "1960-01-01T00:00:00Z".parse().unwrap());
        let odd = PipelineRunId("nightly@2026-01-02T03:04:05.000Z".into());
        let mut archive = Archive::default();
        for (id, end) in [
            (&plain, "2026-01-02T04:00:00Z"),
            (&reprocessed, "2026-01-03T00:00:00Z"),
            (&early, "1960-01-01T01:00:00Z"),
            (&odd, "2026-01-02T05:00:00Z"),
        ] {
            assert!(archive.insert(id.clone(), run(end)).is_none());
        }
        assert_eq!((archive.plain.len(), archive.other.len()), (1, 3));
        assert_eq!(archive.get(&plain), Some(&run("2026-01-02T04:00:00Z")));
        assert!(archive.contains_key(&odd) && archive.contains_key(&early));
        assert!(!archive.contains_key(&PipelineRunId::new(&PipelineName("other".into()), at)));
        let mut ids: Vec<_> = archive.keys().collect();
        ids.sort();
        let mut expected = vec![
            plain.clone(),
            reprocessed.clone(),
            early.clone(),
            odd.clone(),
        ];
        expected.sort();
        assert_eq!(ids, expected);
        let old: Vec<_> = archive
            .finished_before("2026-01-02T04:30:00Z".parse().unwrap())
            .collect();
        assert_eq!(old.len(), 2);
        assert!(old.contains(&plain) && old.contains(&early));
        assert!(archive.remove(&plain).is_some() && archive.remove(&plain).is_none());
        assert_eq!(archive.len(), 3);
    }

    #[test]
    fn a_plain_entry_takes_24_bytes_and_nothing_on_the_heap() {
        assert_eq!(std::mem::size_of::<((u32, u32), ArchivedRun)>(), 24);
        assert_eq!(std::mem::size_of::<(PipelineRunId, ArchivedRun)>(), 40);
    }
}
