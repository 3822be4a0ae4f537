//! The leadership lease: one row (`baton_leadership`) holding the leader's name, its epoch and the
//! lease's expiry on the DATABASE's clock, and the SQL that acquires, renews, releases and checks
//! it. Every acquisition increments the epoch; `fence` is the check a leader's write runs inside
//! its own transaction, holding the row in share mode until commit so that no other node can
//! acquire the lease between the check and the commit. ARCHITECTURE.md gives the safety argument.

use std::time::Duration;
use tokio_postgres::error::SqlState;
use tokio_postgres::GenericClient;

/// A leadership term's number: strictly greater for every new acquisition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Epoch(pub i64);

impl std::fmt::Display for Epoch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Why a lease operation failed.
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    /// This node no longer holds the lease at `epoch`: another node acquired it, or it lapsed.
    /// A write refused with this error changed nothing.
    #[error("not the leader any more (epoch {epoch} was deposed or its lease lapsed)")]
    Fenced { epoch: Epoch },
    /// The database could not be asked (connection lost, server error).
    #[error("database: {0}")]
    Database(#[from] tokio_postgres::Error),
    #[error("database: no answer within {0:?}")]
    Timeout(Duration),
}

/// Who leads, as a standby or the status page sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaderInfo {
    pub node: String,
    pub epoch: Epoch,
    /// The leader's `http.advertise` address (may be empty).
    pub advertise: String,
    /// False when the lease has lapsed and nobody took it yet.
    pub live: bool,
}

/// The transaction-level advisory lock that serializes schema changes (the lease table, the
/// store's migrations) between nodes starting together.
pub const SCHEMA_LOCK: i64 = 7306960830716657669;

/// Creates the lease table when missing. Concurrent callers are serialized by a transaction-level
/// advisory lock, so that two nodes starting together do not race on `CREATE TABLE`.
pub async fn ensure_table(client: &mut tokio_postgres::Client) -> Result<(), LeaseError> {
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&SCHEMA_LOCK])
        .await?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS baton_leadership (
             id smallint PRIMARY KEY CHECK (id = 1),
             holder text NOT NULL,
             epoch bigint NOT NULL,
             expires_at timestamptz NOT NULL,
             advertise text NOT NULL DEFAULT ''
         );",
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

fn seconds(lease: Duration) -> f64 {
    lease.as_secs_f64()
}

/// Takes the lease for `lease` from now (the database's now) when nobody holds it or the holder's
/// lease has lapsed; the new epoch, or `None` when another node's lease is live. Concurrent
/// callers serialize on the row lock and re-check the expiry against the row they then see, so
/// exactly one of them wins an expired lease.
pub async fn try_acquire(
    client: &impl GenericClient,
    node: &str,
    advertise: &str,
    lease: Duration,
) -> Result<Option<Epoch>, LeaseError> {
    let row = client
        .query_opt(
            "INSERT INTO baton_leadership AS l (id, holder, epoch, expires_at, advertise)
             VALUES (1, $1, 1, clock_timestamp() + make_interval(secs => $2::float8), $3)
             ON CONFLICT (id) DO UPDATE
                SET holder = EXCLUDED.holder, epoch = l.epoch + 1,
                    expires_at = EXCLUDED.expires_at, advertise = EXCLUDED.advertise
                WHERE l.expires_at <= clock_timestamp()
             RETURNING epoch",
            &[&node, &seconds(lease), &advertise],
        )
        .await?;
    Ok(row.map(|r| Epoch(r.get(0))))
}

/// Extends a live lease held at `epoch` to `lease` from now. `Fenced` when it is no longer ours
/// or has lapsed (a lapsed lease is never revived: leadership starts over with a new epoch).
pub async fn renew(
    client: &impl GenericClient,
    node: &str,
    epoch: Epoch,
    lease: Duration,
) -> Result<(), LeaseError> {
    let renewed = client
        .execute(
            "UPDATE baton_leadership
                SET expires_at = clock_timestamp() + make_interval(secs => $3::float8)
              WHERE id = 1 AND holder = $1 AND epoch = $2 AND expires_at > clock_timestamp()",
            &[&node, &epoch.0, &seconds(lease)],
        )
        .await?;
    if renewed == 1 {
        Ok(())
    } else {
        Err(LeaseError::Fenced { epoch })
    }
}

/// Ends a lease at once so a standby can take over without waiting for it to lapse. Call only
/// after this node has stopped acting.
pub async fn release(
    client: &impl GenericClient,
    node: &str,
    epoch: Epoch,
) -> Result<(), LeaseError> {
    client
        .execute(
            "UPDATE baton_leadership SET expires_at = clock_timestamp()
              WHERE id = 1 AND holder = $1 AND epoch = $2 AND expires_at > clock_timestamp()",
            &[&node, &epoch.0],
        )
        .await?;
    Ok(())
}

/// The current (or last) leader, `None` before anyone ever led.
pub async fn leader(client: &impl GenericClient) -> Result<Option<LeaderInfo>, LeaseError> {
    let row = client
        .query_opt(
            "SELECT holder, epoch, advertise, expires_at > clock_timestamp()
               FROM baton_leadership WHERE id = 1",
            &[],
        )
        .await?;
    Ok(row.map(|r| LeaderInfo {
        node: r.get(0),
        epoch: Epoch(r.get(1)),
        advertise: r.get(2),
        live: r.get(3),
    }))
}

/// The statement `fence` runs; exposed for the synchronous store backend, which runs it inside
/// its own transactions with parameters (node, epoch).
pub const FENCE_SQL: &str = "SELECT 1 FROM baton_leadership
      WHERE id = 1 AND holder = $1 AND epoch = $2 AND expires_at > clock_timestamp()
      FOR SHARE";

/// Checks, inside the caller's transaction, that `epoch` still holds a live lease, and keeps the
/// lease row share-locked until that transaction ends: a node acquiring the lease waits for the
/// commit, so every write that passed the fence is ordered before the next leader's term.
pub async fn fence(
    transaction: &tokio_postgres::Transaction<'_>,
    node: &str,
    epoch: Epoch,
) -> Result<(), LeaseError> {
    match transaction.query_opt(FENCE_SQL, &[&node, &epoch.0]).await {
        Ok(Some(_)) => Ok(()),
        Ok(None) => Err(LeaseError::Fenced { epoch }),
        // Waiting on the lock was cut short by a lock timeout set by the caller.
        Err(e) if e.code() == Some(&SqlState::LOCK_NOT_AVAILABLE) => {
            Err(LeaseError::Fenced { epoch })
        }
        Err(e) => Err(e.into()),
    }
}
