//! baton: a scheduler daemon that chains dbt Cloud jobs. The library holds every part; `main.rs` only
//! calls `cli::main`.

// The crate under its own name, so that test support shared with the integration tests
// (`tests/it/support/pg.rs`, included by the store's unit tests) names it the same way there.
#[cfg(test)]
extern crate self as baton;

pub mod bench;
pub mod cli;
pub mod clock;
pub mod config;
pub mod dbt_cloud;
pub mod emulator;
pub mod engine;
pub mod ha;
pub mod http;
pub mod humanize;
pub mod ids;
pub mod logging;
pub mod malloc;
pub mod model;
pub mod ops;
pub mod runtime;
pub mod secret;
pub mod store;
