//! Field-level checks shared by the pipeline lowering: mappings with known keys (unknown keys get
//! "did you mean"), duplicate keys, and typed scalars (strings, booleans, integers, durations,
//! choices, time zones, cron), each problem reported at its position.

use super::diagnostic::FileReport;
use super::yaml::{Node, Span};
use crate::model::schedule::Schedule;
use chrono_tz::Tz;
use std::collections::BTreeMap;
use std::time::Duration;

/// The entries of a mapping by key, first occurrence kept.
pub(super) type Entries<'n> = BTreeMap<&'n str, (&'n Node, &'n Node)>;

/// Closest candidate to `word`, if one is close enough to be a likely typo.
pub fn did_you_mean<'c>(
    word: &str,
    candidates: impl IntoIterator<Item = &'c str>,
) -> Option<&'c str> {
    let lower = word.to_lowercase();
    candidates
        .into_iter()
        .map(|c| (strsim::jaro_winkler(&lower, &c.to_lowercase()), c))
        .filter(|(score, _)| *score >= 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c)
}

pub(super) fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

pub(super) const NAME_HINT: &str =
    "names use letters, digits, `_`, `-` and `.`, and start with a letter, digit or `_`";

pub(super) struct Lowerer<'r, 'a> {
    pub(super) report: &'r mut FileReport<'a>,
}

impl<'r, 'a> Lowerer<'r, 'a> {
    pub(super) fn error(&mut self, span: Span, message: impl Into<String>, hint: Option<String>) {
        self.report.error(span, message, hint);
    }

    pub(super) fn wrong_type(&mut self, node: &Node, what: &str, expected: &str) {
        self.error(
            node.span,
            format!("{what} must be {expected}, found {}", node.type_name()),
            None,
        );
    }

