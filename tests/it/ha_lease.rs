//! Leadership on a real throwaway PostgreSQL: many contenders and exactly one leader, a lapsed
//! lease taken over with a new epoch, a deposed leader's fenced writes refused, the leader's
//! connection terminated by the server, a leader whose renewals hang stopping before its lease
//! lapses in the database, and the database stopped and started again.

use crate::support::pg::{self as pg_support, TestPostgres};
use baton::ha::connect::{connect, Connection};
use baton::ha::lease::{self, Epoch, LeaseError};
use baton::ha::{Elector, ElectorConfig, Role};
use baton::secret::Secret;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// A guard against hangs only; nothing asserts on how long anything took.
const PATIENCE: Duration = Duration::from_secs(60);

async fn client(pg: &TestPostgres, name: &str) -> Connection {
    let mut c = connect(&Secret::new(pg.url()), name, Duration::from_secs(10))
        .await
        .unwrap();
    lease::ensure_table(&mut c.client).await.unwrap();
    c
}

fn elector(pg: &TestPostgres, node: &str, lease: Duration) -> (Elector, watch::Receiver<Role>) {
    Elector::new(
        ElectorConfig {
            node: node.into(),
            advertise: format!("http://{node}.test:8377"),
            lease,
            request_timeout: Duration::from_secs(1),
        },
        Secret::new(pg.url()),
    )
}

async fn wait_for(
    rx: &mut watch::Receiver<Role>,
    what: &str,
    pred: impl Fn(&Role) -> bool,
) -> Role {
    let seen = tokio::time::timeout(PATIENCE, rx.wait_for(|r| pred(r)))
        .await
        .map(|role| role.unwrap().clone());
    seen.unwrap_or_else(|_| panic!("never saw: {what}; role is {:?}", *rx.borrow()))
}

/// An elector running for `node`, once it leads.
struct Leading {
    rx: watch::Receiver<Role>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
    term: baton::ha::Term,
    stats: Arc<baton::ha::ElectorStats>,
}

async fn lead(pg: &TestPostgres, node: &str, lease: Duration) -> Leading {
    let (elector, mut rx) = elector(pg, node, lease);
    let stats = elector.stats();
    let stop = CancellationToken::new();
    let task = tokio::spawn(elector.run(stop.clone()));
    let term = wait_for(&mut rx, "leading", is_leader)
        .await
        .term()
        .unwrap();
    Leading {
        rx,
        stop,
        task,
        term,
        stats,
    }
}

fn is_leader(role: &Role) -> bool {
    matches!(role, Role::Leader(_))
}

async fn write_fenced(
    c: &mut Connection,
    node: &str,
    epoch: Epoch,
    value: &str,
) -> Result<(), LeaseError> {
    let tx = c.client.transaction().await?;
    lease::fence(&tx, node, epoch).await?;
    tx.execute("INSERT INTO fenced_writes (value) VALUES ($1)", &[&value])
        .await?;
    tx.commit().await?;
    Ok(())
}

