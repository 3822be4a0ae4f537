//! What several subcommands share: `--config`, the pipelines directory, and finding one pipeline
//! by file path or by name.

use crate::config::daemon::DaemonConfig;
use crate::config::{self, fields::did_you_mean, Diagnostics};
use crate::model::pipeline::Pipeline;
use std::path::{Path, PathBuf};

/// The pipelines directory used when no `--config` is given.
pub const DEFAULT_PIPELINES_DIR: &str = "pipelines";

/// Why a command failed; printed as is, with its exit code.
#[derive(Debug)]
pub enum Failure {
    /// A message for stderr (exit code 1).
    Message(String),
    /// Pipeline-file problems, printed in full (exit code 1).
    Diagnostics(Diagnostics),
    /// An operator command's failure, with its exit code (see `api_client`).
    Exit { code: u8, message: String },
}

impl Failure {
    pub fn new(code: u8, message: impl Into<String>) -> Self {
        Self::Exit {
            code,
            message: message.into(),
        }
    }

    pub fn report(&self) {
        match self {
            Failure::Message(m) | Failure::Exit { message: m, .. } => eprintln!("error: {m}"),
            Failure::Diagnostics(d) => eprint!("{d}"),
        }
    }

    /// Reports the failure and gives the process its exit code.
    pub fn exit(self) -> std::process::ExitCode {
        self.report();
        match self {
            Failure::Exit { code, .. } => std::process::ExitCode::from(code),
            _ => std::process::ExitCode::FAILURE,
        }
    }
}

impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Self {
        Failure::Message(format!("{e:#}"))
    }
}

/// The pipelines directory: the config's `pipelines_dir`, else `pipelines/`.
pub fn pipelines_dir(config: Option<&Path>) -> Result<PathBuf, Failure> {
    match config {
        Some(path) => DaemonConfig::load(path)
            .map(|c| c.pipelines_dir)
            .map_err(|e| Failure::Message(e.to_string())),
        None => Ok(PathBuf::from(DEFAULT_PIPELINES_DIR)),
    }
}

/// One pipeline, named by a file path or by its name in the pipelines directory.
pub fn find_pipeline(which: &str, config: Option<&Path>) -> Result<Pipeline, Failure> {
    let as_path = Path::new(which);
    if as_path.is_file() {
        return only_pipeline(as_path);
    }
    let dir = pipelines_dir(config)?;
    // By convention `nightly` lives in `nightly.yaml`: that file alone, so a broken neighbour
    // does not hide a sound pipeline.
    for ext in ["yaml", "yml"] {
        let candidate = dir.join(format!("{which}.{ext}"));
        if candidate.is_file() {
            if let Ok(pipeline) = only_pipeline(&candidate) {
                if pipeline.name.0 == which {
                    return Ok(pipeline);
                }
            }
        }
    }
    let pipelines =
        config::load_pipelines(std::slice::from_ref(&dir)).map_err(Failure::Diagnostics)?;
    if let Some(p) = pipelines.iter().find(|p| p.name.0 == which) {
        return Ok(p.clone());
    }
    let names: Vec<&str> = pipelines.iter().map(|p| p.name.0.as_str()).collect();
    let hint = match did_you_mean(which, names.iter().copied()) {
        Some(close) => format!(" (did you mean `{close}`?)"),
        None => String::new(),
    };
    Err(Failure::Message(format!(
        "no pipeline file or pipeline named `{which}` in {}{hint}",
        dir.display()
    )))
}

fn only_pipeline(path: &Path) -> Result<Pipeline, Failure> {
    let mut pipelines =
        config::load_pipelines(&[path.to_path_buf()]).map_err(Failure::Diagnostics)?;
    pipelines
        .pop()
        .ok_or_else(|| Failure::Message(format!("{} holds no pipeline", path.display())))
}

/// A multi-threaded runtime, or the exit code after saying why there is none.
pub fn runtime() -> Result<tokio::runtime::Runtime, std::process::ExitCode> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| {
            eprintln!("error: cannot start the async runtime: {e}");
            std::process::ExitCode::FAILURE
        })
}

/// Runs `work` on a fresh multi-threaded runtime; prints its error and maps the outcome to an exit
/// code.
pub fn block_on(
    work: impl std::future::Future<Output = Result<(), Failure>>,
) -> std::process::ExitCode {
    let runtime = match runtime() {
        Ok(r) => r,
        Err(code) => return code,
    };
    match runtime.block_on(work) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(failure) => failure.exit(),
    }
}
