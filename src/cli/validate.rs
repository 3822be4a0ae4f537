//! `baton validate`: loads pipeline files and reports every problem (text or JSON).

use super::common::{pipelines_dir, Failure};
use super::EXIT_PROBLEMS;
use crate::config;
use clap::{Args, ValueEnum};
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    Text,
    Json,
}

#[derive(Debug, Args)]
pub struct ValidateArgs {
    /// Pipeline files or directories (default: the config's pipelines_dir, else `pipelines/`).
    pub paths: Vec<PathBuf>,
    /// The daemon config, for its `pipelines_dir` and its accounts (a step's `account:` must
    /// name one).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    #[arg(long, value_enum, default_value = "text")]
    pub format: OutputFormat,
    /// Also look every step's job (by id or by name) up in its dbt Cloud account and say what
    /// was found (needs `--config`).
    #[arg(long, requires = "config")]
    pub online: bool,
}

pub fn run(args: &ValidateArgs) -> ExitCode {
    let paths = if args.paths.is_empty() {
        match pipelines_dir(args.config.as_deref()) {
            Ok(dir) => vec![dir],
            Err(failure) => {
                failure.report();
                return ExitCode::from(EXIT_PROBLEMS);
            }
        }
    } else {
        args.paths.clone()
    };
    let mut result = config::load_pipelines(&paths);
    let mut online = None;
    // With the daemon config, each step's `account:` must name one of its accounts.
    if let (Some(path), Ok(pipelines)) = (args.config.as_deref(), &result) {
        match config::daemon::DaemonConfig::load(path) {
            Ok(daemon) => {
                if let Err(d) = config::accounts::check_accounts(pipelines, &daemon.account_names())
                {
                    result = Err(d);
                } else if args.online {
                    let checks = super::common::runtime().map(|rt| {
                        rt.block_on(super::validate_online::check_jobs(&daemon, pipelines))
                    });
                    match checks {
                        Ok(Ok(checks)) => online = Some(checks),
                        Ok(Err(e)) => {
                            Failure::Message(format!("{e:#}")).report();
                            return ExitCode::from(EXIT_PROBLEMS);
                        }
                        Err(code) => return code,
                    }
                }
            }
            Err(e) => {
                Failure::Message(e.to_string()).report();
                return ExitCode::from(EXIT_PROBLEMS);
            }
        }
    }
    let online_ok = online.as_ref().is_none_or(|c| c.iter().all(|c| c.ok));
    match (args.format, &result) {
        (OutputFormat::Json, Ok(pipelines)) => {
            let names: Vec<&str> = pipelines.iter().map(|p| p.name.0.as_str()).collect();
            let mut report =
                serde_json::json!({ "ok": online_ok, "pipelines": names, "diagnostics": [] });
            if let Some(checks) = &online {
                report["jobs"] = serde_json::json!(checks);
            }
            println!("{report:#}");
        }
        (OutputFormat::Json, Err(diagnostics)) => {
            let report = serde_json::json!({ "ok": false, "diagnostics": diagnostics });
            println!("{report:#}");
        }
        (OutputFormat::Text, Ok(pipelines)) => {
            // One write for ten thousand lines, not one each.
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            for p in pipelines {
                let _ = writeln!(out, "ok: {} ({})", p.name, p.source.display());
            }
            let _ = writeln!(out, "{} pipeline(s) valid", pipelines.len());
            let _ = out.flush();
            drop(out);
            for c in online.iter().flatten() {
                let mark = if c.ok { "found" } else { "PROBLEM" };
                println!(
                    "{mark}: {} step {} (account {}): {}",
                    c.pipeline, c.step, c.account, c.found
                );
            }
            if !online_ok {
                eprintln!("error: some jobs are not what the pipelines expect in dbt Cloud");
            }
        }
        (OutputFormat::Text, Err(diagnostics)) => {
            Failure::Diagnostics(diagnostics.clone()).report();
            eprintln!(
                "error: {} problem(s) in {} file(s)",
                diagnostics.len(),
                diagnostics.files().len()
            );
        }
    }
    if result.is_ok() && online_ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_PROBLEMS)
    }
}
