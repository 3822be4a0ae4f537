//! `baton bench`: arguments and dispatch to `crate::bench`; prints the table, then the JSON line.

use crate::bench::{self, Options, Scenario};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// Small sizes: a few seconds in all, for a smoke test (the figures then say little).
    #[arg(long)]
    pub quick: bool,
    /// Run only this scenario (repeatable); all of them by default.
    #[arg(long, value_enum)]
    pub only: Vec<Scenario>,
    /// Keep the scratch directories (configs, logs, stores) and print where they are.
    #[arg(long)]
    pub keep: bool,
    /// Also write the JSON line to this file.
    #[arg(long, value_name = "FILE")]
    pub json_out: Option<PathBuf>,
}

/// Runs the benchmark; exits 1 when a scenario could not run (a missed target is not a failure).
pub fn run(args: &BenchArgs) -> ExitCode {
    let mut scenarios = if args.only.is_empty() {
        Scenario::ALL.to_vec()
    } else {
        args.only.clone()
    };
    scenarios.sort();
    scenarios.dedup();
    let options = Options {
        quick: args.quick,
        keep: args.keep,
    };
    let began = std::time::Instant::now();
    let runtime = match super::common::runtime() {
        Ok(r) => r,
        Err(code) => return code,
    };
    let report = runtime.block_on(bench::run(options, &scenarios));
    let json = report.json(args.quick, began.elapsed().as_secs_f64());
    print!("{}", report.table());
    println!("{json}");
    if let Some(path) = &args.json_out {
        if let Err(e) = std::fs::write(path, format!("{json}\n")) {
            eprintln!("error: cannot write {}: {e}", path.display());
            return ExitCode::FAILURE;
        }
    }
    if report.failures.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(super::EXIT_PROBLEMS)
    }
}
