//! Everything that speaks the dbt Cloud Administrative API v2: wire types shared with the emulator,
//! the HTTP client, its error taxonomy and the per-account request budget.

pub mod budget;
pub mod client;
pub mod error;
pub mod job_names;
pub mod time;
pub mod wire;

pub use budget::{BudgetStats, RequestBudget};
pub use client::{ClientConfig, DbtCloudClient, ListRuns, Related};
pub use error::{ApiError, TriggerError};
