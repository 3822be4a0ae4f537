//! The job ids that job names last resolved to (key: `dbt_cloud::job_names::canonical_key`), so a
//! restart during a dbt Cloud outage still knows which jobs to trigger. A sled tree of its own,
//! rewritten whole after each successful resolution and flushed at once.

use super::{Store, StoreError};
use crate::ids::JobId;
use std::collections::BTreeMap;

const JOB_REFS_TREE: &str = "job_refs";

impl Store {
    /// The ids stored by the last resolution of job names.
    pub fn resolved_jobs(&self) -> Result<BTreeMap<String, JobId>, StoreError> {
        let tree = self
            .db
            .open_tree(JOB_REFS_TREE)
            .map_err(|e| self.write_error(e))?;
        let mut jobs = BTreeMap::new();
        for entry in tree.iter() {
            let (key, value) = entry.map_err(|e| self.write_error(e))?;
            let name = String::from_utf8(key.to_vec())
                .map_err(|e| self.corrupt(JOB_REFS_TREE, &key, e.to_string()))?;
            let id: JobId = serde_json::from_slice(&value)
                .map_err(|e| self.corrupt(JOB_REFS_TREE, &key, e.to_string()))?;
            jobs.insert(name, id);
        }
        Ok(jobs)
    }

    /// Replaces the stored ids with `jobs`, durably.
    pub fn save_resolved_jobs(&self, jobs: &BTreeMap<String, JobId>) -> Result<(), StoreError> {
        let tree = self
            .db
            .open_tree(JOB_REFS_TREE)
            .map_err(|e| self.write_error(e))?;
        let mut batch = sled::Batch::default();
        for entry in tree.iter().keys() {
            let key = entry.map_err(|e| self.write_error(e))?;
            if !jobs.contains_key(String::from_utf8_lossy(&key).as_ref()) {
                batch.remove(key);
            }
        }
        for (key, id) in jobs {
            let value = serde_json::to_vec(id).map_err(|e| StoreError::Write {
                dir: self.dir.clone(),
                message: e.to_string(),
            })?;
            batch.insert(key.as_bytes(), value);
        }
        tree.apply_batch(batch).map_err(|e| self.write_error(e))?;
        self.db.flush().map_err(|e| self.write_error(e))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolved_ids_survive_a_reopen_and_a_save_replaces_them() {
        let dir = tempfile::tempdir().unwrap();
        let first = BTreeMap::from([
            ("default/*/*/[nightly] marts".to_string(), JobId(11)),
            ("emea/7/*/exports".to_string(), JobId(12)),
        ]);
        {
            let store = Store::open(dir.path()).unwrap();
            assert!(store.resolved_jobs().unwrap().is_empty());
            store.save_resolved_jobs(&first).unwrap();
        }
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.resolved_jobs().unwrap(), first);
        let second = BTreeMap::from([("default/*/*/[nightly] marts".to_string(), JobId(21))]);
        store.save_resolved_jobs(&second).unwrap();
        assert_eq!(store.resolved_jobs().unwrap(), second);
    }
}
