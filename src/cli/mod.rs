//! Command-line arguments and the dispatch to one small function per subcommand: the binary's
//! only entry point.

pub mod actions;
pub mod api_client;
pub mod backfill;
mod common;
pub mod graph;
pub mod run;
pub mod schedule;
pub mod schema;
pub mod status;
pub mod validate;
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
    Run(run::RunArgs),
    /// Serve a faithful local dbt Cloud API from a scenario file.
    Emulator(crate::emulator::cli::EmulatorArgs),
    /// Pipelines and their latest runs, from the running daemon (one pipeline in detail).
    Status(status::StatusArgs),
    /// A pipeline's runs, newest first, with why they failed.
    Runs(status::RunsArgs),
    /// Run a pipeline now (optionally for a given logical date).
    Trigger(actions::TriggerArgs),
    /// Cancel a pipeline run (its dbt Cloud runs too), or a whole backfill.
    Cancel(actions::RunArg),
    /// Run a failed pipeline run's failed, upstream_failed and cancelled steps again.
    Retry(actions::RunArg),
    /// Stop scheduling a pipeline (active runs go on).
    Pause(actions::PipelineArg),
    /// Schedule a paused pipeline again.
    Resume(actions::PipelineArg),
    /// Run a pipeline for past dates, each with its own rendered overrides.
    Backfill(backfill::BackfillArgs),
    /// List backfills, or show one date by date.
    Backfills(backfill::BackfillsArgs),
    /// Say in one sentence what a pipeline or step is waiting for.
    Why(why::WhyArgs),
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
    }
}
