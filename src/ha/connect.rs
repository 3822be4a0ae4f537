//! Connections to the shared PostgreSQL: TLS through rustls when the URL asks for it
//! (`sslmode=require`, verified against the public web roots), plain otherwise, an
//! `application_name` per purpose (an operator sees which node holds which connection) and
//! timeouts so that a vanished database is noticed, not waited on. Errors never carry the URL.

use crate::secret::Secret;
use std::sync::Arc;
use std::time::Duration;
use tokio_postgres::config::SslMode;
use tokio_postgres::{Client, NoTls};

/// Why a connection could not be made or was lost. The text is the driver's or the server's
/// message, which never holds the URL or the password.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("the database URL is not a PostgreSQL URL")]
    BadUrl,
    #[error("cannot set up TLS for the database: {0}")]
    Tls(String),
    #[error("cannot connect to the database: {0}")]
    Connect(#[source] tokio_postgres::Error),
    #[error("cannot connect to the database: no answer within {0:?}")]
    Timeout(Duration),
}

/// A client whose connection runs on its own task; the task ends when the client is dropped or
/// the server closes the connection.
#[derive(Debug)]
pub struct Connection {
    pub client: Client,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn rustls_connector() -> Result<tokio_postgres_rustls::MakeRustlsConnect, ConnectError> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ConnectError::Tls(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(config))
}

/// Connects within `timeout`, naming the connection `application_name`.
pub async fn connect(
    url: &Secret,
    application_name: &str,
    timeout: Duration,
) -> Result<Connection, ConnectError> {
    let mut config: tokio_postgres::Config =
        url.expose().parse().map_err(|_| ConnectError::BadUrl)?;
    config
        .application_name(application_name)
        .connect_timeout(timeout)
        .keepalives(true)
        .keepalives_idle(Duration::from_secs(5))
        .tcp_user_timeout(timeout);
    let connecting = async {
        if config.get_ssl_mode() == SslMode::Require {
            let (client, connection) = config
                .connect(rustls_connector()?)
                .await
                .map_err(ConnectError::Connect)?;
            let task = tokio::spawn(async move {
                let _ = connection.await;
            });
            Ok(Connection { client, task })
        } else {
            config.ssl_mode(SslMode::Disable);
            let (client, connection) =
                config.connect(NoTls).await.map_err(ConnectError::Connect)?;
            let task = tokio::spawn(async move {
                let _ = connection.await;
            });
            Ok(Connection { client, task })
        }
    };
    tokio::time::timeout(timeout, connecting)
        .await
        .map_err(|_| ConnectError::Timeout(timeout))?
}