    /// Checks `node` is a mapping with only `allowed` keys, each once; returns its entries.
    pub(super) fn mapping<'n>(
        &mut self,
        node: &'n Node,
        what: &str,
        allowed: &[&str],
    ) -> Option<Entries<'n>> {
        let Some(pairs) = node.as_mapping() else {
            self.wrong_type(node, what, "a mapping");
            return None;
        };
        let mut entries = Entries::new();
        for (key, value) in pairs {
            let Some(name) = key.scalar_text() else {
                self.wrong_type(key, &format!("a key in {what}"), "a string");
                continue;
            };
            if !allowed.contains(&name) {
                let hint = match did_you_mean(name, allowed.iter().copied()) {
                    Some(close) => format!("did you mean `{close}`?"),
                    None => format!("expected one of: {}", allowed.join(", ")),
                };
                self.error(
                    key.span,
                    format!("unknown key `{name}` in {what}"),
                    Some(hint),
                );
                continue;
            }
            self.insert_once(
                &mut entries,
                name,
                key,
                value,
                &format!("key `{name}` in {what}"),
            );
        }
        Some(entries)
    }

    pub(super) fn insert_once<'n>(
        &mut self,
        entries: &mut Entries<'n>,
        name: &'n str,
        key: &'n Node,
        value: &'n Node,
        what: &str,
    ) {
        if let Some((first, _)) = entries.get(name) {
            let first_line = first.span.line;
            self.error(
                key.span,
                format!("duplicate {what}"),
                Some(format!(
                    "first defined on line {first_line}; YAML keeps only one"
                )),
            );
        } else {
            entries.insert(name, (key, value));
        }
    }

    pub(super) fn present<'n>(entries: &Entries<'n>, key: &str) -> Option<&'n Node> {
        entries.get(key).map(|(_, v)| *v).filter(|v| !v.is_null())
    }

    pub(super) fn missing(&mut self, at: Span, field: &str, what: &str) {
        let example = match field {
            "name" => Some("e.g. `name: nightly`; pipeline names are unique"),
            "steps" => Some("e.g. `steps: { staging: { job_id: 559062 } }`"),
            "job_id" => Some("the dbt Cloud job this step triggers, e.g. `job_id: 559062`"),
            "cron" => {
                Some("e.g. `cron: \"30 2 * * *\"` (minute hour day-of-month month day-of-week)")
            }
            "window" => Some("how far back each backfill reaches, e.g. `window: 7d`"),
            _ => None,
        };
        self.error(
            at,
            format!("missing field `{field}` in {what}"),
            example.map(str::to_string),
        );
    }

    pub(super) fn string(
        &mut self,
        entries: &Entries,
        key: &str,
        what: &str,
    ) -> Option<(String, Span)> {
        let node = Self::present(entries, key)?;
        match node.as_str() {
            Some(s) => Some((s.to_string(), node.span)),
            None => {
                self.wrong_type(node, &format!("`{key}` in {what}"), "a string");
                None
            }
        }
    }

    pub(super) fn boolean(&mut self, entries: &Entries, key: &str, what: &str) -> Option<bool> {
        let node = Self::present(entries, key)?;
        let value = node.as_bool();
        if value.is_none() {
            self.wrong_type(
                node,
                &format!("`{key}` in {what}"),
                "a boolean (true or false)",
            );
        }
        value
    }

    pub(super) fn positive_int(&mut self, entries: &Entries, key: &str, what: &str) -> Option<i64> {
        let node = Self::present(entries, key)?;
        match node.as_int() {
            Some(i) if i >= 1 => Some(i),
            Some(i) => {
                self.error(
                    node.span,
                    format!("`{key}` in {what} must be at least 1, found {i}"),
                    None,
                );
                None
            }
            None => {
                self.wrong_type(node, &format!("`{key}` in {what}"), "a positive integer");
                None
            }
        }
    }

    pub(super) fn duration(
        &mut self,
        entries: &Entries,
        key: &str,
        what: &str,
        allow_zero: bool,
    ) -> Option<Duration> {
        let node = Self::present(entries, key)?;
        let Some(text) = node.scalar_text().filter(|_| node.as_sequence().is_none()) else {
            self.wrong_type(
                node,
                &format!("`{key}` in {what}"),
                "a duration such as `90s` or `2h 30m`",
            );
            return None;
        };
        match humantime::parse_duration(text) {
            Ok(d) if d.is_zero() && !allow_zero => {
                self.error(
                    node.span,
                    format!("`{key}` in {what} must be longer than zero"),
                    None,
                );
                None
            }
            Ok(d) => Some(d),
            Err(e) => {
                self.error(
                    node.span,
                    format!("`{key}` in {what}: bad duration `{text}`: {e}"),
                    Some("durations look like `90s`, `15m`, `2h 30m`, `7d`".to_string()),
                );
                None
            }
        }
    }

    pub(super) fn choice<T: Copy>(
        &mut self,
        entries: &Entries,
        key: &str,
        what: &str,
        options: &[(&str, T)],
    ) -> Option<T> {
        let node = Self::present(entries, key)?;
        let names: Vec<&str> = options.iter().map(|(n, _)| *n).collect();
        let text = node.scalar_text().unwrap_or_default();
        if let Some((_, value)) = options.iter().find(|(n, _)| *n == text) {
            return Some(*value);
        }
        let hint = match did_you_mean(text, names.iter().copied()) {
            Some(close) => format!("did you mean `{close}`?"),
            None => format!("expected one of: {}", names.join(", ")),
        };
        self.error(
            node.span,
            format!(
                "`{key}` in {what} must be one of {}, found `{text}`",
                names.join(" | ")
            ),
            Some(hint),
        );
        None
    }

    pub(super) fn timezone(&mut self, entries: &Entries, what: &str) -> Tz {
        let Some(node) = Self::present(entries, "timezone") else {
            return chrono_tz::UTC;
        };
        let text = node.scalar_text().unwrap_or_default();
        if let Ok(tz) = text.parse::<Tz>() {
            return tz;
        }
        let names = chrono_tz::TZ_VARIANTS.iter().map(|tz| tz.name());
        let hint = match did_you_mean(text, names) {
            Some(close) => format!("did you mean `{close}`?"),
            None => "use an IANA time zone name such as `Europe/Amsterdam` or `UTC`".to_string(),
        };
        self.error(
            node.span,
            format!("unknown time zone `{text}` in {what}"),
            Some(hint),
        );
        chrono_tz::UTC
    }

    pub(super) fn cron(
        &mut self,
        entries: &Entries,
        at: Span,
        what: &str,
        timezone: Tz,
    ) -> Option<String> {
        let Some(node) = Self::present(entries, "cron") else {
            self.missing(at, "cron", what);
            return None;
        };
        let Some(text) = node.as_str() else {
            self.wrong_type(node, &format!("`cron` in {what}"), "a string");
            return None;
        };
        match Schedule::parse(text, timezone) {
            Ok(_) => Some(text.trim().to_string()),
            Err(e) => {
                self.error(
                    node.span,
                    format!("bad cron expression `{text}` in {what}: {e}"),
                    Some(
                        "5 fields: minute hour day-of-month month day-of-week, e.g. `30 2 * * *`"
                            .into(),
                    ),
                );
                None
            }
        }
    }
}
