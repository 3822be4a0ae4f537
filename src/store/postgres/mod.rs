//! The PostgreSQL backend: the store shared by the nodes of an HA deployment. The backend API is
//! synchronous and tokio-postgres is async, so each connection lives on its own thread with its
//! own current-thread runtime, and callers talk to it over channels (blocking on a runtime from
//! inside the daemon's would panic). One connection writes (the runtime loop's); the history
//! reader has its own, so reads never wait behind a commit. With a `Fence`, every `apply` checks
//! the leader's epoch in its own transaction: a deposed leader's write fails with
//! `StoreError::Fenced` and changes nothing.

mod sql;
#[cfg(test)]
mod tests;

pub use sql::Fence;

use super::backend::{Backend, Batch, Durability, HistorySource, Loaded};
use super::migrations;
use super::StoreError;
use crate::ha::connect::{connect, Connection};
use crate::secret::Secret;
use sql::SqlError;
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc as async_mpsc;

/// How long one connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one statement may run in the server.
const STATEMENT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a transaction may sit idle in the server without a fence (tests, tools).
const IDLE_IN_TRANSACTION: Duration = Duration::from_secs(10);

enum Request {
    Load,
    Apply(Box<Batch>, Durability),
    Check,
    Size,
    ResolvedJobs,
    Get(String),
    Newest(String, usize),
    All,
    Definition(String),
}

enum Reply {
    Loaded(Box<Loaded>),
    Done,
    Problems(Vec<String>),
    Size(u64),
    ResolvedJobs(Vec<(String, i64)>),
    Record(Option<Vec<u8>>),
    Records(Vec<Vec<u8>>),
}

type Job = (Request, mpsc::Sender<Result<Reply, StoreError>>);

/// One connection on its own thread. Dropping it ends the thread and closes the connection.
#[derive(Debug)]
struct Worker {
    location: String,
    jobs: Mutex<Option<async_mpsc::UnboundedSender<Job>>>,
}

impl Worker {
    /// Starts the thread and connects; with `migrate`, applies pending migrations first.
    fn start(
        url: &Secret,
        location: &str,
        purpose: &str,
        fence: Option<Fence>,
        migrate: bool,
    ) -> Result<Worker, StoreError> {
        let (jobs, mut inbox) = async_mpsc::unbounded_channel::<Job>();
        let (ready, started) = mpsc::channel::<Result<(), StoreError>>();
        let url = url.clone();
        let name = format!("baton-store-{purpose}");
        let loc = location.to_string();
        std::thread::Builder::new()
            .name(name.clone())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime,
                    Err(e) => {
                        let _ = ready.send(Err(open_error(&loc, e.to_string())));
                        return;
                    }
                };
                runtime.block_on(async move {
                    let mut session = Session {
                        url,
                        name,
                        location: loc,
                        fence,
                        connection: None,
                        unsynced: false,
                    };
                    let opened = session.open(migrate).await;
                    let failed = opened.is_err();
                    let _ = ready.send(opened);
                    if failed {
                        return;
                    }
                    while let Some((request, reply)) = inbox.recv().await {
                        let answer = session.serve(request).await;
                        let _ = reply.send(answer);
                    }
                });
            })
            .map_err(|e| open_error(location, e.to_string()))?;
        started
            .recv()
            .map_err(|_| open_error(location, "the connection thread ended".into()))??;
        Ok(Worker {
            location: location.to_string(),
            jobs: Mutex::new(Some(jobs)),
        })
    }

    fn ask(&self, request: Request) -> Result<Reply, StoreError> {
        let (reply, answer) = mpsc::channel();
        let sent = self
            .jobs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .is_some_and(|jobs| jobs.send((request, reply)).is_ok());
        if !sent {
            return Err(self.gone());
        }
        answer.recv().map_err(|_| self.gone())?
    }

    fn gone(&self) -> StoreError {
        StoreError::Write {
            location: self.location.clone(),
            message: "the store's connection thread has ended".into(),
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        // Closing the channel ends the thread's loop, which drops the connection.
        self.jobs.lock().unwrap_or_else(|e| e.into_inner()).take();
    }
}

fn open_error(location: &str, message: String) -> StoreError {
    StoreError::Open {
        location: location.to_string(),
        message,
    }
}

