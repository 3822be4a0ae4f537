//! Command-line arguments and the dispatch to one small function per subcommand: the binary's
//! only entry point.

mod common;
pub mod demo;
pub mod graph;
pub mod run;
pub mod schedule;
pub mod schema;
pub mod validate;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

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
    /// Check pipeline files and report every problem with its position.
    Validate(validate::ValidateArgs),
    /// Print a pipeline's DAG as text, Graphviz dot or Mermaid.
    Graph(graph::GraphArgs),
    /// Print a pipeline's next fire times, in its zone and in UTC.
    Schedule(schedule::ScheduleArgs),
    /// Print the JSON Schema (draft-07) of the pipeline file format.
    Schema,
    /// Run the scheduler daemon.
    Run(run::RunArgs),
    /// Run the daemon against the built-in dbt Cloud emulator with the example pipelines.
    Demo(demo::DemoArgs),
    /// Serve a faithful local dbt Cloud API from a scenario file.
    Emulator(crate::emulator::cli::EmulatorArgs),
}

/// Exit code for a run that found problems (validation errors, a pipeline not found).
pub const EXIT_PROBLEMS: u8 = 1;

/// Runs the CLI and returns the process exit code (clap itself exits 2 on usage errors).
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Validate(args) => validate::run(&args),
        Command::Graph(args) => graph::run(&args),
        Command::Schedule(args) => schedule::run(&args),
        Command::Schema => schema::run(),
        Command::Run(args) => run::run(&args),
        Command::Demo(args) => demo::run(&args),
        Command::Emulator(args) => args.execute(),
    }
}
