//! What the operator commands share: finding the daemon's API from `--config`, calling it with the
//! bearer token, exit codes, and plain tables.
//!
//! Exit codes (scripts may rely on them):
//! - 0: done (for `status`, `runs`, `why`: the answer was printed);
//! - 1: the daemon refused the request (unknown pipeline or run, a run that cannot be retried or
//!   cancelled, a bad date...) or the config could not be read;
//! - 2: wrong command-line usage (clap);
//! - 3: the daemon could not be reached (not running, wrong `http.listen`);
//! - 4: the daemon refused the token (401), or the token the config names is not available here;
//! - 5: the daemon failed to answer properly (5xx, or an answer this baton cannot read).

pub use super::common::{block_on, Failure};
use crate::config::daemon::DaemonConfig;
use crate::secret::Secret;
use serde::de::DeserializeOwned;
use serde_json::Value;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

/// The exit codes, for `--help`.
pub const EXIT_CODES_HELP: &str =
    "Exit codes: 0 done; 1 refused by the daemon (unknown pipeline or run, \
not allowed in its state, bad input) or unreadable config; 2 usage; 3 daemon not reachable; \
4 token refused or unavailable; 5 the daemon failed to answer properly.";

pub const EXIT_REFUSED: u8 = 1;
pub const EXIT_UNREACHABLE: u8 = 3;
pub const EXIT_UNAUTHORIZED: u8 = 4;
pub const EXIT_SERVER: u8 = 5;

/// Arguments every operator command takes.
#[derive(Debug, Clone, clap::Args)]
pub struct ControlArgs {
    /// The daemon's config file: its `http.listen` and `http.token_env`/`token_file` are used.
    #[arg(long, short, env = "BATON_CONFIG")]
    pub config: PathBuf,
    /// Print the API's JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// A connection to the running daemon's control API.
#[derive(Debug)]
pub struct ApiClient {
    base: url::Url,
    listen: SocketAddr,
    config: PathBuf,
    token: Option<Secret>,
    http: reqwest::Client,
}

/// The address to connect to for a listen address (a wildcard listens on loopback too).
fn connect_addr(listen: SocketAddr) -> SocketAddr {
    let ip = match listen.ip() {
        IpAddr::V4(v4) if v4.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(v6) if v6.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, listen.port())
}

impl ApiClient {
    pub fn from_args(args: &ControlArgs) -> Result<Self, Failure> {
        let config = DaemonConfig::load(&args.config)
            .map_err(|e| Failure::new(EXIT_REFUSED, e.to_string()))?;
        let token = config.resolve_http_token().map_err(|e| {
            Failure::new(
                EXIT_UNAUTHORIZED,
                format!("the config names a control API token this shell cannot read: {e}"),
            )
        })?;
        let addr = connect_addr(config.http.listen);
        let base = url::Url::parse(&format!("http://{addr}/api/v1/"))
            .map_err(|e| Failure::new(EXIT_REFUSED, format!("bad http.listen: {e}")))?;
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .connect_timeout(Duration::from_secs(5))
            // A standby's redirect to the leader is followed by hand, keeping the token.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| Failure::new(EXIT_SERVER, e.to_string()))?;
        Ok(Self {
            base,
            listen: config.http.listen,
            config: args.config.clone(),
            token,
            http,
        })
    }

    /// `segments` are escaped one by one (run ids hold `@`, `:` and `#`).
    fn url(&self, segments: &[&str], query: &[(&str, String)]) -> url::Url {
        let mut url = self.base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty();
            path.extend(segments);
        }
        if !query.is_empty() {
            let mut pairs = url.query_pairs_mut();
            for (k, v) in query {
                pairs.append_pair(k, v);
            }
        }
        url
    }

    pub async fn get<T: DeserializeOwned>(
        &self,
        segments: &[&str],
        query: &[(&str, String)],
    ) -> Result<T, Failure> {
        let request = self.http.get(self.url(segments, query));
        self.send(request).await
    }

    pub async fn post<T: DeserializeOwned>(
        &self,
        segments: &[&str],
        body: &Value,
    ) -> Result<T, Failure> {
        let request = self.http.post(self.url(segments, &[])).json(body);
        self.send(request).await
    }

    async fn send<T: DeserializeOwned>(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<T, Failure> {
        let request = match &self.token {
            Some(token) => request.bearer_auth(token.expose()),
            None => request,
        };
        let again = request.try_clone();
        let mut response = request.send().await.map_err(|e| self.unreachable(&e))?;
        if let (Some(leader), Some(again)) = (standby_redirect(&response), again) {
            // A standby of an HA deployment names the leader (from the shared database): ask it.
            let (client, request) = again.build_split();
            let mut request = request.map_err(|e| self.unreachable(&e))?;
            *request.url_mut() = leader;
            response = client
                .execute(request)
                .await
                .map_err(|e| self.unreachable(&e))?;
        }
        let status = response.status();
        let bytes = response.bytes().await.map_err(|e| self.unreachable(&e))?;
        if status.is_success() {
            return serde_json::from_slice(&bytes).map_err(|e| {
                Failure::new(
                    EXIT_SERVER,
                    format!("the daemon's answer is not what this baton expects ({e}); are the CLI and the daemon the same version?"),
                )
            });
        }
        let message = serde_json::from_slice::<Value>(&bytes)
            .ok()
            .and_then(|v| v["error"].as_str().map(str::to_string))
            .unwrap_or_else(|| String::from_utf8_lossy(&bytes).chars().take(300).collect());
        let code = match status.as_u16() {
            401 => EXIT_UNAUTHORIZED,
            400..=499 => EXIT_REFUSED,
            _ => EXIT_SERVER,
        };
        Err(Failure::new(code, message))
    }

    fn unreachable(&self, e: &reqwest::Error) -> Failure {
        let why = if e.is_connect() {
            "connection refused".to_string()
        } else if e.is_timeout() {
            "no answer in time".to_string()
        } else {
            e.to_string()
        };
        Failure::new(
            EXIT_UNREACHABLE,
            format!(
                "cannot reach the baton daemon at {} ({why}); is `baton run --config {}` running? it listens on {} (`http.listen` in that file)",
                connect_addr(self.listen),
                self.config.display(),
                self.listen
            ),
        )
    }
}

/// Where a standby sends API callers: the leader's address (`307` with an http(s) `Location`).
fn standby_redirect(response: &reqwest::Response) -> Option<url::Url> {
    if response.status() != reqwest::StatusCode::TEMPORARY_REDIRECT {
        return None;
    }
    let location = response.headers().get(reqwest::header::LOCATION)?;
    url::Url::parse(location.to_str().ok()?)
        .ok()
        .filter(|u| matches!(u.scheme(), "http" | "https"))
}

/// Prints a value as pretty JSON.
pub fn print_json<T: serde::Serialize>(value: &T) {
    match serde_json::to_string_pretty(value) {
        Ok(text) => println!("{text}"),
        Err(e) => eprintln!("error: {e}"),
    }
}

/// Left-aligned columns separated by two spaces; the first row is the header.
pub fn table(rows: &[Vec<String>]) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (c, cell) in row.iter().enumerate() {
            if c + 1 == row.len() {
                line.push_str(cell);
            } else {
                line.push_str(cell);
                line.push_str(&" ".repeat(widths[c] - cell.chars().count() + 2));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// A timestamp in a table: UTC, to the second.
pub fn when(t: Option<chrono::DateTime<chrono::Utc>>) -> String {
    t.map_or("-".into(), crate::humanize::utc)
}