/// The server ended the session (`pg_terminate_backend`, a shutdown, a failover): the first error
/// names why, before the client has noticed that the connection is closed.
fn ended_by_server(e: &tokio_postgres::Error) -> bool {
    use tokio_postgres::error::SqlState;
    e.code().is_some_and(|code| {
        [
            SqlState::ADMIN_SHUTDOWN,
            SqlState::CRASH_SHUTDOWN,
            SqlState::CANNOT_CONNECT_NOW,
            SqlState::IDLE_IN_TRANSACTION_SESSION_TIMEOUT,
        ]
        .contains(code)
            || code.code().starts_with("08")
    })
}

/// The thread's side: the connection (re-made when lost) and what it knows about durability.
struct Session {
    url: Secret,
    name: String,
    location: String,
    fence: Option<Fence>,
    connection: Option<Connection>,
    /// Deferred commits since the last full one.
    unsynced: bool,
}

impl Session {
    async fn open(&mut self, migrate: bool) -> Result<(), StoreError> {
        self.connect().await?;
        if migrate {
            let connection = self.connection.as_mut().expect("connected above");
            sql::migrate(&mut connection.client, migrations::POSTGRES)
                .await
                .map_err(|e| self.error(e))?;
        }
        Ok(())
    }

    async fn connect(&mut self) -> Result<&mut Connection, StoreError> {
        if self
            .connection
            .as_ref()
            .is_some_and(|c| c.client.is_closed())
        {
            self.connection = None;
        }
        if self.connection.is_none() {
            let connection = connect(&self.url, &self.name, CONNECT_TIMEOUT)
                .await
                .map_err(|e| open_error(&self.location, e.to_string()))?;
            // A transaction left open by a frozen process (a paused VM, SIGSTOP) would keep the
            // lease row share-locked and so block every takeover: the server ends it.
            let idle = self.fence.as_ref().map_or(IDLE_IN_TRANSACTION, |f| {
                (f.lease / 4).max(Duration::from_millis(100))
            });
            connection
                .client
                .batch_execute(&format!(
                    "SET statement_timeout = {}; SET idle_in_transaction_session_timeout = {}",
                    STATEMENT_TIMEOUT.as_millis(),
                    idle.as_millis()
                ))
                .await
                .map_err(|e| open_error(&self.location, e.to_string()))?;
            self.connection = Some(connection);
        }
        Ok(self.connection.as_mut().expect("connected above"))
    }

    fn error(&self, e: SqlError) -> StoreError {
        let location = self.location.clone();
        match e {
            SqlError::Fenced(epoch) => StoreError::Fenced {
                location,
                epoch: epoch.0,
            },
            SqlError::NewerSchema { found, known } => StoreError::NewerSchema {
                location,
                found,
                known,
            },
            SqlError::Db(e) => StoreError::Write {
                location,
                message: e.to_string(),
            },
            SqlError::Connect(message) => StoreError::Open { location, message },
            SqlError::Encoding(message) => StoreError::Write { location, message },
        }
    }

    /// Serves one request; a request that failed because the connection was lost is tried once
    /// more on a new connection (every request is a read or an idempotent batch).
    async fn serve(&mut self, request: Request) -> Result<Reply, StoreError> {
        match self.serve_once(&request).await {
            Err(SqlError::Db(e))
                if e.is_closed() || ended_by_server(&e) || self.connection_lost() =>
            {
                tracing::warn!(store = %self.location, "database connection lost ({e}); reconnecting");
                self.connection = None;
                self.serve_once(&request).await.map_err(|e| self.error(e))
            }
            answer => answer.map_err(|e| self.error(e)),
        }
    }

    fn connection_lost(&self) -> bool {
        self.connection
            .as_ref()
            .is_none_or(|c| c.client.is_closed())
    }

    async fn serve_once(&mut self, request: &Request) -> Result<Reply, SqlError> {
        let fence = self.fence.clone();
        let unsynced = self.unsynced;
        let connection = self.connect().await.map_err(|e| {
            SqlError::Connect(match e {
                StoreError::Open { message, .. } => message,
                other => other.to_string(),
            })
        })?;
        let client = &mut connection.client;
        Ok(match request {
            Request::Load => Reply::Loaded(Box::new(sql::load(client).await?)),
            Request::Apply(batch, durability) => {
                let full = *durability == Durability::Full;
                if batch.is_empty() && (!full || !unsynced) {
                    return Ok(Reply::Done);
                }
                sql::apply(client, fence.as_ref(), batch, *durability).await?;
                self.unsynced = !full;
                Reply::Done
            }
            Request::Check => Reply::Problems(sql::check(client, migrations::POSTGRES).await?),
            Request::Size => Reply::Size(sql::size(client).await?),
            Request::ResolvedJobs => Reply::ResolvedJobs(sql::resolved_jobs(client).await?),
            Request::Get(id) => Reply::Record(sql::history_get(client, id).await?),
            Request::Newest(pipeline, limit) => {
                Reply::Records(sql::history_newest(client, pipeline, *limit).await?)
            }
            Request::All => Reply::Records(sql::history_all(client).await?),
            Request::Definition(digest) => Reply::Record(sql::definition(client, digest).await?),
        })
    }
}

