//! High availability on a shared PostgreSQL: connecting (`connect.rs`), the leadership lease and
//! the epoch fence every leader write checks (`lease.rs`), and the elector task that acquires,
//! renews, self-fences and releases it, publishing this node's role (`elector.rs`).

pub mod connect;
pub mod elector;
pub mod lease;

pub use elector::{Elector, ElectorConfig, ElectorStats, Role, Term};
pub use lease::{Epoch, LeaderInfo, LeaseError};
