//! Connections to the shared PostgreSQL: TLS through rustls when the URL asks for it
//! (`sslmode=require` or `verify-full`, the server's certificate and host name verified against
//! the CA file named by `sslrootcert=PATH` as libpq reads it, else the public web roots), plain
//! otherwise, an
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
    #[error("cannot read the database's CA file `sslrootcert` ({path}): {problem}")]
    RootCert { path: String, problem: String },
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

/// What the URL says about TLS beyond what tokio-postgres reads itself.
#[derive(Debug, Default, PartialEq)]
struct TlsSettings {
    /// `sslrootcert=PATH`: the CA certificates (PEM) the server's certificate must chain to.
    root_cert: Option<std::path::PathBuf>,
}

/// The URL as tokio-postgres reads it (with the TLS settings it does not know taken out), or
/// `None` when it is not a PostgreSQL URL.
pub fn config_of(url: &str) -> Option<tokio_postgres::Config> {
    split_tls(url).ok()?.0.parse().ok()
}

/// Takes `sslrootcert` out of a `postgres://` URL (tokio-postgres refuses options it does not
/// know) and reads `sslmode=verify-full` as `require`, which here always verifies the server's
/// certificate and host name. A URL of another form is left as it is.
fn split_tls(url: &str) -> Result<(String, TlsSettings), ConnectError> {
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        return Ok((url.to_string(), TlsSettings::default()));
    }
    let mut parsed = url::Url::parse(url).map_err(|_| ConnectError::BadUrl)?;
    let mut settings = TlsSettings::default();
    let mut kept = Vec::new();
    for (key, value) in parsed.query_pairs() {
        match (key.as_ref(), value.as_ref()) {
            ("sslrootcert", path) => settings.root_cert = Some(path.into()),
            ("sslmode", "verify-full") => kept.push((key.to_string(), "require".to_string())),
            _ => kept.push((key.to_string(), value.to_string())),
        }
    }
    if kept.is_empty() {
        parsed.set_query(None);
    } else {
        parsed.query_pairs_mut().clear().extend_pairs(kept);
    }
    Ok((parsed.into(), settings))
}

fn rustls_connector(
    settings: &TlsSettings,
) -> Result<tokio_postgres_rustls::MakeRustlsConnect, ConnectError> {
    use rustls::pki_types::{pem::PemObject, CertificateDer};
    let mut roots = rustls::RootCertStore::empty();
    match &settings.root_cert {
        Some(path) => {
            let problem = |problem: String| ConnectError::RootCert {
                path: path.display().to_string(),
                problem,
            };
            let pem = std::fs::read(path).map_err(|e| problem(e.to_string()))?;
            let mut found = 0;
            for cert in CertificateDer::pem_slice_iter(&pem) {
                let cert = cert.map_err(|e| problem(e.to_string()))?;
                roots.add(cert).map_err(|e| problem(e.to_string()))?;
                found += 1;
            }
            if found == 0 {
                return Err(problem("no PEM certificate in it".into()));
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
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
    let (url, tls) = split_tls(url.expose())?;
    let mut config: tokio_postgres::Config = url.parse().map_err(|_| ConnectError::BadUrl)?;
    config
        .application_name(application_name)
        .connect_timeout(timeout)
        .keepalives(true)
        .keepalives_idle(Duration::from_secs(5))
        .tcp_user_timeout(timeout);
    let connecting = async {
        if config.get_ssl_mode() == SslMode::Require {
            let (client, connection) = config
                .connect(rustls_connector(&tls)?)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sslrootcert_is_taken_out_of_the_url_and_verify_full_means_require() {
        let (url, tls) = split_tls(
            "postgres://u:p%40ss@db:5432/baton?sslmode=verify-full&sslrootcert=/etc/baton/ca.pem&application_name=x",
        )
        .unwrap();
        assert_eq!(
            url,
            "postgres://u:p%40ss@db:5432/baton?sslmode=require&application_name=x"
        );
        assert_eq!(
            tls.root_cert.as_deref(),
            Some(std::path::Path::new("/etc/baton/ca.pem"))
        );
        let (url, tls) = split_tls("postgres://u:p@db/baton?sslrootcert=ca.pem").unwrap();
        assert_eq!(url, "postgres://u:p@db/baton");
        assert!(tls.root_cert.is_some());
        let (url, tls) = split_tls("host=db user=u").unwrap();
        assert_eq!(
            (url.as_str(), tls),
            ("host=db user=u", TlsSettings::default())
        );
    }

    #[test]
    fn a_missing_ca_file_is_named_without_the_url() {
        let settings = TlsSettings {
            root_cert: Some("/nonexistent/ca.pem".into()),
        };
        let message = rustls_connector(&settings).err().unwrap().to_string();
        assert!(message.contains("/nonexistent/ca.pem"), "{message}");
        assert!(message.contains("sslrootcert"), "{message}");
    }
}
