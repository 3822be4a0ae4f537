//! `baton backfill PIPELINE --from DATE --to DATE ...` (create, or `--dry-run` to see each date's
//! rendered trigger bodies) and `baton backfills [ID]` (inspect).

use super::api_client::{block_on, print_json, table, when, ApiClient, ControlArgs};
use crate::http::views::{BackfillPreview, BackfillView};
use serde_json::json;
use std::process::ExitCode;

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum ReprocessArg {
    /// Skip dates that already ran.
    None,
    /// Run again dates whose run failed or was cancelled.
    Failed,
    /// Run every date again.
    All,
}

#[derive(Debug, clap::Args)]
pub struct BackfillArgs {
    pub pipeline: String,
    /// First date (2026-03-01 is that day's start in the pipeline's zone; RFC 3339 also works).
    #[arg(long)]
    pub from: String,
    /// Last date, included (2026-03-14 is that whole day).
    #[arg(long)]
    pub to: String,
    /// Most pipeline runs of this backfill at once.
    #[arg(long, default_value_t = 1)]
    pub max_active: u32,
    /// What to do with dates that already ran.
    #[arg(long, value_enum, default_value = "none")]
    pub reprocess: ReprocessArg,
    /// One run per interval from `--from` (e.g. 1d) instead of the pipeline's fire times.
    #[arg(long)]
    pub every: Option<String>,
    /// Print each date and its rendered trigger bodies; start nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Give these runs the pipeline's `deadline` (off by default: a past date is late by
    /// definition).
    #[arg(long)]
    pub deadline: bool,
    #[command(flatten)]
    pub control: ControlArgs,
}

#[derive(Debug, clap::Args)]
pub struct BackfillsArgs {
    /// One backfill in detail; all when absent.
    pub id: Option<String>,
    #[command(flatten)]
    pub control: ControlArgs,
}

pub fn create(args: &BackfillArgs) -> ExitCode {
    block_on(async {
        let api = ApiClient::from_args(&args.control)?;
        let reprocess = match args.reprocess {
            ReprocessArg::None => "none",
            ReprocessArg::Failed => "failed",
            ReprocessArg::All => "all",
        };
        let body = json!({
            "from": args.from, "to": args.to, "max_active": args.max_active,
            "reprocess": reprocess, "every": args.every, "dry_run": args.dry_run,
            "deadline": args.deadline,
        });
        let path = ["pipelines", args.pipeline.as_str(), "backfills"];
        if args.dry_run {
            let preview: BackfillPreview = api.post(&path, &body).await?;
            if args.control.json {
                print_json(&preview);
                return Ok(());
            }
            let runs = preview.dates.iter().filter(|d| d.run.is_some()).count();
            println!(
                "dry run: {runs} of {} dates would run ({}); nothing was started",
                preview.dates.len(),
                preview.pipeline
            );
            for date in &preview.dates {
                match (&date.run, &date.skipped) {
                    (Some(run), _) => {
                        println!("\n{}  {run}", when(Some(date.logical_date)));
                        for t in &date.triggers {
                            let body = match (&t.body, &t.error) {
                                (Some(b), _) => serde_json::to_string(b).unwrap_or_default(),
                                (None, Some(e)) => format!("cannot render: {e}"),
                                (None, None) => String::new(),
                            };
                            println!("  {} (job {}): {body}", t.step, t.job_id);
                        }
                    }
                    (None, skipped) => println!(
                        "\n{}  skipped: {}",
                        when(Some(date.logical_date)),
                        skipped.as_deref().unwrap_or("")
                    ),
                }
            }
            return Ok(());
        }
        let created: BackfillView = api.post(&path, &body).await?;
        if args.control.json {
            print_json(&created);
        } else {
            println!(
                "created backfill {} of {}: {} dates ({} skipped), at most {} at once; `baton backfills {}` follows it, `baton cancel {}` stops it",
                created.backfill.id,
                args.pipeline,
                created.counts.dates,
                created.counts.skipped,
                created.backfill.spec.max_active,
                created.backfill.id,
                created.backfill.id
            );
        }
        Ok(())
    })
}

pub fn inspect(args: &BackfillsArgs) -> ExitCode {
    block_on(async {
        let api = ApiClient::from_args(&args.control)?;
        let list: Vec<BackfillView> = match &args.id {
            Some(id) => vec![api.get(&["backfills", id], &[]).await?],
            None => api.get(&["backfills"], &[]).await?,
        };
        if args.control.json {
            match (&args.id, list.first()) {
                (Some(_), Some(one)) => print_json(one),
                _ => print_json(&list),
            }
            return Ok(());
        }
        let mut rows = vec![vec![
            "BACKFILL".to_string(),
            "PIPELINE".into(),
            "STATE".into(),
            "DATES".into(),
            "DONE".into(),
            "FAILED".into(),
            "ACTIVE".into(),
            "WAITING".into(),
            "SKIPPED".into(),
        ]];
        for b in &list {
            rows.push(vec![
                b.backfill.id.0.clone(),
                b.backfill.spec.pipeline.0.clone(),
                crate::http::views::backfill_state_name(b.backfill.state).into(),
                b.counts.dates.to_string(),
                b.counts.succeeded.to_string(),
                b.counts.failed.to_string(),
                b.counts.active.to_string(),
                b.counts.not_started.to_string(),
                b.counts.skipped.to_string(),
            ]);
        }
        print!("{}", table(&rows));
        if let (Some(_), Some(b)) = (&args.id, list.first()) {
            println!();
            let mut rows = vec![vec!["DATE".to_string(), "RUN".into(), "NOTE".into()]];
            for d in &b.backfill.dates {
                rows.push(vec![
                    when(Some(d.logical_date)),
                    d.run.as_ref().map_or("-".into(), |r| r.0.clone()),
                    match (&d.skipped, d.started) {
                        (Some(s), _) => format!("skipped: {s}"),
                        (None, false) => "waiting".into(),
                        (None, true) => String::new(),
                    },
                ]);
            }
            print!("{}", table(&rows));
        }
        Ok(())
    })
}
