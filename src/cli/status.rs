//! `baton status [PIPELINE]` and `baton runs PIPELINE`: what the running daemon knows, as tables
//! (or its JSON with `--json`), failures with their failed models and the dbt Cloud link.

use super::api_client::{block_on, print_json, table, when, ApiClient, ControlArgs, Failure};
use crate::engine::state::RunOrigin;
use crate::http::views::{PipelineView, RunSummary, RunView};
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// One pipeline in detail (its latest run, step by step); all pipelines when absent.
    pub pipeline: Option<String>,
    #[command(flatten)]
    pub control: ControlArgs,
}

#[derive(Debug, clap::Args)]
pub struct RunsArgs {
    pub pipeline: String,
    /// How many runs, newest first.
    #[arg(long, default_value_t = 20)]
    pub limit: usize,
    #[command(flatten)]
    pub control: ControlArgs,
}

pub fn status(args: &StatusArgs) -> ExitCode {
    block_on(async {
        let api = ApiClient::from_args(&args.control)?;
        match &args.pipeline {
            None => all_pipelines(&api, args.control.json).await,
            Some(name) => one_pipeline(&api, name, args.control.json).await,
        }
    })
}

pub fn runs(args: &RunsArgs) -> ExitCode {
    block_on(async {
        let api = ApiClient::from_args(&args.control)?;
        let runs: Vec<RunView> = api
            .get(
                &["pipelines", &args.pipeline, "runs"],
                &[("limit", args.limit.to_string())],
            )
            .await?;
        if args.control.json {
            print_json(&runs);
            return Ok(());
        }
        if runs.is_empty() {
            println!("{} has no pipeline runs yet", args.pipeline);
            return Ok(());
        }
        let mut rows = vec![vec![
            "RUN".to_string(),
            "ORIGIN".into(),
            "STATE".into(),
            "STARTED".into(),
            "FINISHED".into(),
            "FAILURE".into(),
        ]];
        for run in &runs {
            let s = &run.summary;
            rows.push(vec![
                s.id.clone(),
                origin(&s.origin),
                state_name(s),
                when(s.started_at),
                when(s.finished_at),
                failure(s),
            ]);
        }
        print!("{}", table(&rows));
        Ok(())
    })
}

fn origin(origin: &RunOrigin) -> String {
    match origin {
        RunOrigin::Schedule => "schedule".into(),
        RunOrigin::Catchup => "catchup".into(),
        RunOrigin::Manual => "manual".into(),
        RunOrigin::Backfill { backfill } => format!("backfill {backfill}"),
    }
}

fn state_name(s: &RunSummary) -> String {
    let state = serde_json::to_value(s.state)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default();
    match lateness(s) {
        Some(late) => format!("{state} {late}"),
        None => state,
    }
}

/// The run's mark against its deadline: `LATE` while a late run is not done, how late once done.
fn lateness(s: &RunSummary) -> Option<String> {
    let deadline = s.deadline?;
    match s.finished_at {
        None => s.late_since.map(|_| "LATE".to_string()),
        Some(end) if end > deadline => Some(format!(
            "(late by {})",
            humantime::format_duration(std::time::Duration::from_secs(
                (end - deadline).num_seconds().max(0) as u64
            ))
        )),
        Some(_) => None,
    }
}

fn failure(s: &RunSummary) -> String {
    match (&s.failure, &s.failure_href) {
        (Some(f), Some(href)) => format!("{f} ({href})"),
        (Some(f), None) => f.clone(),
        _ => String::new(),
    }
}

async fn all_pipelines(api: &ApiClient, json: bool) -> Result<(), Failure> {
    let pipelines: Vec<PipelineView> = api.get(&["pipelines"], &[]).await?;
    if json {
        print_json(&pipelines);
        return Ok(());
    }
    let mut rows = vec![vec![
        "PIPELINE".to_string(),
        "STATE".into(),
        "NEXT RUN".into(),
        "LAST RUN".into(),
        "LAST STATE".into(),
        "FAILURE".into(),
    ]];
    for p in &pipelines {
        rows.push(vec![
            p.name.clone(),
            pipeline_state(p),
            when(p.next_fire_times.first().copied()),
            p.last_run.as_ref().map_or("-".into(), |r| r.id.clone()),
            p.last_run.as_ref().map_or("-".into(), state_name),
            p.last_run.as_ref().map_or(String::new(), failure),
        ]);
    }
    print!("{}", table(&rows));
    Ok(())
}

