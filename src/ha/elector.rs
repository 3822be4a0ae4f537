//! The elector: one task per node that keeps trying to take the lease while standing by, renews it
//! while leading, and publishes this node's `Role` on a watch channel. A leader's `Term` carries
//! `valid_until`, an instant on this process's monotonic clock that is earlier than the lease's
//! expiry on the database's clock could be (the renewal was sent before the database stamped the
//! expiry, and a margin of a fifth of the lease covers clock rate differences); whoever acts for
//! the leader checks `Role::is_acting` first, so a leader that cannot renew in time stops acting on
//! its own, even while the elector itself is stuck (a stopped process, a hung connection).

use super::connect::{connect, Connection};
use super::lease::{self, Epoch, LeaderInfo, LeaseError};
use crate::secret::Secret;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone)]
pub struct ElectorConfig {
    /// This node's name (`node_name`), stored as the lease's holder.
    pub node: String,
    /// This node's API address (`http.advertise`), shown by standbys as where the leader is.
    pub advertise: String,
    /// The lease's length (`store.postgres.lease`).
    pub lease: Duration,
    /// The dbt Cloud request timeout: after taking over, how long a request the previous leader
    /// sent before its lease lapsed may still land.
    pub request_timeout: Duration,
}

impl ElectorConfig {
    /// How often a leader renews: four chances per lease.
    pub fn renew_every(&self) -> Duration {
        self.lease / 4
    }

    /// How long a leader acts after sending a renewal that succeeds.
    pub fn validity(&self) -> Duration {
        self.lease - self.lease / 5
    }

    /// How often a standby asks whether the lease has lapsed.
    pub fn poll_every(&self) -> Duration {
        (self.lease / 10).max(Duration::from_millis(50))
    }

    /// The longest any one database call may take.
    fn call_timeout(&self) -> Duration {
        (self.lease / 4).max(Duration::from_millis(200))
    }

    /// The longest pause between attempts while the database is unreachable.
    fn max_backoff(&self) -> Duration {
        self.lease / 2
    }
}

/// A leadership term as this node holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Term {
    pub epoch: Epoch,
    /// Stop acting at this instant unless a renewal moves it.
    pub valid_until: Instant,
    /// When no request of an earlier leader can still land in dbt Cloud: attempts left
    /// `triggering` are reconciled by key, and re-sent only after this.
    pub resend_after: Instant,
}

/// This node's part.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    Standby {
        /// The current or last leader, when known.
        leader: Option<LeaderInfo>,
        /// Why this node cannot even contend (the database is unreachable), when it cannot.
        problem: Option<String>,
    },
    Leader(Term),
}

impl Role {
    /// Whether this node may act as the leader at `now`: it holds a term that has not run out.
    pub fn is_acting(&self, now: Instant) -> bool {
        matches!(self, Role::Leader(term) if now < term.valid_until)
    }

    pub fn term(&self) -> Option<Term> {
        match self {
            Role::Leader(term) => Some(*term),
            Role::Standby { .. } => None,
        }
    }
}

/// Counters for the metrics endpoint.
#[derive(Debug, Default)]
pub struct ElectorStats {
    /// Times this node became leader or stopped being leader.
    pub leadership_changes: AtomicU64,
    /// Successful renewals, and the latency of the latest in microseconds.
    pub renewals: AtomicU64,
    pub last_renew_micros: AtomicU64,
}

/// The task that contends for and keeps the lease. Build with `new`, run with `run`.
#[derive(Debug)]
pub struct Elector {
    config: ElectorConfig,
    url: Secret,
    role: watch::Sender<Role>,
    stats: Arc<ElectorStats>,
}

enum Next {
    /// Wait this long (less when a term runs out sooner) before the next attempt.
    Wait(Duration),
}

impl Elector {
    pub fn new(config: ElectorConfig, url: Secret) -> (Elector, watch::Receiver<Role>) {
        let (role, receiver) = watch::channel(Role::Standby {
            leader: None,
            problem: None,
        });
        let elector = Elector {
            config,
            url,
            role,
            stats: Arc::default(),
        };
        (elector, receiver)
    }

