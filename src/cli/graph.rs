//! `baton graph`: prints a pipeline's DAG as text, Graphviz dot or Mermaid.

use super::common::find_pipeline;
use super::EXIT_PROBLEMS;
use crate::model::dag;
use clap::{Args, ValueEnum};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum GraphFormat {
    Text,
    Dot,
    Mermaid,
}

#[derive(Debug, Args)]
pub struct GraphArgs {
    /// A pipeline file, or a pipeline's name in the pipelines directory.
    pub pipeline: String,
    #[arg(long, value_enum, default_value = "text")]
    pub format: GraphFormat,
    /// The daemon config, for its `pipelines_dir`.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

pub fn run(args: &GraphArgs) -> ExitCode {
    let pipeline = match find_pipeline(&args.pipeline, args.config.as_deref()) {
        Ok(p) => p,
        Err(failure) => {
            failure.report();
            return ExitCode::from(EXIT_PROBLEMS);
        }
    };
    let text = match args.format {
        GraphFormat::Text => dag::render_text(&pipeline),
        GraphFormat::Dot => dag::render_dot(&pipeline),
        GraphFormat::Mermaid => dag::render_mermaid(&pipeline),
    };
    print!("{text}");
    ExitCode::SUCCESS
}
