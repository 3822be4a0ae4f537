//! baton: a scheduler daemon that chains dbt Cloud jobs. The library holds every part; `main.rs` only
//! calls `cli::main`.

pub mod cli;
pub mod clock;
pub mod dbt_cloud;
pub mod emulator;
pub mod ids;
pub mod secret;
