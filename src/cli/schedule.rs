//! `baton schedule`: prints a pipeline's next fire times, in its zone and in UTC.

use super::common::find_pipeline;
use super::EXIT_PROBLEMS;
use crate::clock::{Clock, SystemClock};
use crate::model::schedule::Schedule;
use chrono::{DateTime, Utc};
use clap::Args;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, Args)]
pub struct ScheduleArgs {
    /// A pipeline file, or a pipeline's name in the pipelines directory.
    pub pipeline: String,
    /// Start from this instant (RFC 3339, e.g. 2026-03-28T00:00:00Z) instead of now.
    #[arg(long, value_name = "RFC3339", value_parser = parse_instant)]
    pub from: Option<DateTime<Utc>>,
    /// How many fire times to print.
    #[arg(long, value_name = "N", default_value_t = 10)]
    pub next: usize,
    /// The daemon config, for its `pipelines_dir`.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

fn parse_instant(text: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| format!("not an RFC 3339 instant ({e}); e.g. 2026-03-28T00:00:00Z"))
}

/// The lines `baton schedule` prints for `schedule` from `from`.
pub fn render(schedule: &Schedule, from: DateTime<Utc>, count: usize) -> String {
    let zone = schedule.timezone();
    let mut out = String::new();
    let mut cursor = from;
    for _ in 0..count {
        let Some(tick) = schedule.next_after(cursor) else {
            out.push_str("(no further fire times)\n");
            break;
        };
        let local = tick.with_timezone(&zone);
        out.push_str(&format!(
            "{}  {}\n",
            local.format("%a %Y-%m-%d %H:%M %Z (%:z)"),
            tick.format("%Y-%m-%dT%H:%M:%SZ"),
        ));
        cursor = tick;
    }
    out
}

pub fn run(args: &ScheduleArgs) -> ExitCode {
    let pipeline = match find_pipeline(&args.pipeline, args.config.as_deref()) {
        Ok(p) => p,
        Err(failure) => {
            failure.report();
            return ExitCode::from(EXIT_PROBLEMS);
        }
    };
    let Some(spec) = &pipeline.schedule else {
        println!(
            "{} has no schedule: it runs only when triggered",
            pipeline.name
        );
        return ExitCode::SUCCESS;
    };
    let schedule = match Schedule::new(spec) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(EXIT_PROBLEMS);
        }
    };
    let from = args.from.unwrap_or_else(|| SystemClock.now());
    println!(
        "{}: `{}` in {}{}",
        pipeline.name,
        spec.cron,
        spec.timezone.name(),
        if pipeline.suspended {
            " (suspended)"
        } else {
            ""
        }
    );
    println!(
        "next {} fire time(s) after {}:",
        args.next,
        from.to_rfc3339()
    );
    print!("{}", render(&schedule, from, args.next));
    ExitCode::SUCCESS
}
