//! Command-line arguments and the `Subcommand::execute` dispatch: the binary's only entry point.

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "baton",
    version,
    about = "Chains dbt Cloud jobs on cron schedules, as a DAG."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serves a faithful local dbt Cloud API from a scenario file.
    Emulator(crate::emulator::cli::EmulatorArgs),
}

/// Runs the CLI and returns the process exit code.
pub fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Emulator(args) => args.execute(),
    }
}