/// The PostgreSQL backend of a shared store.
#[derive(Debug)]
pub struct PostgresBackend {
    location: String,
    writer: Worker,
    history: Arc<PostgresHistory>,
}

/// Where a URL points, for messages: host, port and database, never the user or password.
pub fn describe(url: &Secret) -> String {
    let Some(config) = crate::ha::connect::config_of(url.expose()) else {
        return "PostgreSQL (unparsable URL)".into();
    };
    let host = match config.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(host)) => host.clone(),
        Some(tokio_postgres::config::Host::Unix(path)) => path.display().to_string(),
        None => "localhost".into(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let database = config.get_dbname().unwrap_or("(default)");
    format!("PostgreSQL {host}:{port}/{database}")
}

impl PostgresBackend {
    /// Connects, applies pending migrations, and opens the history reader's connection. With a
    /// `fence`, every write is checked against the lease in its own transaction.
    pub fn open(url: &Secret, fence: Option<Fence>) -> Result<Self, StoreError> {
        let location = describe(url);
        let writer = Worker::start(url, &location, "writer", fence, true)?;
        let reader = Worker::start(url, &location, "history", None, false)?;
        Ok(Self {
            location,
            writer,
            history: Arc::new(PostgresHistory { worker: reader }),
        })
    }

    fn unexpected(&self) -> StoreError {
        StoreError::Write {
            location: self.location.clone(),
            message: "unexpected answer from the connection thread".into(),
        }
    }
}

impl Backend for PostgresBackend {
    fn location(&self) -> &str {
        &self.location
    }

    fn load(&self) -> Result<Loaded, StoreError> {
        match self.writer.ask(Request::Load)? {
            Reply::Loaded(loaded) => Ok(*loaded),
            _ => Err(self.unexpected()),
        }
    }

    fn apply(&self, batch: Batch, durability: Durability) -> Result<(), StoreError> {
        match self
            .writer
            .ask(Request::Apply(Box::new(batch), durability))?
        {
            Reply::Done => Ok(()),
            _ => Err(self.unexpected()),
        }
    }

    fn history(&self) -> Arc<dyn HistorySource> {
        self.history.clone()
    }

    fn resolved_jobs(&self) -> Result<Vec<(String, i64)>, StoreError> {
        match self.writer.ask(Request::ResolvedJobs)? {
            Reply::ResolvedJobs(jobs) => Ok(jobs),
            _ => Err(self.unexpected()),
        }
    }

    fn check(&self) -> Result<Vec<String>, StoreError> {
        match self.writer.ask(Request::Check)? {
            Reply::Problems(problems) => Ok(problems),
            _ => Err(self.unexpected()),
        }
    }

    fn size_on_disk(&self) -> Result<u64, StoreError> {
        match self.writer.ask(Request::Size)? {
            Reply::Size(bytes) => Ok(bytes),
            _ => Err(self.unexpected()),
        }
    }
}

/// Archived runs through the reader's own connection.
#[derive(Debug)]
pub struct PostgresHistory {
    worker: Worker,
}

impl PostgresHistory {
    fn unexpected(&self) -> StoreError {
        StoreError::Write {
            location: self.worker.location.clone(),
            message: "unexpected answer from the connection thread".into(),
        }
    }

    fn record(&self, request: Request) -> Result<Option<Vec<u8>>, StoreError> {
        match self.worker.ask(request)? {
            Reply::Record(record) => Ok(record),
            _ => Err(self.unexpected()),
        }
    }

    fn records(&self, request: Request) -> Result<Vec<Vec<u8>>, StoreError> {
        match self.worker.ask(request)? {
            Reply::Records(records) => Ok(records),
            _ => Err(self.unexpected()),
        }
    }
}

impl HistorySource for PostgresHistory {
    fn get(&self, id: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.record(Request::Get(id.to_string()))
    }

    fn newest(&self, pipeline: &str, limit: usize) -> Result<Vec<Vec<u8>>, StoreError> {
        self.records(Request::Newest(pipeline.to_string(), limit))
    }

    fn all(&self) -> Result<Vec<Vec<u8>>, StoreError> {
        self.records(Request::All)
    }

    fn definition(&self, digest: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.record(Request::Definition(digest.to_string()))
    }
}
