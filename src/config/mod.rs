//! Configuration files: pipeline YAML (a spanned YAML tree, lowered by hand into validated
//! `model::pipeline::Pipeline`s with every problem reported) and the daemon's own config.

pub mod account_block;
pub mod accounts;
mod checks;
pub mod daemon;
pub mod diagnostic;
pub mod fields;
pub mod keys;
pub mod lower;
pub mod raw;
pub mod store;
pub mod yaml;

pub use diagnostic::{Diagnostic, Diagnostics};

use crate::model::pipeline::Pipeline;
use diagnostic::FileReport;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use yaml::Span;

/// Files named like this hold emulator scenarios, not pipelines.
const SCENARIO_SUFFIX: &str = ".scenario.yaml";

fn is_pipeline_file(path: &Path) -> bool {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    (name.ends_with(".yaml") || name.ends_with(".yml"))
        && !name.ends_with(SCENARIO_SUFFIX)
        && !name.starts_with('.')
}

fn unreadable(file: &Path, message: String) -> Diagnostic {
    Diagnostic {
        file: file.to_path_buf(),
        line: 0,
        column: 0,
        message,
        hint: None,
        excerpt: None,
        width: 0,
    }
}

/// The pipeline files `paths` name: files as given, directories' `*.yaml` / `*.yml` (not
/// `*.scenario.yaml`), sorted by name, not recursive.
pub fn discover(paths: &[PathBuf]) -> (Vec<PathBuf>, Diagnostics) {
    let mut files = Vec::new();
    let mut problems = Diagnostics::default();
    for path in paths {
        if path.is_dir() {
            match std::fs::read_dir(path) {
                Ok(entries) => {
                    // The entry's type comes with the listing; only a link costs a `stat`.
                    let mut found: Vec<PathBuf> = entries
                        .filter_map(Result::ok)
                        .filter(|e| match e.file_type() {
                            Ok(t) if t.is_symlink() => e.path().is_file(),
                            Ok(t) => t.is_file(),
                            Err(_) => false,
                        })
                        .map(|e| e.path())
                        .filter(|p| is_pipeline_file(p))
                        .collect();
                    found.sort();
                    files.extend(found);
                }
                Err(e) => problems.push(unreadable(path, format!("cannot read directory: {e}"))),
            }
        } else if path.exists() {
            files.push(path.clone());
        } else {
            problems.push(unreadable(path, "no such file or directory".to_string()));
        }
    }
    (files, problems)
}

/// Parses and lowers one file's text; every problem goes to `report`.
fn lower_text(report: &mut FileReport, source: &Path, text: &str) -> Option<lower::Lowered> {
    let documents = match yaml::parse(text) {
        Ok(docs) => docs,
        Err(e) => {
            report.error(
                e.span,
                format!("YAML syntax error: {}", e.message),
                Some("the parser stops where it noticed; the cause may be earlier (an unclosed `[`, `{` or quote, or a wrong indent)".into()),
            );
            return None;
        }
    };
    match documents.as_slice() {
        [] => {
            report.error(
                Span {
                    line: 1,
                    column: 1,
                    width: 1,
                },
                "empty file: a pipeline needs at least `name` and `steps`",
                None,
            );
            None
        }
        [root] => lower::lower_pipeline(report, root, source),
        [_, second, ..] => {
            report.error(
                second.span,
                "more than one YAML document: a file holds one pipeline",
                Some("move each pipeline to a file of its own".into()),
            );
            None
        }
    }
}

/// A file's path, text, pipeline (if it lowered) and problems; or why it could not be read.
type FileRead = Result<(PathBuf, String, Option<lower::Lowered>, Diagnostics), Diagnostic>;

/// Reads and lowers the files on every core (ten thousand files are a real case), in order.
fn read_all(files: Vec<PathBuf>) -> Vec<FileRead> {
    let read_one = |file: PathBuf| -> FileRead {
        let text = std::fs::read_to_string(&file)
            .map_err(|e| unreadable(&file, format!("cannot read file: {e}")))?;
        let mut report = FileReport::new(&file, &text);
        let lowered = lower_text(&mut report, &file, &text);
        let diagnostics = report.diagnostics;
        Ok((file, text, lowered, diagnostics))
    };
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    if threads < 2 || files.len() < 64 {
        return files.into_iter().map(read_one).collect();
    }
    let chunk = files.len().div_ceil(threads);
    let mut chunks: Vec<Vec<PathBuf>> = Vec::new();
    let mut rest = files;
    while !rest.is_empty() {
        let tail = rest.split_off(chunk.min(rest.len()));
        chunks.push(std::mem::replace(&mut rest, tail));
    }
    std::thread::scope(|scope| {
        let workers: Vec<_> = chunks
            .into_iter()
            .map(|chunk| scope.spawn(move || chunk.into_iter().map(read_one).collect::<Vec<_>>()))
            .collect();
        workers
            .into_iter()
            .flat_map(|w| {
                w.join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            })
            .collect()
    })
}

fn sorted(mut diagnostics: Diagnostics) -> Diagnostics {
    diagnostics.sort();
    diagnostics
}

/// Loads one pipeline from text; `name_for_errors` is the file name diagnostics show.
pub fn load_pipeline_str(name_for_errors: &str, text: &str) -> Result<Pipeline, Diagnostics> {
    let source = PathBuf::from(name_for_errors);
    let mut report = FileReport::new(&source, text);
    match lower_text(&mut report, &source, text) {
        Some(lowered) if report.diagnostics.is_empty() => Ok(lowered.pipeline),
        _ => Err(sorted(report.diagnostics)),
    }
}

/// Loads every pipeline file `paths` name (files, or directories of `*.yaml`/`*.yml`). Either
/// all are valid and unique by name, or every problem of every file comes back.
pub fn load_pipelines(paths: &[PathBuf]) -> Result<Vec<Pipeline>, Diagnostics> {
    let (files, mut all) = discover(paths);
    let mut pipelines = Vec::new();
    let mut first_by_name: BTreeMap<String, PathBuf> = BTreeMap::new();
    for read in read_all(files) {
        let (file, text, lowered, diagnostics) = match read {
            Ok(read) => read,
            Err(unreadable) => {
                all.push(unreadable);
                continue;
            }
        };
        let mut report = FileReport::new(&file, &text);
        report.diagnostics = diagnostics;
        if let Some(lowered) = lowered {
            let name = lowered.pipeline.name.0.clone();
            match first_by_name.get(&name) {
                Some(first) => report.error(
                    lowered.name_span,
                    format!("duplicate pipeline name `{name}`"),
                    Some(format!(
                        "`{name}` is already defined in {}",
                        first.display()
                    )),
                ),
                None => {
                    first_by_name.insert(name, file.clone());
                    pipelines.push(lowered.pipeline);
                }
            }
        }
        all.extend(sorted(report.diagnostics));
    }
    if all.is_empty() {
        Ok(pipelines)
    } else {
        Err(all)
    }
}
