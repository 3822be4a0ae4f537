//! Newtypes for every identifier baton handles, so a job id is never passed where a run id belongs.

use serde::{Deserialize, Serialize};
use std::fmt;

macro_rules! int_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub i64);

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl From<i64> for $name {
            fn from(v: i64) -> Self {
                Self(v)
            }
        }
    };
}

int_id!(
    /// A dbt Cloud account id (14 digits since 2024: always 64-bit).
    AccountId
);
int_id!(
    /// A dbt Cloud job definition id.
    JobId
);
int_id!(
    /// A dbt Cloud run id.
    RunId
);
int_id!(
    /// A dbt Cloud project id.
    ProjectId
);
int_id!(
    /// A dbt Cloud environment id.
    EnvironmentId
);
int_id!(
    /// A dbt Cloud trigger id.
    TriggerId
);
int_id!(
    /// A dbt Cloud run step id.
    StepId
);

/// The name a daemon config gives one dbt Cloud account (`dbt_cloud:` is the account `default`,
/// `accounts:` names the others); a step names the account its job lives in. The `default`
/// account's name is borrowed, not allocated: nearly every step of every pipeline carries it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct AccountName(pub std::borrow::Cow<'static, str>);

impl AccountName {
    pub const DEFAULT: &'static str = "default";

    pub fn is_default(&self) -> bool {
        self.0 == Self::DEFAULT
    }
}

impl Default for AccountName {
    fn default() -> Self {
        Self(std::borrow::Cow::Borrowed(Self::DEFAULT))
    }
}

impl fmt::Display for AccountName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}
