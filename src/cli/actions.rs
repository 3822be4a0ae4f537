//! `baton trigger`, `baton cancel`, `baton retry`, `baton pause` and `baton resume`: operator
//! actions sent to the running daemon.

use super::api_client::{block_on, print_json, ApiClient, ControlArgs};
use serde_json::{json, Value};
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct TriggerArgs {
    pub pipeline: String,
    /// The logical date to run for (2026-03-01, 2026-03-01T02:00 in the pipeline's zone, or
    /// RFC 3339); now when absent.
    #[arg(long)]
    pub logical_date: Option<String>,
    #[command(flatten)]
    pub control: ControlArgs,
}

#[derive(Debug, clap::Args)]
pub struct RunArg {
    /// A pipeline run id (`nightly@2026-03-01T02:00:00Z`), or for `cancel` a backfill id (`bf-...`).
    pub id: String,
    #[command(flatten)]
    pub control: ControlArgs,
}

#[derive(Debug, clap::Args)]
pub struct PipelineArg {
    pub pipeline: String,
    #[command(flatten)]
    pub control: ControlArgs,
}

pub fn trigger(args: &TriggerArgs) -> ExitCode {
    block_on(async {
        let api = ApiClient::from_args(&args.control)?;
        let body = match &args.logical_date {
            Some(d) => json!({ "logical_date": d }),
            None => json!({}),
        };
        let answer: Value = api
            .post(&["pipelines", &args.pipeline, "trigger"], &body)
            .await?;
        if args.control.json {
            print_json(&answer);
        } else {
            println!(
                "triggered {} (logical date {})",
                answer["run"]["id"].as_str().unwrap_or("?"),
                answer["run"]["logical_date"].as_str().unwrap_or("?")
            );
        }
        Ok(())
    })
}

/// Backfill ids never hold `@`; pipeline run ids always do.
fn is_backfill(id: &str) -> bool {
    !id.contains('@')
}

pub fn cancel(args: &RunArg) -> ExitCode {
    block_on(async {
        let api = ApiClient::from_args(&args.control)?;
        if is_backfill(&args.id) {
            let answer: Value = api
                .post(&["backfills", &args.id, "cancel"], &json!({}))
                .await?;
            if args.control.json {
                print_json(&answer);
            } else {
                println!(
                    "cancelled backfill {}: dates not started will not start, its active runs are being cancelled",
                    args.id
                );
            }
            return Ok(());
        }
        let answer: Value = api.post(&["runs", &args.id, "cancel"], &json!({})).await?;
        if args.control.json {
            print_json(&answer);
        } else {
            println!(
                "cancelling {}: {}",
                args.id,
                answer["note"].as_str().unwrap_or_default()
            );
        }
        Ok(())
    })
}

pub fn retry(args: &RunArg) -> ExitCode {
    block_on(async {
        let api = ApiClient::from_args(&args.control)?;
        let answer: Value = api.post(&["runs", &args.id, "retry"], &json!({})).await?;
        if args.control.json {
            print_json(&answer);
        } else {
            println!(
                "retrying {}: {}",
                args.id,
                answer["note"].as_str().unwrap_or_default()
            );
        }
        Ok(())
    })
}

pub fn pause(args: &PipelineArg) -> ExitCode {
    set_paused(args, "pause")
}

pub fn resume(args: &PipelineArg) -> ExitCode {
    set_paused(args, "resume")
}

fn set_paused(args: &PipelineArg, action: &str) -> ExitCode {
    block_on(async {
        let api = ApiClient::from_args(&args.control)?;
        let answer: Value = api
            .post(&["pipelines", &args.pipeline, action], &json!({}))
            .await?;
        if args.control.json {
            print_json(&answer);
        } else if answer["paused"] == json!(true) {
            println!(
                "paused {}: no new scheduled runs; active runs go on",
                args.pipeline
            );
        } else {
            let next = answer["next_fire_times"][0].as_str().unwrap_or("-");
            println!("resumed {}: next run at {next}", args.pipeline);
        }
        Ok(())
    })
}
