//! Command-line arguments and the dispatch to one small function per subcommand: the binary's
//! only entry point.

pub mod actions;
pub mod api_client;
pub mod backfill;
pub mod bench;
pub(crate) mod common;
pub mod daemon;
pub mod demo;
pub mod emulator;
pub mod graph;
mod run_ha;
pub mod schedule;
pub mod schema;
pub mod status;
pub mod store;
pub mod validate;
pub mod validate_online;
pub mod why;

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
    Run(daemon::RunArgs),
    /// Run the daemon against the built-in dbt Cloud emulator with the example pipelines.
    Demo(demo::DemoArgs),
    /// Serve a faithful local dbt Cloud API from a scenario file.
    Emulator(emulator::EmulatorArgs),
    /// Pipelines and their latest runs, from the running daemon (one pipeline in detail).
    #[command(after_help = api_client::EXIT_CODES_HELP)]
    Status(status::StatusArgs),
    /// A pipeline's runs, newest first, with why they failed.
    #[command(after_help = api_client::EXIT_CODES_HELP)]
    Runs(status::RunsArgs),
    /// Run a pipeline now (optionally for a given logical date).
    #[command(after_help = api_client::EXIT_CODES_HELP)]
    Trigger(actions::TriggerArgs),
    /// Cancel a pipeline run (its dbt Cloud runs too), or a whole backfill.
    #[command(after_help = api_client::EXIT_CODES_HELP)]
    Cancel(actions::RunArg),
    /// Run a failed pipeline run's failed, upstream_failed and cancelled steps again.
    #[command(after_help = api_client::EXIT_CODES_HELP)]
    Retry(actions::RunArg),
    /// Stop scheduling a pipeline (active runs go on).
    #[command(after_help = api_client::EXIT_CODES_HELP)]
    Pause(actions::PipelineArg),
    /// Schedule a paused pipeline again.
    #[command(after_help = api_client::EXIT_CODES_HELP)]
    Resume(actions::PipelineArg),
    /// Run a pipeline for past dates, each with its own rendered overrides.
    #[command(after_help = api_client::EXIT_CODES_HELP)]
    Backfill(backfill::BackfillArgs),
    /// List backfills, or show one date by date.
    #[command(after_help = api_client::EXIT_CODES_HELP)]
    Backfills(backfill::BackfillsArgs),
    /// Say in one sentence what a pipeline or step is waiting for.
    #[command(after_help = api_client::EXIT_CODES_HELP)]
    Why(why::WhyArgs),
    /// Measure the daemon against the emulator (separate processes) and print the figures.
    Bench(bench::BenchArgs),
    /// Check or back up the state database (safe while the daemon runs).
    Store(store::StoreArgs),
}

/// Exit code for a run that found problems (validation errors, a pipeline not found).
pub const EXIT_PROBLEMS: u8 = 1;

/// Runs the CLI and returns the process exit code (clap itself exits 2 on usage errors).
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    // The long-lived daemon only: a short command gains nothing from a small heap, and the fixed
    // thresholds (each large buffer mapped and unmapped) tripled `validate`'s time on 10,000 files.
    if matches!(cli.command, Command::Run(_) | Command::Demo(_)) {
        crate::malloc::tune();
    }
    match cli.command {
        Command::Validate(args) => validate::run(&args),
        Command::Graph(args) => graph::run(&args),
        Command::Schedule(args) => schedule::run(&args),
        Command::Schema => schema::run(),
        Command::Run(args) => daemon::run(&args),
        Command::Demo(args) => demo::run(&args),
        Command::Emulator(args) => args.execute(),
        Command::Status(args) => status::status(&args),
        Command::Runs(args) => status::runs(&args),
        Command::Trigger(args) => actions::trigger(&args),
        Command::Cancel(args) => actions::cancel(&args),
        Command::Retry(args) => actions::retry(&args),
        Command::Pause(args) => actions::pause(&args),
        Command::Resume(args) => actions::resume(&args),
        Command::Backfill(args) => backfill::create(&args),
        Command::Backfills(args) => backfill::inspect(&args),
        Command::Why(args) => why::run(&args),
        Command::Bench(args) => bench::run(&args),
        Command::Store(args) => store::run(&args),
    }
}
