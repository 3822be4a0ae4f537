//! Problems found in pipeline files: each with file, line, column, a message, an optional hint and
//! the source line, rendered as rustc-style text with a caret excerpt or as JSON.

use super::yaml::Span;
use serde::Serialize;
use std::fmt;
use std::path::{Path, PathBuf};

/// One problem at one place.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Diagnostic {
    pub file: PathBuf,
    /// 1-based; 0 when the problem has no position (an unreadable file).
    pub line: usize,
    /// 1-based, in characters.
    pub column: usize,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
    /// The source line the problem is on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub excerpt: Option<String>,
    /// How many characters the caret underlines.
    #[serde(skip)]
    pub width: usize,
}

/// Every problem of every file, in file order then position order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Diagnostics {
    pub items: Vec<Diagnostic>,
}

impl Diagnostics {
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn extend(&mut self, other: Diagnostics) {
        self.items.extend(other.items);
    }

    pub fn push(&mut self, diagnostic: Diagnostic) {
        self.items.push(diagnostic);
    }

    /// Sorts by file, then line and column; keeps the order of problems at the same spot.
    pub fn sort(&mut self) {
        self.items
            .sort_by(|a, b| (&a.file, a.line, a.column).cmp(&(&b.file, b.line, b.column)));
    }

    /// The files that have at least one problem, in order.
    pub fn files(&self) -> Vec<&Path> {
        let mut files: Vec<&Path> = self.items.iter().map(|d| d.file.as_path()).collect();
        files.dedup();
        files
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|_| "[]".to_string())
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "error: {}", self.message)?;
        let gutter = self.line.to_string().len();
        let pad = " ".repeat(gutter);
        if self.line == 0 {
            writeln!(f, "{pad}--> {}", self.file.display())?;
        } else {
            writeln!(
                f,
                "{pad}--> {}:{}:{}",
                self.file.display(),
                self.line,
                self.column
            )?;
        }
        if let Some(excerpt) = &self.excerpt {
            writeln!(f, "{pad} |")?;
            writeln!(f, "{} | {}", self.line, excerpt)?;
            let before: String = excerpt
                .chars()
                .take(self.column.saturating_sub(1))
                .map(|c| if c == '\t' { '\t' } else { ' ' })
                .collect();
            let room = excerpt
                .chars()
                .count()
                .saturating_sub(self.column.saturating_sub(1))
                .max(1);
            writeln!(
                f,
                "{pad} | {before}{}",
                "^".repeat(self.width.clamp(1, room))
            )?;
        }
        if let Some(hint) = &self.hint {
            writeln!(f, "{pad} = help: {hint}")?;
        }
        Ok(())
    }
}

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for d in &self.items {
            writeln!(f, "{d}")?;
        }
        Ok(())
    }
}

/// Line `index` (0-based) of `text` as the YAML scanner counts lines, which spans come from:
/// `\r\n`, `\n` and a lone `\r` each end one (`str::lines` keeps a lone `\r` inside a line, which
/// showed the wrong excerpt). `None` past the last line, like `lines()`.
fn yaml_line(text: &str, index: usize) -> Option<&str> {
    let mut rest = text;
    for _ in 0..index {
        let end = rest.find(['\n', '\r'])?;
        let width = if rest[end..].starts_with("\r\n") {
            2
        } else {
            1
        };
        rest = &rest[end + width..];
    }
    if rest.is_empty() {
        return None;
    }
    Some(&rest[..rest.find(['\n', '\r']).unwrap_or(rest.len())])
}

/// Collects the problems of one file and fills in their excerpts from its text.
#[derive(Debug)]
pub struct FileReport<'a> {
    file: PathBuf,
    text: &'a str,
    pub diagnostics: Diagnostics,
}

impl<'a> FileReport<'a> {
    pub fn new(file: impl Into<PathBuf>, text: &'a str) -> Self {
        Self {
            file: file.into(),
            text,
            diagnostics: Diagnostics::default(),
        }
    }

    pub fn error(&mut self, span: Span, message: impl Into<String>, hint: Option<String>) {
        let excerpt = span
            .line
            .checked_sub(1)
            .and_then(|i| yaml_line(self.text, i))
            .map(|l| l.trim_end().to_string());
        self.diagnostics.push(Diagnostic {
            file: self.file.clone(),
            line: span.line,
            column: span.column,
            message: message.into(),
            hint,
            excerpt,
            width: span.width,
        });
    }

    pub fn file(&self) -> &Path {
        &self.file
    }
}
