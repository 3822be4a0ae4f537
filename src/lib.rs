//! baton: a scheduler daemon that chains dbt Cloud jobs. The library holds every part; `main.rs` only
//! calls `cli::main`.

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
