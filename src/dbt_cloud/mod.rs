//! Everything that speaks the dbt Cloud Administrative API v2: wire types shared with the emulator,
//! the HTTP client, its error taxonomy and the per-account request budget.

pub mod time;
pub mod wire;
