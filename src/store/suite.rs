//! The store test suite every backend must pass: each case takes `open`, which opens the same
//! (initially empty) database each time it is called.

use super::{Store, StoreError};
use crate::engine::state::{PipelineRunState, ScheduleCursor, Write};
use crate::model::pipeline::PipelineName;
use std::collections::BTreeMap;

pub(crate) type Open<'a> = &'a dyn Fn() -> Result<Store, StoreError>;
/// One case of the suite.
type Case = fn(Open<'_>);
/// Gives a case its own empty database and an opener for it.
pub(crate) type Fresh<'a> = &'a dyn Fn(&dyn Fn(Open<'_>));

fn run(date: &str) -> crate::engine::state::PipelineRun {
    super::records::tests::run(super::records::tests::pipeline(), date)
}

fn nightly() -> PipelineName {
    PipelineName("nightly".into())
}

pub(crate) fn an_empty_store_loads_empty(open: Open<'_>) {
    let state = open().unwrap().load().unwrap();
    assert!(state.runs.is_empty() && state.archived.is_empty() && state.cursors.is_empty());
}

pub(crate) fn commits_survive_a_reopen(open: Open<'_>) {
    let first = run("2026-01-01T00:00:00Z");
    {
        let store = open().unwrap();
        store
            .commit(&[
                Write::Run(Box::new(first.clone())),
                Write::Cursor(
                    nightly(),
                    ScheduleCursor {
                        last_tick: None,
                        paused: true,
                    },
                ),
            ])
            .unwrap();
    }
    let state = open().unwrap().load().unwrap();
    assert_eq!(state.runs[&first.id], first);
    assert!(state.cursors[&nightly()].paused);
}

pub(crate) fn a_deferred_commit_is_read_back_and_made_durable_by_an_empty_full_one(open: Open<'_>) {
    let store = open().unwrap();
    let deferred = run("2026-01-03T00:00:00Z");
    store
        .commit_with(
            &[Write::Run(Box::new(deferred.clone()))],
            super::Durability::Deferred,
        )
        .unwrap();
    store.commit(&[]).unwrap();
    assert_eq!(store.load().unwrap().runs[&deferred.id], deferred);
}

pub(crate) fn archived_runs_are_summaries_at_load_and_records_on_demand(open: Open<'_>) {
    let old = run("2026-01-01T00:00:00Z");
    let recent = run("2026-01-02T00:00:00Z");
    let store = open().unwrap();
    store
        .commit(&[
            Write::Run(Box::new(old.clone())),
            Write::Run(Box::new(recent.clone())),
        ])
        .unwrap();
    store
        .commit(&[Write::Archive(Box::new(old.clone()))])
        .unwrap();
    drop(store);
    let store = open().unwrap();
    let state = store.load().unwrap();
    assert_eq!(state.runs.keys().collect::<Vec<_>>(), vec![&recent.id]);
    assert_eq!(
        state.archived.get(&old.id).unwrap().state,
        PipelineRunState::Succeeded
    );
    assert_eq!(
        state.archived_last_success[&nightly()],
        old.finished_at.unwrap()
    );
    let reader = store.history_reader();
    assert_eq!(reader.get(&old.id).unwrap(), old);
    assert_eq!(reader.newest(&nightly(), 5), vec![old.clone()]);
    assert!(reader.newest(&PipelineName("other".into()), 5).is_empty());
    assert_eq!(store.load_everything().unwrap().runs.len(), 2);
    // A retried archived run is written back to the runs in memory and wins at load.
    let mut retried = old.clone();
    retried.state = PipelineRunState::Running;
    store
        .commit(&[Write::Run(Box::new(retried.clone()))])
        .unwrap();
    assert_eq!(store.load().unwrap().runs[&old.id], retried);
    drop(store);
    assert!(
        reader.all().is_empty(),
        "a reader reads nothing once the store is closed"
    );
}

pub(crate) fn history_reads_newest_first_within_a_limit(open: Open<'_>) {
    let store = open().unwrap();
    let days: Vec<_> = (1..=9)
        .map(|d| run(&format!("2026-01-0{d}T00:00:00Z")))
        .collect();
    let writes: Vec<Write> = days
        .iter()
        .map(|r| Write::Archive(Box::new(r.clone())))
        .collect();
    store.commit(&writes).unwrap();
    let newest = store.history_reader().newest(&nightly(), 3);
    let dates: Vec<_> = newest.iter().map(|r| r.logical_date).collect();
    assert_eq!(
        dates,
        vec![
            days[8].logical_date,
            days[7].logical_date,
            days[6].logical_date
        ]
    );
}

pub(crate) fn retention_deletes_forget_runs_everywhere(open: Open<'_>) {
    let store = open().unwrap();
    let archived = run("2026-01-01T00:00:00Z");
    let held = run("2026-01-02T00:00:00Z");
    store
        .commit(&[
            Write::Archive(Box::new(archived.clone())),
            Write::Run(Box::new(held.clone())),
        ])
        .unwrap();
    store
        .commit(&[
            Write::DeleteRun(archived.id.clone()),
            Write::DeleteRun(held.id.clone()),
        ])
        .unwrap();
    let state = store.load().unwrap();
    assert!(state.runs.is_empty() && state.archived.is_empty());
    assert!(store.history_reader().get(&archived.id).is_none());
}

pub(crate) fn resolved_jobs_are_replaced_as_a_whole(open: Open<'_>) {
    let store = open().unwrap();
    let mut jobs = BTreeMap::new();
    jobs.insert("default/1/2/marts".to_string(), crate::ids::JobId(7));
    jobs.insert("default/1/2/seed".to_string(), crate::ids::JobId(8));
    store.save_resolved_jobs(&jobs).unwrap();
    jobs.remove("default/1/2/seed");
    store.save_resolved_jobs(&jobs).unwrap();
    drop(store);
    assert_eq!(open().unwrap().resolved_jobs().unwrap(), jobs);
}

pub(crate) fn a_healthy_store_passes_its_check(open: Open<'_>) {
    let store = open().unwrap();
    store
        .commit(&[Write::Archive(Box::new(run("2026-01-01T00:00:00Z")))])
        .unwrap();
    assert_eq!(store.check().unwrap(), Vec::<String>::new());
}

pub(crate) fn changed_runs_are_read_from_the_state_they_are_committed_with(open: Open<'_>) {
    let store = open().unwrap();
    let held = run("2026-01-02T00:00:00Z");
    let archived = run("2026-01-01T00:00:00Z");
    let mut state = crate::engine::state::State::default();
    state.runs.insert(held.id.clone(), held.clone());
    let writes = [
        Write::Archive(Box::new(archived.clone())),
        Write::Changed(held.id.clone()),
        Write::Cursor(nightly(), ScheduleCursor::default()),
    ];
    store
        .commit_from(&writes, Some(&state), super::Durability::Full)
        .unwrap();
    let loaded = store.load().unwrap();
    assert_eq!(loaded.runs[&held.id], held);
    assert!(loaded.archived.contains_key(&archived.id));
    assert!(loaded.cursors.contains_key(&nightly()));
    // A changed run with no state to read it from is an error, and writes nothing.
    let other = run("2026-01-03T00:00:00Z");
    assert!(store
        .commit(&[
            Write::Run(Box::new(other.clone())),
            Write::Changed(held.id.clone())
        ])
        .is_err());
    assert!(!store.load().unwrap().runs.contains_key(&other.id));
}

/// Runs every case; `fresh` gives each its own empty database and an opener for it.
pub(crate) fn run_all(fresh: Fresh<'_>) {
    let cases: [(&str, Case); 9] = [
        ("an_empty_store_loads_empty", an_empty_store_loads_empty),
        ("commits_survive_a_reopen", commits_survive_a_reopen),
        (
            "a_deferred_commit_is_read_back_and_made_durable_by_an_empty_full_one",
            a_deferred_commit_is_read_back_and_made_durable_by_an_empty_full_one,
        ),
        (
            "archived_runs_are_summaries_at_load_and_records_on_demand",
            archived_runs_are_summaries_at_load_and_records_on_demand,
        ),
        (
            "history_reads_newest_first_within_a_limit",
            history_reads_newest_first_within_a_limit,
        ),
        (
            "retention_deletes_forget_runs_everywhere",
            retention_deletes_forget_runs_everywhere,
        ),
        (
            "resolved_jobs_are_replaced_as_a_whole",
            resolved_jobs_are_replaced_as_a_whole,
        ),
        (
            "a_healthy_store_passes_its_check",
            a_healthy_store_passes_its_check,
        ),
        (
            "changed_runs_are_read_from_the_state_they_are_committed_with",
            changed_runs_are_read_from_the_state_they_are_committed_with,
        ),
    ];
    for (name, case) in cases {
        eprintln!("store suite: {name}");
        fresh(&|open| case(open));
    }
}
