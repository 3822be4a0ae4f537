//! The PostgreSQL backend on a real throwaway cluster (tests/it/support/pg.rs): the shared store suite,
//! and what only a shared database shows (the leader's fence, a terminated connection, a newer
//! schema, the URL kept out of errors).

#[path = "../../../tests/it/support/pg.rs"]
mod pg_support;

use super::super::{suite, Store, StoreError, Write};
use super::{Fence, PostgresBackend};
use crate::engine::state::ScheduleCursor;
use crate::ha::connect::connect;
use crate::ha::lease::{self, Epoch};
use crate::model::pipeline::PipelineName;
use crate::secret::Secret;
use pg_support::TestPostgres;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

fn open(url: &str, fence: Option<Fence>) -> Result<Store, StoreError> {
    Ok(Store::with_backend(Box::new(PostgresBackend::open(
        &Secret::new(url),
        fence,
    )?)))
}

fn cursor(paused: bool) -> Write {
    Write::Cursor(
        PipelineName("nightly".into()),
        ScheduleCursor {
            last_tick: None,
            paused,
        },
    )
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Takes the lease for `node`, waiting for a live one to lapse.
fn take_lease(url: &str, node: &str, lease_len: Duration) -> Epoch {
    runtime().block_on(async {
        let mut c = connect(&Secret::new(url), "test", Duration::from_secs(10))
            .await
            .unwrap();
        lease::ensure_table(&mut c.client).await.unwrap();
        loop {
            if let Some(epoch) = lease::try_acquire(&c.client, node, "", lease_len)
                .await
                .unwrap()
            {
                return epoch;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
}

#[test]
fn postgres_passes_the_store_suite() {
    let Some(pg) = TestPostgres::start_or_skip("postgres_passes_the_store_suite") else {
        return;
    };
    let n = AtomicUsize::new(0);
    suite::run_all(&|case| {
        let url = pg.create_database(&format!("suite_{}", n.fetch_add(1, Ordering::Relaxed)));
        case(&|| open(&url, None));
    });
}

#[test]
fn a_deposed_leaders_write_is_refused_and_changes_nothing() {
    let Some(pg) =
        TestPostgres::start_or_skip("a_deposed_leaders_write_is_refused_and_changes_nothing")
    else {
        return;
    };
    let url = pg.url();
    let epoch_a = take_lease(&url, "a", Duration::from_secs(2));
    let a = open(
        &url,
        Some(Fence {
            node: "a".into(),
            epoch: epoch_a,
            lease: Duration::from_secs(2),
        }),
    )
    .unwrap();
    a.commit(&[cursor(false)]).unwrap();
    let epoch_b = take_lease(&url, "b", Duration::from_secs(30));
    let err = a.commit(&[cursor(true)]).unwrap_err();
    assert!(
        matches!(err, StoreError::Fenced { epoch, .. } if epoch == epoch_a.0),
        "{err:?}"
    );
    assert!(err.to_string().contains("no longer the leader"), "{err}");
    let b = open(
        &url,
        Some(Fence {
            node: "b".into(),
            epoch: epoch_b,
            lease: Duration::from_secs(30),
        }),
    )
    .unwrap();
    let state = b.load().unwrap();
    assert!(!state.cursors[&PipelineName("nightly".into())].paused);
    b.commit(&[cursor(true)]).unwrap();
    assert!(a.load().unwrap().cursors[&PipelineName("nightly".into())].paused);
}

#[test]
fn the_writer_reconnects_after_its_connection_is_terminated() {
    let Some(pg) =
        TestPostgres::start_or_skip("the_writer_reconnects_after_its_connection_is_terminated")
    else {
        return;
    };
    let store = open(&pg.url(), None).unwrap();
    store.commit(&[cursor(false)]).unwrap();
    assert_eq!(pg.terminate_backends("baton-store-writer"), 1);
    store.commit(&[cursor(true)]).unwrap();
    assert!(store.load().unwrap().cursors[&PipelineName("nightly".into())].paused);
    assert_eq!(store.check().unwrap(), Vec::<String>::new());
    assert!(store.size_on_disk().unwrap() > 0);
}

#[test]
fn a_database_from_a_newer_baton_is_refused_and_the_url_never_shows() {
    let Some(pg) = TestPostgres::start_or_skip(
        "a_database_from_a_newer_baton_is_refused_and_the_url_never_shows",
    ) else {
        return;
    };
    let store = open(&pg.url(), None).unwrap();
    assert!(!store.location().contains(pg_support::PASSWORD));
    drop(store);
    pg.psql("INSERT INTO schema_migrations (version, name) VALUES (99, 'future')");
    let err = open(&pg.url(), None).unwrap_err();
    assert!(
        matches!(err, StoreError::NewerSchema { found: 99, .. }),
        "{err:?}"
    );

    let wrong = pg
        .url()
        .replace(pg_support::PASSWORD, "not-the-password-xyz");
    let err = open(&wrong, None).unwrap_err().to_string();
    assert!(!err.contains("not-the-password-xyz"), "{err}");
    assert!(!err.contains(pg_support::PASSWORD), "{err}");
    assert!(err.contains("127.0.0.1"), "{err}");
}