macro_rules! postgres_or_skip {
    ($name:literal) => {
        match TestPostgres::start_or_skip($name) {
            Some(pg) => pg,
            None => return,
        }
    };
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_one_of_many_contenders_takes_the_lease() {
    let pg = postgres_or_skip!("exactly_one_of_many_contenders_takes_the_lease");
    const CONTENDERS: usize = 8;
    let barrier = Arc::new(tokio::sync::Barrier::new(CONTENDERS));
    let mut tasks = Vec::new();
    for i in 0..CONTENDERS {
        let c = client(&pg, &format!("contender-{i}")).await;
        let barrier = barrier.clone();
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            let got =
                lease::try_acquire(&c.client, &format!("node-{i}"), "", Duration::from_secs(30))
                    .await
                    .unwrap();
            (c, got)
        }));
    }
    let mut results = Vec::new();
    for task in tasks {
        results.push(task.await.unwrap());
    }
    let winners: Vec<usize> = (0..CONTENDERS)
        .filter(|&i| results[i].1.is_some())
        .collect();
    assert_eq!(
        winners.len(),
        1,
        "{:?}",
        results.iter().map(|r| r.1).collect::<Vec<_>>()
    );
    let winner = winners[0];
    let epoch = results[winner].1.unwrap();
    let leader = lease::leader(&results[0].0.client).await.unwrap().unwrap();
    assert_eq!(leader.node, format!("node-{winner}"));
    assert_eq!(leader.epoch, epoch);
    assert!(leader.live);
    // Nobody else renews it, not even with the right epoch.
    let renew_as = |i: usize| {
        let client = &results[i].0.client;
        async move { lease::renew(client, &format!("node-{i}"), epoch, Duration::from_secs(30)).await }
    };
    let err = renew_as((winner + 1) % CONTENDERS).await.unwrap_err();
    assert!(matches!(err, LeaseError::Fenced { .. }), "{err}");
    renew_as(winner).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lapsed_lease_is_taken_over_with_a_new_epoch_and_the_deposed_leader_cannot_write() {
    let pg = postgres_or_skip!(
        "a_lapsed_lease_is_taken_over_with_a_new_epoch_and_the_deposed_leader_cannot_write"
    );
    let mut a = client(&pg, "a").await;
    let mut b = client(&pg, "b").await;
    a.client
        .batch_execute("CREATE TABLE fenced_writes (value text NOT NULL)")
        .await
        .unwrap();
    let lease_len = Duration::from_millis(300);
    let epoch_a = lease::try_acquire(&a.client, "a", "", lease_len)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        lease::try_acquire(&b.client, "b", "", lease_len)
            .await
            .unwrap(),
        None
    );
    write_fenced(&mut a, "a", epoch_a, "a while leading")
        .await
        .unwrap();

    // B takes over once the database's clock says A's lease has lapsed.
    let epoch_b = loop {
        if let Some(epoch) = lease::try_acquire(&b.client, "b", "", Duration::from_secs(30))
            .await
            .unwrap()
        {
            break epoch;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(epoch_b > epoch_a, "{epoch_b} after {epoch_a}");

    // A, deposed, can neither renew nor write; B can.
    let err = lease::renew(&a.client, "a", epoch_a, lease_len)
        .await
        .unwrap_err();
    assert!(matches!(err, LeaseError::Fenced { .. }), "{err}");
    let err = write_fenced(&mut a, "a", epoch_a, "a after being deposed")
        .await
        .unwrap_err();
    assert!(
        matches!(err, LeaseError::Fenced { epoch } if epoch == epoch_a),
        "{err}"
    );
    // Even claiming B's epoch under A's name is refused.
    let err = write_fenced(&mut a, "a", epoch_b, "a with b's epoch")
        .await
        .unwrap_err();
    assert!(matches!(err, LeaseError::Fenced { .. }), "{err}");
    write_fenced(&mut b, "b", epoch_b, "b while leading")
        .await
        .unwrap();
    assert_eq!(
        pg.psql("SELECT string_agg(value, ',' ORDER BY value) FROM fenced_writes"),
        "a while leading,b while leading"
    );

    // A lapsed lease is never revived by its holder, only re-acquired with a new epoch.
    lease::release(&b.client, "b", epoch_b).await.unwrap();
    let err = lease::renew(&b.client, "b", epoch_b, lease_len)
        .await
        .unwrap_err();
    assert!(matches!(err, LeaseError::Fenced { .. }), "{err}");
    let epoch_b2 = lease::try_acquire(&b.client, "b", "", lease_len)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(epoch_b2, Epoch(epoch_b.0 + 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_that_passed_the_fence_commits_before_any_takeover() {
    let pg = postgres_or_skip!("a_write_that_passed_the_fence_commits_before_any_takeover");
    let mut a = client(&pg, "a").await;
    let b = client(&pg, "b").await;
    a.client
        .batch_execute("CREATE TABLE fenced_writes (value text NOT NULL)")
        .await
        .unwrap();
    let epoch_a = lease::try_acquire(&a.client, "a", "", Duration::from_millis(200))
        .await
        .unwrap()
        .unwrap();
    let tx = a.client.transaction().await.unwrap();
    lease::fence(&tx, "a", epoch_a).await.unwrap();
    // The lease lapses while A's transaction is open; B's takeover waits for A's commit.
    let taker = tokio::spawn(async move {
        loop {
            if let Some(epoch) = lease::try_acquire(&b.client, "b", "", Duration::from_secs(30))
                .await
                .unwrap()
            {
                let seen = b
                    .client
                    .query_one("SELECT count(*) FROM fenced_writes", &[])
                    .await
                    .unwrap();
                return (epoch, seen.get::<_, i64>(0));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    // Wait until B is blocked on A's share lock: the database's own view of lock waits.
    let waiting = "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'b' AND wait_event_type = 'Lock'";
    let started = Instant::now();
    while pg.psql(waiting) != "1" {
        assert!(started.elapsed() < PATIENCE, "B never waited for A's lock");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tx.execute(
        "INSERT INTO fenced_writes VALUES ('a, fenced before the takeover')",
        &[],
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    let (epoch_b, seen) = taker.await.unwrap();
    assert!(epoch_b > epoch_a);
    assert_eq!(seen, 1, "the new leader reads every write of the old one");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_electors_one_leads_and_the_other_takes_over_when_it_dies() {
    let pg = postgres_or_skip!("two_electors_one_leads_and_the_other_takes_over_when_it_dies");
    let lease_len = Duration::from_secs(1);
    let (a, mut rx_a) = elector(&pg, "a", lease_len);
    let (b, mut rx_b) = elector(&pg, "b", lease_len);
    let stop = CancellationToken::new();
    let task_a = tokio::spawn(a.run(stop.clone()));
    let first = wait_for(&mut rx_a, "a leading", is_leader).await;
    let task_b = tokio::spawn(b.run(stop.clone()));
    let standby = wait_for(
        &mut rx_b,
        "b standing by behind a",
        |r| matches!(r, Role::Standby { leader: Some(l), .. } if l.node == "a" && l.live),
    )
    .await;
    let Role::Standby {
        leader: Some(seen), ..
    } = standby
    else {
        unreachable!()
    };
    assert_eq!(seen.advertise, "http://a.test:8377");
    assert!(!rx_b.borrow().is_acting(Instant::now()));

    // A dies without releasing (its task and connection vanish, as in a crash).
    task_a.abort();
    let _ = task_a.await;
    let second = wait_for(&mut rx_b, "b leading", is_leader).await;
    assert!(second.term().unwrap().epoch > first.term().unwrap().epoch);
    assert!(second.is_acting(Instant::now()));
    // The new leader may re-send attempts left `triggering` only after the request timeout.
    assert!(second.term().unwrap().resend_after > Instant::now() - Duration::from_millis(1));

    // A clean stop releases the lease: a fresh contender gets it without waiting for a lapse.
    stop.cancel();
    task_b.await.unwrap();
    let c = client(&pg, "c").await;
    let epoch = lease::try_acquire(&c.client, "c", "", Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(epoch, Some(Epoch(second.term().unwrap().epoch.0 + 1)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leader_keeps_its_term_when_its_connection_is_terminated() {
    let pg = postgres_or_skip!("the_leader_keeps_its_term_when_its_connection_is_terminated");
    let Leading {
        mut rx,
        stop,
        task,
        term,
        stats,
    } = lead(&pg, "a", Duration::from_secs(2)).await;
    assert_eq!(pg.terminate_backends("baton-elector-a"), 1);
    let renewed = stats.renewals.load(Ordering::Relaxed);
    let started = Instant::now();
    while stats.renewals.load(Ordering::Relaxed) < renewed + 2 {
        assert!(
            started.elapsed() < PATIENCE,
            "no renewal after the connection was terminated"
        );
        rx.changed().await.unwrap();
    }
    let now = rx.borrow().clone();
    assert_eq!(now.term().unwrap().epoch, term.epoch, "{now:?}");
    assert_eq!(stats.leadership_changes.load(Ordering::Relaxed), 1);
    stop.cancel();
    task.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_that_cannot_renew_stops_acting_while_its_lease_is_still_live() {
    let pg =
        postgres_or_skip!("a_leader_that_cannot_renew_stops_acting_while_its_lease_is_still_live");
    let Leading {
        mut rx,
        stop,
        task,
        term,
        ..
    } = lead(&pg, "a", Duration::from_secs(3)).await;
    // An operator's transaction holds the lease row: A's renewals hang.
    let mut blocker = client(&pg, "blocker").await;
    let tx = blocker.client.transaction().await.unwrap();
    tx.execute("SELECT 1 FROM baton_leadership FOR UPDATE", &[])
        .await
        .unwrap();
    let stepped_down = wait_for(&mut rx, "a standing by", |r| !is_leader(r)).await;
    assert!(!stepped_down.is_acting(Instant::now()));
    // The database still counts A's lease as live: A stopped first.
    let live: bool = tx
        .query_one(
            "SELECT expires_at > clock_timestamp() FROM baton_leadership",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(live, "A acted past its lease");
    tx.rollback().await.unwrap();
    // Once the lease lapses, A leads again under a new epoch.
    let again = wait_for(&mut rx, "a leading again", is_leader)
        .await
        .term()
        .unwrap();
    assert!(again.epoch > term.epoch);
    stop.cancel();
    task.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_the_database_stops_the_leader_and_it_leads_again_when_it_is_back() {
    let pg = postgres_or_skip!(
        "losing_the_database_stops_the_leader_and_it_leads_again_when_it_is_back"
    );
    let Leading {
        mut rx,
        stop,
        task,
        term,
        ..
    } = lead(&pg, "a", Duration::from_secs(1)).await;
    pg.stop();
    let down = wait_for(&mut rx, "a standing by without a database", |r| {
        matches!(
            r,
            Role::Standby {
                problem: Some(_),
                ..
            }
        )
    })
    .await;
    let Role::Standby {
        problem: Some(problem),
        ..
    } = &down
    else {
        unreachable!()
    };
    assert!(!problem.contains(pg_support::PASSWORD), "{problem}");
    pg.start();
    let again = wait_for(&mut rx, "a leading again", is_leader)
        .await
        .term()
        .unwrap();
    assert!(again.epoch > term.epoch);
    stop.cancel();
    task.await.unwrap();
}