fn pipeline_state(p: &PipelineView) -> String {
    if p.suspended {
        "suspended".into()
    } else if p.paused {
        "paused".into()
    } else if p.active_runs > 0 {
        format!("active ({})", p.active_runs)
    } else {
        "idle".into()
    }
}

async fn one_pipeline(api: &ApiClient, name: &str, json: bool) -> Result<(), Failure> {
    let pipeline: PipelineView = api.get(&["pipelines", name], &[]).await?;
    let runs: Vec<RunView> = api
        .get(&["pipelines", name, "runs"], &[("limit", "1".into())])
        .await?;
    if json {
        print_json(&serde_json::json!({ "pipeline": pipeline, "latest_run": runs.first() }));
        return Ok(());
    }
    println!("pipeline  {}", pipeline.name);
    println!("state     {}", pipeline_state(&pipeline));
    if let Some(cron) = &pipeline.cron {
        println!(
            "schedule  {cron} ({})",
            pipeline.timezone.as_deref().unwrap_or("UTC")
        );
        let next: Vec<String> = pipeline
            .next_fire_times
            .iter()
            .take(3)
            .map(|t| {
                match pipeline
                    .timezone
                    .as_deref()
                    .map(str::parse::<chrono_tz::Tz>)
                {
                    Some(Ok(zone)) => crate::humanize::when(*t, zone),
                    _ => when(Some(*t)),
                }
            })
            .collect();
        println!("next      {}", next.join(", "));
    }
    let Some(run) = runs.first() else {
        println!("no pipeline runs yet");
        return Ok(());
    };
    let s = &run.summary;
    println!(
        "latest    {} ({}, {})",
        s.id,
        state_name(s),
        origin(&s.origin)
    );
    if let Some(deadline) = s.deadline {
        println!("deadline  {}", when(Some(deadline)));
    }
    let mut rows = vec![vec![
        "STEP".to_string(),
        "STATE".into(),
        "ATTEMPT".into(),
        "DBT RUN".into(),
        "STATUS".into(),
        "LINK".into(),
    ]];
    for step in &run.steps {
        let last = step.attempts.last();
        let mut state = step.state.clone();
        if let Some(at) = step.retry_at {
            state = format!("{state} until {}", when(Some(at)));
        }
        rows.push(vec![
            step.name.clone(),
            state,
            last.map_or("-".into(), |a| a.number.to_string()),
            last.and_then(|a| a.dbt_run_id)
                .map_or("-".into(), |r| r.to_string()),
            last.and_then(|a| a.status).map_or("-".into(), |c| {
                crate::dbt_cloud::wire::RunStatus::from_code(c)
                    .humanized()
                    .to_string()
            }),
            last.and_then(|a| a.href.clone()).unwrap_or_default(),
        ]);
    }
    println!();
    print!("{}", table(&rows));
    for step in &run.steps {
        let Some(a) = step.attempts.last() else {
            continue;
        };
        let Some(details) = &a.details else {
            if step.state == "failed" {
                if let Some(m) = a.reason.as_ref().or(a.message.as_ref()) {
                    println!("\n{} failed: {m}", step.name);
                }
            }
            continue;
        };
        println!(
            "\n{} failed{}{}:",
            step.name,
            details
                .failed_step
                .as_ref()
                .map_or(String::new(), |s| format!(" in \"{s}\"")),
            a.href.as_ref().map_or(String::new(), |h| format!(" ({h})"))
        );
        for f in &details.failures {
            let message = f.message.as_deref().unwrap_or("").trim();
            println!(
                "  {} {}: {}",
                f.unique_id,
                f.status,
                message.replace('\n', "\n    ")
            );
        }
        if details.more_failures > 0 {
            println!("  ... and {} more", details.more_failures);
        }
        if details.failures.is_empty() {
            if let Some(tail) = &details.log_tail {
                let lines: Vec<&str> = tail.lines().collect();
                let start = lines.len().saturating_sub(10);
                for line in &lines[start..] {
                    println!("  | {line}");
                }
            }
            if details.run_results_missing {
                println!("  (the run wrote no run_results.json)");
            }
        }
    }
    Ok(())
}
