//! One dbt Cloud account's block of the daemon config: `dbt_cloud:` (the account `default`) or an
//! entry of `accounts:`, each with the same keys (base URL, account id, token by env var or file,
//! request budget, timeouts, and for `accounts:` entries their own webhook secret).

use super::daemon::{secret_source, DbtCloudConfig, SecretSource};
use crate::ids::AccountId;
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::time::Duration;
use url::Url;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDbtCloud {
    pub(super) base_url: String,
    pub(super) account_id: i64,
    pub(super) token_env: Option<String>,
    pub(super) token_file: Option<PathBuf>,
    pub(super) requests_per_minute: Option<u32>,
    #[serde(default, deserialize_with = "super::daemon::duration")]
    pub(super) request_timeout: Option<Duration>,
    #[serde(default, deserialize_with = "super::daemon::duration")]
    pub(super) connect_timeout: Option<Duration>,
    pub(super) webhook_secret_env: Option<String>,
    pub(super) webhook_secret_file: Option<PathBuf>,
}

/// One account's block (`dbt_cloud`, or an entry of `accounts`); `section` names it in errors.
pub(super) fn account_config(
    raw: RawDbtCloud,
    base: &Path,
    section: &str,
    own_webhook: bool,
) -> Result<DbtCloudConfig, String> {
    let token = secret_source(raw.token_env, raw.token_file, base, section)?.ok_or_else(|| {
        format!("`{section}` needs `token_env` or `token_file` (the token is never inline)")
    })?;
    let base_url = Url::parse(&raw.base_url)
        .ok()
        .filter(|u| matches!(u.scheme(), "http" | "https"))
        .ok_or_else(|| {
            format!(
                "`{section}.base_url` must be an http(s) URL, found `{}`",
                raw.base_url
            )
        })?;
    let requests_per_minute = raw.requests_per_minute.unwrap_or(1000);
    if requests_per_minute == 0 {
        return Err(format!(
            "`{section}.requests_per_minute` must be at least 1"
        ));
    }
    let webhook_secret = match (raw.webhook_secret_env, raw.webhook_secret_file) {
        (None, None) => None,
        _ if !own_webhook => {
            return Err(format!(
                "`{section}` takes no webhook secret: the `default` account's is under `webhooks`"
            ))
        }
        (Some(_), Some(_)) => {
            return Err(format!(
            "`{section}` sets both `webhook_secret_env` and `webhook_secret_file`; set exactly one"
        ))
        }
        (Some(env), None) => Some(SecretSource::Env(env)),
        (None, Some(file)) => Some(SecretSource::File(base.join(file))),
    };
    Ok(DbtCloudConfig {
        base_url,
        account_id: AccountId(raw.account_id),
        token,
        requests_per_minute,
        request_timeout: raw.request_timeout.unwrap_or(Duration::from_secs(30)),
        connect_timeout: raw.connect_timeout.unwrap_or(Duration::from_secs(10)),
        webhook_secret,
    })
}

#[cfg(test)]
mod tests {
    use crate::config::daemon::{DaemonConfig, SecretSource};
    use crate::ids::{AccountId, AccountName};
    use std::path::{Path, PathBuf};

    const MINIMAL: &str = "dbt_cloud:\n  base_url: https://emea.dbt.com\n  account_id: 70403103916543\n  token_env: BATON_TEST_TOKEN_UNSET\nstate_dir: state\n";

    #[test]
    fn accounts_beside_the_default_one() {
        let text = format!(
            "{MINIMAL}accounts:\n  emea:\n    base_url: https://emea.dbt.com\n    account_id: 7\n    token_file: emea.token\n    requests_per_minute: 60\n    webhook_secret_env: EMEA_HOOK\n"
        );
        let c = DaemonConfig::from_str_at(Path::new("/etc/baton/config.yaml"), &text).unwrap();
        let names: Vec<String> = c
            .account_names()
            .into_iter()
            .map(|a| a.0.into_owned())
            .collect();
        assert_eq!(names, ["default", "emea"]);
        let emea = &c.accounts[&AccountName("emea".into())];
        assert_eq!(emea.account_id, AccountId(7));
        assert_eq!(emea.requests_per_minute, 60);
        assert_eq!(
            emea.token,
            SecretSource::File(PathBuf::from("/etc/baton/emea.token"))
        );
        assert_eq!(c.all_accounts()[0].0, AccountName::default());

        // `accounts.default` may stand in for `dbt_cloud`, never beside it.
        let only_accounts = "accounts:\n  default:\n    base_url: https://x.dbt.com\n    account_id: 1\n    token_env: T\nstate_dir: s\n";
        let c = DaemonConfig::from_str_at(Path::new("c.yaml"), only_accounts).unwrap();
        assert_eq!(c.dbt_cloud.account_id, AccountId(1));
        assert!(c.accounts.is_empty());
        for (bad, says) in [
            (format!("{MINIMAL}accounts:\n  default:\n    base_url: https://x.dbt.com\n    account_id: 1\n    token_env: T\n"), "both"),
            (format!("{MINIMAL}accounts:\n  'a b':\n    base_url: https://x.dbt.com\n    account_id: 1\n    token_env: T\n"), "invalid account name"),
            (format!("{MINIMAL}accounts:\n  x:\n    base_url: https://x.dbt.com\n    account_id: 1\n"), "`accounts.x` needs `token_env`"),
            (MINIMAL.replace("state_dir", "  webhook_secret_env: H\nstate_dir"), "`webhooks`"),
            ("state_dir: s\n".to_string(), "no dbt Cloud account"),
        ] {
            let err = DaemonConfig::from_str_at(Path::new("c.yaml"), &bad)
                .unwrap_err()
                .to_string();
            assert!(err.contains(says), "{bad}: {err}");
        }
    }
}
