//! The daemon's own config file (`config.example.yaml` documents every key): dbt Cloud access
//! (`dbt_cloud:` is the account named `default`, `accounts:` names more), directories, HTTP
//! listener, polling and limits. Unknown keys are errors; the API token is never
//! written inline, only named (an environment variable or a file).

use super::account_block::{account_config, RawDbtCloud};
use super::store::{RawStore, StoreConfig};
use crate::ids::{AccountId, AccountName};
use crate::secret::Secret;
use serde::{Deserialize, Deserializer};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;
use url::Url;

/// Why the daemon config could not be loaded or a secret it names could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: cannot read: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}:{line}:{column}: {message}")]
    Parse {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
    /// A named secret is missing or empty. The message names where it was looked for, never a value.
    #[error("{0}")]
    Secret(String),
}

/// Where a secret comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    /// An environment variable's name.
    Env(String),
    /// A file (a systemd credential, say); surrounding whitespace is dropped.
    File(PathBuf),
}

impl SecretSource {
    pub fn resolve(&self) -> Result<Secret, ConfigError> {
        let value = match self {
            SecretSource::Env(name) => std::env::var(name).map_err(|_| {
                ConfigError::Secret(format!("environment variable `{name}` is not set"))
            })?,
            SecretSource::File(path) => std::fs::read_to_string(path).map_err(|e| {
                ConfigError::Secret(format!("cannot read secret file {}: {e}", path.display()))
            })?,
        };
        let value = value.trim();
        if value.is_empty() {
            return Err(ConfigError::Secret(format!("{} is empty", self.describe())));
        }
        Ok(Secret::new(value))
    }

    pub fn describe(&self) -> String {
        match self {
            SecretSource::Env(name) => format!("environment variable `{name}`"),
            SecretSource::File(path) => format!("secret file {}", path.display()),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    #[default]
    Pretty,
    Json,
}

/// What a stopping daemon does with runs in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ShutdownPolicy {
    /// Leave them running in dbt Cloud; the next start re-attaches.
    #[default]
    Detach,
    /// Cancel them (and confirm) before exiting.
    Cancel,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DbtCloudConfig {
    /// e.g. `https://cloud.getdbt.com` or a regional / cell URL: never assumed.
    pub base_url: Url,
    pub account_id: AccountId,
    pub token: SecretSource,
    pub requests_per_minute: u32,
    pub request_timeout: Duration,
    pub connect_timeout: Duration,
    /// The HMAC secret of this account's webhook subscription (accounts under `accounts:`; the
    /// `default` account's is in `webhooks:`).
    pub webhook_secret: Option<SecretSource>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpConfig {
    pub listen: SocketAddr,
    /// Bearer token the control API requires, when set.
    pub token: Option<SecretSource>,
    /// The URL other nodes and the CLI reach this node's API at (shown by standbys as the
    /// leader's address); `listen` when absent.
    pub advertise: Option<Url>,
}

/// The dbt Cloud webhook receiver (`POST /webhooks/dbt-cloud`), on when the section is present.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhooksConfig {
    /// The subscription's HMAC secret.
    pub secret: SecretSource,
    /// The polling interval while webhooks are on (polling stays as the fallback); the top-level
    /// `poll_interval` when absent.
    pub poll_interval: Option<Duration>,
}

/// The body a notification target receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NotificationFormat {
    /// baton's own JSON object.
    Json,
    /// A Slack incoming-webhook body (`text` and `blocks`), also read by Mattermost and others.
    Slack,
}

/// What a notification target hears about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NotificationEvent {
    /// A pipeline run failed.
    Failure,
    /// A pipeline run succeeded.
    Success,
    /// A step's attempt failed and a retry is scheduled.
    Retry,
    /// Schedule ticks were missed (found later than the on-time grace, e.g. after downtime).
    Missed,
    /// A pipeline run was not done by its pipeline's `deadline` (once per run).
    Late,
}

