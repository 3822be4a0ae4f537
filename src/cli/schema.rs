//! `baton schema`: prints the draft-07 JSON Schema of the pipeline file format.

use crate::config::raw;
use std::process::ExitCode;

pub fn run() -> ExitCode {
    print!("{}", raw::pipeline_schema_json());
    ExitCode::SUCCESS
}
