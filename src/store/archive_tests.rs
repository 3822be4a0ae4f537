//! The store's archive and its reading of schema-1 directories.

use super::*;
use crate::engine::state::{PipelineRun, PipelineRunState};

fn run(date: &str, definition: &Arc<Pipeline>) -> PipelineRun {
    super::records::tests::run(definition.clone(), date)
}

fn nightly() -> Arc<Pipeline> {
    super::records::tests::pipeline()
}

#[test]
fn an_archived_run_is_an_index_entry_at_load_and_a_record_on_demand() {
    let dir = tempfile::tempdir().unwrap();
    let def = nightly();
    let old = run("2026-01-01T00:00:00Z", &def);
    let recent = run("2026-01-02T00:00:00Z", &def);
    {
        let store = Store::open(dir.path()).unwrap();
        store
            .commit(&[
                Write::Run(Box::new(old.clone())),
                Write::Run(Box::new(recent.clone())),
            ])
            .unwrap();
        store
            .commit(&[Write::Archive(Box::new(old.clone()))])
            .unwrap();
        assert_eq!(store.definitions.len(), 1, "one definition for both runs");
    }
    let store = Store::open(dir.path()).unwrap();
    let state = store.load().unwrap();
    assert_eq!(state.runs.keys().collect::<Vec<_>>(), vec![&recent.id]);
    assert_eq!(state.archived[&old.id].state, PipelineRunState::Succeeded);
    assert_eq!(
        state.archived_last_success[&def.name],
        old.finished_at.unwrap()
    );
    let reader = store.history_reader();
    assert_eq!(reader.get(&old.id).unwrap(), old);
    assert_eq!(reader.newest(&def.name, 5), vec![old.clone()]);
    assert_eq!(store.load_everything().unwrap().runs.len(), 2);

    store.commit(&[Write::DeleteRun(old.id.clone())]).unwrap();
    assert!(store.load().unwrap().archived.is_empty());
    assert!(reader.get(&old.id).is_none());
    drop(store);
    assert!(
        reader.all().is_empty(),
        "a reader reads nothing once the store is closed"
    );
    let again = Store::open(dir.path());
    assert!(again.is_ok(), "a reader left behind does not hold the lock");
}

#[test]
fn a_schema_1_directory_is_read_and_upgraded() {
    let dir = tempfile::tempdir().unwrap();
    let def = nightly();
    let old = run("2026-01-01T00:00:00Z", &def);
    {
        let store = Store::open(dir.path()).unwrap();
        let meta = store.db.open_tree(META_TREE).unwrap();
        meta.insert(SCHEMA_KEY, "1".as_bytes()).unwrap();
        // Schema 1 wrote the definition inside each run record.
        store
            .runs
            .insert(old.id.0.as_bytes(), serde_json::to_vec(&old).unwrap())
            .unwrap();
        store.db.flush().unwrap();
    }
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(store.load().unwrap().runs[&old.id], old);
    let meta = store.db.open_tree(META_TREE).unwrap();
    assert_eq!(&*meta.get(SCHEMA_KEY).unwrap().unwrap(), b"2");
}