    pub fn stats(&self) -> Arc<ElectorStats> {
        self.stats.clone()
    }

    /// Contends, leads and renews until `stop`; then releases the lease if it holds it (call
    /// `stop` only once this node has stopped acting) and ends as a standby.
    pub async fn run(self, stop: CancellationToken) {
        let mut connection: Option<Connection> = None;
        let mut term: Option<Term> = None;
        let mut backoff = Duration::ZERO;
        loop {
            if let Some(t) = term {
                if Instant::now() >= t.valid_until {
                    tracing::warn!(node = %self.config.node, epoch = %t.epoch,
                        "lease not renewed in time: stopped acting as the leader (self-fenced); standing by");
                    term = None;
                    self.step_down(None, Some("the lease could not be renewed in time".into()));
                }
            }
            if stop.is_cancelled() {
                if let (Some(t), Some(c)) = (term, connection.as_ref()) {
                    self.release(c, t).await;
                }
                self.step_down(None, Some("stopping".into()));
                return;
            }
            let Next::Wait(wait) = match self.ensure_connected(&mut connection).await {
                Err(problem) => self.trouble(&mut backoff, term, problem),
                Ok(client) => {
                    let next = match term {
                        Some(t) => self.renew(client, t, &mut term).await,
                        None => self.contend(client, &mut term).await,
                    };
                    match next {
                        Ok(next) => {
                            backoff = Duration::ZERO;
                            next
                        }
                        Err(problem) => {
                            // The connection is suspect: drop it and reconnect.
                            connection = None;
                            self.trouble(&mut backoff, term, problem)
                        }
                    }
                }
            };
            let mut until = Instant::now() + wait;
            if let Some(t) = term {
                until = until.min(t.valid_until);
            }
            tokio::select! {
                _ = tokio::time::sleep_until(until) => {}
                _ = stop.cancelled() => {}
            }
        }
    }

    /// The database could not be asked: wait longer each time (up to half a lease), and a standby
    /// says why it cannot contend. A leader keeps its term until it runs out.
    fn trouble(&self, backoff: &mut Duration, term: Option<Term>, problem: String) -> Next {
        *backoff = (*backoff * 2).clamp(Duration::from_millis(50), self.config.max_backoff());
        tracing::warn!(node = %self.config.node, retry_in = ?*backoff, "{problem}");
        if term.is_none() {
            self.role.send_replace(Role::Standby {
                leader: None,
                problem: Some(problem),
            });
        }
        Next::Wait(*backoff)
    }

    /// The time a database call may take now: the usual limit, or less when a term runs out
    /// sooner (a call must not keep a self-fence waiting).
    fn call_budget(&self, term: Option<Term>) -> Duration {
        let limit = self.config.call_timeout();
        match term {
            Some(t) => limit.min(t.valid_until.saturating_duration_since(Instant::now())),
            None => limit,
        }
    }