/// Where a notification target's URL comes from. A Slack webhook URL is a secret: keep it in an
/// environment variable or a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UrlSource {
    Inline(Url),
    Secret(SecretSource),
}

/// One webhook that receives notifications.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotificationTarget {
    /// A name for logs (the URL itself is never logged).
    pub name: String,
    pub url: UrlSource,
    pub format: NotificationFormat,
    pub on: Vec<NotificationEvent>,
}

impl NotificationTarget {
    /// The URL to post to, read from its source; kept as a `Secret` so it never shows in logs.
    pub fn resolve_url(&self) -> Result<Secret, ConfigError> {
        let text = match &self.url {
            UrlSource::Inline(url) => return Ok(Secret::new(url.as_str())),
            UrlSource::Secret(source) => source.resolve()?,
        };
        match Url::parse(text.expose()) {
            Ok(url) if matches!(url.scheme(), "http" | "https") => Ok(text),
            _ => Err(ConfigError::Secret(format!(
                "notification `{}`: the URL in {} is not an http(s) URL",
                self.name,
                match &self.url {
                    UrlSource::Secret(source) => source.describe(),
                    UrlSource::Inline(_) => String::new(),
                }
            ))),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DaemonConfig {
    /// The file it was loaded from.
    pub source: PathBuf,
    /// The account named `default` (the `dbt_cloud:` block, or `accounts.default`).
    pub dbt_cloud: DbtCloudConfig,
    /// The other accounts, by name.
    pub accounts: BTreeMap<AccountName, DbtCloudConfig>,
    pub state_dir: PathBuf,
    pub pipelines_dir: PathBuf,
    pub http: HttpConfig,
    pub poll_interval: Duration,
    pub log_format: LogFormat,
    /// Per-account cap on attempts in flight.
    pub max_in_flight: usize,
    /// Most missed ticks one pipeline replays under `catchup: all`.
    pub catchup_max: usize,
    pub on_shutdown: ShutdownPolicy,
    pub history_retention: Duration,
    pub webhooks: Option<WebhooksConfig>,
    pub notifications: Vec<NotificationTarget>,
    /// Timing histograms per (pipeline, step) rather than per pipeline (`metrics.step_histograms`).
    pub metrics_step_histograms: bool,
    /// Where state lives: `state_dir` (default) or a shared PostgreSQL with leadership.
    pub store: StoreConfig,
    /// This node's name among nodes sharing a database (default: the host name).
    pub node_name: String,
}

pub(super) fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    let text: Option<String> = Option::deserialize(d)?;
    text.map(|t| {
        humantime::parse_duration(&t).map_err(|e| {
            serde::de::Error::custom(format!(
                "bad duration `{t}`: {e} (durations look like `90s`, `2h 30m`)"
            ))
        })
    })
    .transpose()
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawHttp {
    listen: Option<SocketAddr>,
    token_env: Option<String>,
    token_file: Option<PathBuf>,
    advertise: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWebhooks {
    secret_env: Option<String>,
    secret_file: Option<PathBuf>,
    #[serde(default, deserialize_with = "duration")]
    poll_interval: Option<Duration>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawMetrics {
    #[serde(default)]
    step_histograms: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNotification {
    name: Option<String>,
    url: Option<String>,
    url_env: Option<String>,
    url_file: Option<PathBuf>,
    format: NotificationFormat,
    #[serde(default = "default_notification_events")]
    on: Vec<NotificationEvent>,
}

fn default_notification_events() -> Vec<NotificationEvent> {
    vec![NotificationEvent::Failure]
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDaemon {
    dbt_cloud: Option<RawDbtCloud>,
    #[serde(default)]
    accounts: BTreeMap<String, RawDbtCloud>,
    state_dir: PathBuf,
    pipelines_dir: Option<PathBuf>,
    #[serde(default)]
    http: RawHttp,
    #[serde(default, deserialize_with = "duration")]
    poll_interval: Option<Duration>,
    #[serde(default)]
    log_format: LogFormat,
    max_in_flight: Option<usize>,
    catchup_max: Option<usize>,
    #[serde(default)]
    on_shutdown: ShutdownPolicy,
    #[serde(default, deserialize_with = "duration")]
    history_retention: Option<Duration>,
    webhooks: Option<RawWebhooks>,
    #[serde(default)]
    notifications: Vec<RawNotification>,
    #[serde(default)]
    metrics: RawMetrics,
    store: Option<RawStore>,
    node_name: Option<String>,
}

pub(super) fn secret_source(
    env: Option<String>,
    file: Option<PathBuf>,
    base: &Path,
    section: &str,
) -> Result<Option<SecretSource>, String> {
    match (env, file) {
        (Some(_), Some(_)) => Err(format!(
            "`{section}` sets both `token_env` and `token_file`; set exactly one"
        )),
        (Some(env), None) => Ok(Some(SecretSource::Env(env))),
        (None, Some(file)) => Ok(Some(SecretSource::File(base.join(file)))),
        (None, None) => Ok(None),
    }
}

impl DaemonConfig {
    pub fn load(path: &Path) -> Result<DaemonConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_str_at(path, &text)
    }

    /// Parses `text` as if read from `path` (relative paths resolve against its directory).
    pub fn from_str_at(path: &Path, text: &str) -> Result<DaemonConfig, ConfigError> {
        let raw: RawDaemon = serde_yaml::from_str(text).map_err(|e| {
            let (line, column) = e.location().map_or((0, 0), |l| (l.line(), l.column()));
            let message = e.to_string();
            // serde_yaml appends the position the error already carries in its fields.
            let message = match message.rfind(" at line ") {
                Some(at) => message[..at].to_string(),
                None => message,
            };
            ConfigError::Parse {
                path: path.to_path_buf(),
                line,
                column,
                message,
            }
        })?;
        let invalid = |message: String| ConfigError::Invalid {
            path: path.to_path_buf(),
            message,
        };
        let base = path.parent().unwrap_or(Path::new("."));
        let base = if base.as_os_str().is_empty() {
            Path::new(".")
        } else {
            base
        };
        let mut accounts = BTreeMap::new();
        for (name, account) in raw.accounts {
            if !crate::config::fields::valid_name(&name) {
                return Err(invalid(format!(
                    "invalid account name `{name}` under `accounts` (letters, digits, `_`, `-`, `.`)"
                )));
            }
            let section = format!("accounts.{name}");
            let config = account_config(account, base, &section, true).map_err(&invalid)?;
            accounts.insert(AccountName(name.into()), config);
        }
        let dbt_cloud = match (raw.dbt_cloud, accounts.remove(&AccountName::default())) {
            (Some(_), Some(_)) => return Err(invalid(
                "both `dbt_cloud` and `accounts.default` describe the account `default`; keep one"
                    .into(),
            )),
            (Some(block), None) => {
                account_config(block, base, "dbt_cloud", false).map_err(&invalid)?
            }
            (None, Some(default)) => default,
            (None, None) => {
                return Err(invalid(
                    "no dbt Cloud account: add a `dbt_cloud` block (the account `default`)".into(),
                ))
            }
        };
        let http_token = secret_source(raw.http.token_env, raw.http.token_file, base, "http")
            .map_err(&invalid)?;
        let advertise = raw
            .http
            .advertise
            .map(|text| {
                Url::parse(&text)
                    .ok()
                    .filter(|u| matches!(u.scheme(), "http" | "https"))
                    .ok_or_else(|| {
                        invalid(format!(
                            "`http.advertise` must be an http(s) URL, found `{text}`"
                        ))
                    })
            })
            .transpose()?;
        let store = match raw.store {
            Some(store) => store.lower(base).map_err(&invalid)?,
            None => StoreConfig::Local,
        };
        let node_name = super::store::node_name(raw.node_name).map_err(&invalid)?;
        let max_in_flight = raw.max_in_flight.unwrap_or(50);
        if max_in_flight == 0 {
            return Err(invalid("`max_in_flight` must be at least 1".into()));
        }
        let poll_interval = raw.poll_interval.unwrap_or(Duration::from_secs(10));
        if poll_interval.is_zero() {
            return Err(invalid("`poll_interval` must be longer than zero".into()));
        }
        let webhooks = match raw.webhooks {
            None => None,
            Some(w) => {
                let secret = match (w.secret_env, w.secret_file) {
                    (Some(_), Some(_)) => {
                        return Err(invalid(
                            "`webhooks` sets both `secret_env` and `secret_file`; set exactly one"
                                .into(),
                        ))
                    }
                    (Some(env), None) => SecretSource::Env(env),
                    (None, Some(file)) => SecretSource::File(base.join(file)),
                    (None, None) => {
                        return Err(invalid(
                            "`webhooks` needs `secret_env` or `secret_file` (the secret is never inline)"
                                .into(),
                        ))
                    }
                };
                if w.poll_interval.is_some_and(|d| d.is_zero()) {
                    return Err(invalid(
                        "`webhooks.poll_interval` must be longer than zero".into(),
                    ));
                }
                Some(WebhooksConfig {
                    secret,
                    poll_interval: w.poll_interval,
                })
            }
        };
        let mut notifications = Vec::new();
        for (i, n) in raw.notifications.into_iter().enumerate() {
            let name = n.name.unwrap_or_else(|| format!("notification {}", i + 1));
            let url = match (n.url, n.url_env, n.url_file) {
                (Some(url), None, None) => UrlSource::Inline(
                    Url::parse(&url)
                        .ok()
                        .filter(|u| matches!(u.scheme(), "http" | "https"))
                        .ok_or_else(|| {
                            invalid(format!("`{name}`: `url` must be an http(s) URL"))
                        })?,
                ),
                (None, Some(env), None) => UrlSource::Secret(SecretSource::Env(env)),
                (None, None, Some(file)) => UrlSource::Secret(SecretSource::File(base.join(file))),
                _ => {
                    return Err(invalid(format!(
                        "`{name}` needs exactly one of `url`, `url_env` or `url_file`"
                    )))
                }
            };
            if n.on.is_empty() {
                return Err(invalid(format!(
                    "`{name}`: `on` lists no event (failure, success, retry, missed, late)"
                )));
            }
            let mut on = n.on;
            on.sort();
            on.dedup();
            notifications.push(NotificationTarget {
                name,
                url,
                format: n.format,
                on,
            });
        }
        Ok(DaemonConfig {
            source: path.to_path_buf(),
            dbt_cloud,
            accounts,
            state_dir: base.join(raw.state_dir),
            pipelines_dir: base.join(raw.pipelines_dir.unwrap_or_else(|| "pipelines".into())),
            http: HttpConfig {
                listen: raw
                    .http
                    .listen
                    .unwrap_or(SocketAddr::from(([127, 0, 0, 1], 8377))),
                token: http_token,
                advertise,
            },
            poll_interval,
            log_format: raw.log_format,
            max_in_flight,
            catchup_max: raw.catchup_max.unwrap_or(10),
            on_shutdown: raw.on_shutdown,
            history_retention: raw
                .history_retention
                .unwrap_or(Duration::from_secs(30 * 86_400)),
            webhooks,
            notifications,
            metrics_step_histograms: raw.metrics.step_histograms,
            store,
            node_name,
        })
    }

    /// The dbt Cloud API token.
    pub fn resolve_token(&self) -> Result<Secret, ConfigError> {
        self.dbt_cloud.token.resolve()
    }

    /// The names of every account, `default` included.
    pub fn account_names(&self) -> std::collections::BTreeSet<AccountName> {
        std::iter::once(AccountName::default())
            .chain(self.accounts.keys().cloned())
            .collect()
    }

    /// Every account by name, `default` first.
    pub fn all_accounts(&self) -> Vec<(AccountName, &DbtCloudConfig)> {
        std::iter::once((AccountName::default(), &self.dbt_cloud))
            .chain(self.accounts.iter().map(|(n, c)| (n.clone(), c)))
            .collect()
    }

    /// The webhook receiver's HMAC secret, when webhooks are on.
    pub fn resolve_webhook_secret(&self) -> Result<Option<Secret>, ConfigError> {
        self.webhooks
            .as_ref()
            .map(|w| w.secret.resolve())
            .transpose()
    }

    /// The control API's bearer token, when one is configured.
    pub fn resolve_http_token(&self) -> Result<Option<Secret>, ConfigError> {
        self.http
            .token
            .as_ref()
            .map(SecretSource::resolve)
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = "dbt_cloud:\n  base_url: https://emea.dbt.com\n  account_id: 70403103916543\n  token_env: BATON_TEST_TOKEN_UNSET\nstate_dir: state\n";

    #[test]
    fn the_example_config_loads_with_the_documented_values() {
        let text = include_str!("../../config.example.yaml");
        let c = DaemonConfig::from_str_at(Path::new("config.example.yaml"), text).unwrap();
        assert_eq!(c.dbt_cloud.base_url.as_str(), "https://cloud.getdbt.com/");
        assert_eq!(
            c.dbt_cloud.token,
            SecretSource::Env("DBT_CLOUD_API_TOKEN".into())
        );
        assert_eq!(c.state_dir, PathBuf::from("/var/lib/baton"));
        assert_eq!(c.http.token, None);
        assert_eq!(c.log_format, LogFormat::Pretty);
    }

    #[test]
    fn defaults_and_relative_paths() {
        let c = DaemonConfig::from_str_at(Path::new("/etc/baton/config.yaml"), MINIMAL).unwrap();
        assert_eq!(c.state_dir, PathBuf::from("/etc/baton/state"));
        assert_eq!(c.pipelines_dir, PathBuf::from("/etc/baton/pipelines"));
        assert_eq!(c.http.listen.to_string(), "127.0.0.1:8377");
        assert_eq!(c.poll_interval, Duration::from_secs(10));
        assert_eq!(c.max_in_flight, 50);
        assert_eq!(c.catchup_max, 10);
        assert_eq!(c.dbt_cloud.requests_per_minute, 1000);
        assert_eq!(c.on_shutdown, ShutdownPolicy::Detach);
        assert_eq!(c.history_retention, Duration::from_secs(30 * 86_400));
        let err = c.resolve_token().unwrap_err().to_string();
        assert!(err.contains("BATON_TEST_TOKEN_UNSET"), "{err}");
    }

    #[test]
    fn unknown_key_names_the_position() {
        let text = format!("{MINIMAL}pol_interval: 5s\n");
        let err = DaemonConfig::from_str_at(Path::new("c.yaml"), &text).unwrap_err();
        let ConfigError::Parse { line, message, .. } = err else {
            panic!("{err}")
        };
        assert_eq!(line, 6);
        assert!(message.contains("pol_interval"), "{message}");
        assert!(!message.contains(" at line "), "{message}");
    }

    #[test]
    fn token_is_named_exactly_once() {
        let both = MINIMAL.replace(
            "  token_env: BATON_TEST_TOKEN_UNSET\n",
            "  token_env: X\n  token_file: t\n",
        );
        assert!(DaemonConfig::from_str_at(Path::new("c.yaml"), &both).is_err());
        let none = MINIMAL.replace("  token_env: BATON_TEST_TOKEN_UNSET\n", "");
        assert!(DaemonConfig::from_str_at(Path::new("c.yaml"), &none).is_err());
        let inline = MINIMAL.replace("token_env: BATON_TEST_TOKEN_UNSET", "token: abc");
        assert!(DaemonConfig::from_str_at(Path::new("c.yaml"), &inline).is_err());
    }

    #[test]
    fn the_example_config_commented_sections_load_once_uncommented() {
        let text: String = include_str!("../../config.example.yaml")
            .lines()
            .map(|l| match l.strip_prefix("# ") {
                Some(rest)
                    if rest.starts_with("webhooks:")
                        || rest.starts_with("notifications:")
                        || rest.starts_with("metrics:")
                        || rest.starts_with("accounts:")
                        || rest.starts_with("store:")
                        || rest.starts_with("node_name:")
                        || rest.starts_with("  ") =>
                {
                    format!("{rest}\n")
                }
                _ => format!("{l}\n"),
            })
            .collect();
        let c = DaemonConfig::from_str_at(Path::new("config.example.yaml"), &text).unwrap();
        assert_eq!(
            c.webhooks.unwrap().secret,
            SecretSource::Env("DBT_CLOUD_WEBHOOK_SECRET".into())
        );
        assert_eq!(c.notifications.len(), 2);
        assert_eq!(c.notifications[0].format, NotificationFormat::Slack);
        assert!(!c.metrics_step_histograms);
        let emea = &c.accounts[&AccountName("emea".into())];
        assert_eq!(emea.base_url.as_str(), "https://emea.dbt.com/");
        assert_eq!(
            emea.webhook_secret,
            Some(SecretSource::Env("DBT_CLOUD_EMEA_WEBHOOK_SECRET".into()))
        );
        assert_eq!(c.node_name, "baton-a");
        let super::StoreConfig::Postgres(pg) = &c.store else {
            panic!("{:?}", c.store)
        };
        assert_eq!(pg.url, SecretSource::Env("BATON_DATABASE_URL".into()));
        assert_eq!(pg.lease, Duration::from_secs(10));
    }

    #[test]
    fn webhooks_and_notifications_sections() {
        let text = format!(
            "{MINIMAL}webhooks:\n  secret_file: hook.secret\n  poll_interval: 2m\nnotifications:\n  - url_env: BATON_TEST_SLACK_UNSET\n    format: slack\n    on: [missed, failure, failure]\n  - name: pager\n    url: https://alerts.example.com/baton\n    format: json\n"
        );
        let c = DaemonConfig::from_str_at(Path::new("/etc/baton/config.yaml"), &text).unwrap();
        let w = c.webhooks.as_ref().unwrap();
        assert_eq!(
            w.secret,
            SecretSource::File(PathBuf::from("/etc/baton/hook.secret"))
        );
        assert_eq!(w.poll_interval, Some(Duration::from_secs(120)));
        assert_eq!(c.notifications.len(), 2);
        assert_eq!(c.notifications[0].name, "notification 1");
        assert_eq!(
            c.notifications[0].on,
            vec![NotificationEvent::Failure, NotificationEvent::Missed]
        );
        assert_eq!(c.notifications[1].on, vec![NotificationEvent::Failure]);
        assert_eq!(
            c.notifications[1].resolve_url().unwrap().expose(),
            "https://alerts.example.com/baton"
        );
        let err = c.notifications[0].resolve_url().unwrap_err().to_string();
        assert!(err.contains("BATON_TEST_SLACK_UNSET"), "{err}");

        for bad in [
            "webhooks:\n  poll_interval: 1m\n",
            "webhooks:\n  secret: inline\n",
            "notifications:\n  - format: json\n",
            "notifications:\n  - url: ftp://x\n    format: json\n",
            "notifications:\n  - url: https://x\n    url_env: X\n    format: json\n",
            "notifications:\n  - url: https://x\n    format: teams\n",
            "notifications:\n  - url: https://x\n    format: json\n    on: []\n",
        ] {
            let text = format!("{MINIMAL}{bad}");
            assert!(
                DaemonConfig::from_str_at(Path::new("c.yaml"), &text).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn token_file_is_trimmed_and_hidden() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("token"), "s3cret\n").unwrap();
        let text = MINIMAL.replace("token_env: BATON_TEST_TOKEN_UNSET", "token_file: token");
        let c = DaemonConfig::from_str_at(&dir.path().join("config.yaml"), &text).unwrap();
        let token = c.resolve_token().unwrap();
        assert_eq!(token.expose(), "s3cret");
        assert!(!format!("{token:?} {c:?}").contains("s3cret"));
    }
}
