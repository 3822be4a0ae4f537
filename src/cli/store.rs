//! `baton store`: the operator's tools for the state database, safe while a daemon runs (they read
//! a snapshot and never take the daemon's lock): an integrity check and an online backup.

use super::common::Failure;
use super::EXIT_PROBLEMS;
use crate::config::daemon::DaemonConfig;
use crate::store::sqlite;
use clap::{Args, Subcommand};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Debug, Args)]
pub struct StoreArgs {
    #[command(subcommand)]
    pub command: StoreCommand,
}

#[derive(Debug, Subcommand)]
pub enum StoreCommand {
    /// Check the database's integrity (`PRAGMA integrity_check`); exit 1 on a problem.
    Check(Where),
    /// Copy the database, consistent and compact, while the daemon runs.
    Backup {
        /// The new file to write (never overwritten).
        file: PathBuf,
        #[command(flatten)]
        at: Where,
    },
}

/// Which state directory: the config's `state_dir`, or one named directly.
#[derive(Debug, Args)]
pub struct Where {
    /// The daemon config, for its `state_dir`.
    #[arg(long, value_name = "FILE", required_unless_present = "state_dir")]
    pub config: Option<PathBuf>,
    /// The state directory itself.
    #[arg(long, value_name = "DIR", conflicts_with = "config")]
    pub state_dir: Option<PathBuf>,
}

impl Where {
    fn database(&self) -> Result<PathBuf, Failure> {
        let dir = match (&self.state_dir, &self.config) {
            (Some(dir), _) => dir.clone(),
            (None, Some(config)) => {
                DaemonConfig::load(config)
                    .map_err(|e| Failure::Message(e.to_string()))?
                    .state_dir
            }
            (None, None) => return Err(Failure::Message("name --config or --state-dir".into())),
        };
        Ok(dir.join(sqlite::DB_FILE))
    }
}

pub fn run(args: &StoreArgs) -> ExitCode {
    let outcome = match &args.command {
        StoreCommand::Check(at) => at.database().and_then(|db| check(&db)),
        StoreCommand::Backup { file, at } => at.database().and_then(|db| backup(&db, file)),
    };
    match outcome {
        Ok(code) => code,
        Err(failure) => {
            failure.report();
            ExitCode::from(EXIT_PROBLEMS)
        }
    }
}

fn check(db: &Path) -> Result<ExitCode, Failure> {
    let problems = sqlite::integrity_check(db).map_err(|e| Failure::Message(e.to_string()))?;
    if problems.is_empty() {
        println!("{}: ok", db.display());
        return Ok(ExitCode::SUCCESS);
    }
    eprintln!("{}: {} problem(s) found:", db.display(), problems.len());
    for problem in &problems {
        eprintln!("  {problem}");
    }
    eprintln!(
        "restore the latest backup (docs/operations.md, \"Backups and restore\") while baton is stopped"
    );
    Ok(ExitCode::from(EXIT_PROBLEMS))
}

fn backup(db: &Path, file: &Path) -> Result<ExitCode, Failure> {
    sqlite::backup(db, file).map_err(|e| Failure::Message(e.to_string()))?;
    let bytes = std::fs::metadata(file).map(|m| m.len()).unwrap_or(0);
    println!(
        "{}: backed up to {} ({bytes} bytes)",
        db.display(),
        file.display()
    );
    Ok(ExitCode::SUCCESS)
}