    async fn ensure_connected<'c>(
        &self,
        connection: &'c mut Option<Connection>,
    ) -> Result<&'c tokio_postgres::Client, String> {
        if connection.as_ref().is_some_and(|c| c.client.is_closed()) {
            *connection = None;
        }
        if connection.is_none() {
            let timeout = self.config.call_timeout();
            let name = format!("baton-elector-{}", self.config.node);
            let mut c = connect(&self.url, &name, timeout)
                .await
                .map_err(|e| e.to_string())?;
            // A statement abandoned by a timeout here must not linger in the server (a renewal
            // waiting on a lock and landing later would keep a dead term's lease alive).
            let limits = format!(
                "SET statement_timeout = {0}; SET lock_timeout = {0}",
                timeout.as_millis()
            );
            tokio::time::timeout(timeout, c.client.batch_execute(&limits))
                .await
                .map_err(|_| LeaseError::Timeout(timeout).to_string())?
                .map_err(|e| LeaseError::from(e).to_string())?;
            tokio::time::timeout(timeout, lease::ensure_table(&mut c.client))
                .await
                .map_err(|_| LeaseError::Timeout(timeout).to_string())?
                .map_err(|e| e.to_string())?;
            *connection = Some(c);
        }
        Ok(&connection.as_ref().expect("connected above").client)
    }

    async fn contend(
        &self,
        client: &tokio_postgres::Client,
        term: &mut Option<Term>,
    ) -> Result<Next, String> {
        let budget = self.call_budget(None);
        let sent = Instant::now();
        let acquired = tokio::time::timeout(
            budget,
            lease::try_acquire(
                client,
                &self.config.node,
                &self.config.advertise,
                self.config.lease,
            ),
        )
        .await
        .map_err(|_| LeaseError::Timeout(budget).to_string())?
        .map_err(|e| e.to_string())?;
        match acquired {
            Some(epoch) => {
                let t = Term {
                    epoch,
                    valid_until: sent + self.config.validity(),
                    resend_after: Instant::now() + self.config.request_timeout,
                };
                *term = Some(t);
                self.stats
                    .leadership_changes
                    .fetch_add(1, Ordering::Relaxed);
                tracing::info!(node = %self.config.node, epoch = %epoch, "took the lease: leading");
                self.role.send_replace(Role::Leader(t));
                Ok(Next::Wait(self.config.renew_every()))
            }
            None => {
                let leader = tokio::time::timeout(budget, lease::leader(client))
                    .await
                    .map_err(|_| LeaseError::Timeout(budget).to_string())?
                    .map_err(|e| e.to_string())?;
                self.role.send_if_modified(|role| {
                    let standby = Role::Standby {
                        leader,
                        problem: None,
                    };
                    let changed = *role != standby;
                    *role = standby;
                    changed
                });
                Ok(Next::Wait(self.config.poll_every()))
            }
        }
    }

    async fn renew(
        &self,
        client: &tokio_postgres::Client,
        current: Term,
        term: &mut Option<Term>,
    ) -> Result<Next, String> {
        let budget = self.call_budget(Some(current));
        let sent = Instant::now();
        let renewed = tokio::time::timeout(
            budget,
            lease::renew(client, &self.config.node, current.epoch, self.config.lease),
        )
        .await
        .map_err(|_| LeaseError::Timeout(budget).to_string())?;
        match renewed {
            Ok(()) => {
                let latency = sent.elapsed();
                self.stats.renewals.fetch_add(1, Ordering::Relaxed);
                self.stats
                    .last_renew_micros
                    .store(latency.as_micros() as u64, Ordering::Relaxed);
                let t = Term {
                    valid_until: sent + self.config.validity(),
                    ..current
                };
                *term = Some(t);
                self.role.send_replace(Role::Leader(t));
                Ok(Next::Wait(self.config.renew_every()))
            }
            Err(LeaseError::Fenced { epoch }) => {
                tracing::warn!(node = %self.config.node, epoch = %epoch,
                    "the lease was lost (lapsed or taken): standing by");
                *term = None;
                self.step_down(None, None);
                Ok(Next::Wait(Duration::ZERO))
            }
            Err(e) => Err(e.to_string()),
        }
    }

    async fn release(&self, connection: &Connection, t: Term) {
        let budget = self.call_budget(Some(t)).max(Duration::from_millis(100));
        match tokio::time::timeout(
            budget,
            lease::release(&connection.client, &self.config.node, t.epoch),
        )
        .await
        {
            Ok(Ok(())) => {
                tracing::info!(node = %self.config.node, epoch = %t.epoch, "released the lease")
            }
            Ok(Err(e)) => tracing::warn!(node = %self.config.node, "cannot release the lease: {e}"),
            Err(_) => {
                tracing::warn!(node = %self.config.node, "cannot release the lease: timed out")
            }
        }
    }

    fn step_down(&self, leader: Option<LeaderInfo>, problem: Option<String>) {
        let was_leader = matches!(*self.role.borrow(), Role::Leader(_));
        if was_leader {
            self.stats
                .leadership_changes
                .fetch_add(1, Ordering::Relaxed);
        }
        self.role.send_replace(Role::Standby { leader, problem });
    }
}
