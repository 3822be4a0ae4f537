//! The report: figures with their targets, printed as a table and then as one JSON line.

use serde_json::Value;

/// How a figure is compared with its target.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Target {
    /// The figure must be below this.
    Below(f64),
    /// The figure must be at most this.
    AtMost(f64),
}

impl Target {
    fn limit(self) -> f64 {
        match self {
            Target::Below(v) | Target::AtMost(v) => v,
        }
    }

    fn met_by(self, value: f64) -> bool {
        match self {
            Target::Below(v) => value < v,
            Target::AtMost(v) => value <= v,
        }
    }

    fn text(self) -> String {
        match self {
            Target::Below(v) => format!("< {}", number(v)),
            Target::AtMost(v) => format!("<= {}", number(v)),
        }
    }
}

/// One measured number. `key` names it in the JSON line (unit included: `_ms`, `_mib`, ...).
#[derive(Debug, Clone)]
pub struct Figure {
    pub scenario: &'static str,
    pub key: String,
    pub label: String,
    pub value: f64,
    pub unit: &'static str,
    pub target: Option<Target>,
}

impl Figure {
    pub fn pass(&self) -> Option<bool> {
        self.target.map(|t| t.met_by(self.value))
    }
}

/// Everything measured, in order.
#[derive(Debug, Default)]
pub struct Report {
    pub figures: Vec<Figure>,
    /// Scenarios that could not run, with why.
    pub failures: Vec<(String, String)>,
    /// Scenarios left out because something they need is not installed, with what.
    pub skipped: Vec<(String, String)>,
}

impl Report {
    /// `scenario` did not run: `why` names what is missing and how to get it.
    pub fn skip(&mut self, scenario: &str, why: &str) {
        self.skipped.push((scenario.into(), why.into()));
    }

    /// A figure without a target (a size, a setting used, a count).
    pub fn info(
        &mut self,
        scenario: &'static str,
        key: &str,
        label: &str,
        value: f64,
        unit: &'static str,
    ) {
        self.figures.push(Figure {
            scenario,
            key: key.into(),
            label: label.into(),
            value,
            unit,
            target: None,
        });
    }

    /// A figure compared with a target.
    pub fn measured(
        &mut self,
        scenario: &'static str,
        key: &str,
        label: &str,
        value: f64,
        unit: &'static str,
        target: Target,
    ) {
        self.figures.push(Figure {
            scenario,
            key: key.into(),
            label: label.into(),
            value,
            unit,
            target: Some(target),
        });
    }

    pub fn table(&self) -> String {
        let rows: Vec<[String; 5]> = self
            .figures
            .iter()
            .map(|f| {
                [
                    f.scenario.to_string(),
                    f.label.clone(),
                    format!("{} {}", number(f.value), f.unit)
                        .trim_end()
                        .to_string(),
                    f.target
                        .map(|t| format!("{} {}", t.text(), f.unit).trim_end().to_string())
                        .unwrap_or_default(),
                    match f.pass() {
                        Some(true) => "pass".into(),
                        Some(false) => "MISS".into(),
                        None => String::new(),
                    },
                ]
            })
            .collect();
        let header = ["scenario", "figure", "value", "target", ""].map(String::from);
        let mut widths = [0usize; 5];
        for row in std::iter::once(&header).chain(&rows) {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let line = |row: &[String; 5]| {
            let cells: Vec<String> = row
                .iter()
                .zip(widths)
                .enumerate()
                .map(|(i, (c, w))| {
                    if i == 2 || i == 3 {
                        format!("{c:>w$}")
                    } else {
                        format!("{c:<w$}")
                    }
                })
                .collect();
            cells.join("  ").trim_end().to_string()
        };
        let mut out = String::new();
        out.push_str(&line(&header));
        out.push('\n');
        out.push_str(&"-".repeat(widths.iter().sum::<usize>() + 8));
        out.push('\n');
        for row in &rows {
            out.push_str(&line(row));
            out.push('\n');
        }
        for (scenario, why) in &self.failures {
            out.push_str(&format!("{scenario}: FAILED: {why}\n"));
        }
        for (scenario, why) in &self.skipped {
            out.push_str(&format!("{scenario}: SKIPPED: {why}\n"));
        }
        out
    }

    /// One JSON object on one line, `"bench":"baton"` first, then each figure's key with its
    /// value and, for a figure with a target, `KEY_target` and `KEY_pass`, in the table's order;
    /// `failed` lists scenarios that could not run, `skipped` those left out for something missing.
    pub fn json(&self, quick: bool, total_seconds: f64) -> String {
        let mut entries: Vec<(String, Value)> = vec![
            ("bench".into(), "baton".into()),
            ("version".into(), env!("CARGO_PKG_VERSION").into()),
            ("quick".into(), quick.into()),
            ("total_seconds".into(), round(total_seconds).into()),
        ];
        for f in &self.figures {
            entries.push((f.key.clone(), round(f.value).into()));
            if let Some(t) = f.target {
                entries.push((format!("{}_target", f.key), round(t.limit()).into()));
                entries.push((format!("{}_pass", f.key), t.met_by(f.value).into()));
            }
        }
        entries.push((
            "failed".into(),
            Value::Array(
                self.failures
                    .iter()
                    .map(|(s, why)| serde_json::json!({"scenario": s, "error": why}))
                    .collect(),
            ),
        ));
        entries.push((
            "skipped".into(),
            Value::Array(
                self.skipped
                    .iter()
                    .map(|(s, why)| serde_json::json!({"scenario": s, "missing": why}))
                    .collect(),
            ),
        ));
        let body: Vec<String> = entries
            .iter()
            .map(|(k, v)| format!("{}:{v}", Value::from(k.as_str())))
            .collect();
        format!("{{{}}}", body.join(","))
    }
}

fn round(v: f64) -> f64 {
    if v.is_finite() {
        // `+ 0.0` turns a negative zero into zero: the JSON line never says `-0.0`.
        (v * 1000.0).round() / 1000.0 + 0.0
    } else {
        -1.0
    }
}

/// A number with as many decimals as it needs to be read (three significant ones below 10).
fn number(v: f64) -> String {
    if !v.is_finite() {
        return "n/a".into();
    }
    let a = v.abs();
    let decimals = if v.fract() == 0.0 || a >= 100.0 {
        0
    } else if a >= 10.0 {
        1
    } else if a >= 0.1 {
        2
    } else {
        4
    };
    crate::humanize::number(v, decimals)
}

/// The `q` quantile (0..=1) of `samples` by nearest rank; NaN when empty.
pub fn quantile(samples: &[f64], q: f64) -> f64 {
    if samples.is_empty() {
        return f64::NAN;
    }
    let mut sorted = samples.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_by_nearest_rank() {
        let s: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(quantile(&s, 0.5), 50.0);
        assert_eq!(quantile(&s, 0.99), 99.0);
        assert!(quantile(&[], 0.5).is_nan());
    }

    #[test]
    fn counts_never_print_as_negative_zero() {
        assert_eq!(number(-0.0), "0");
        assert_eq!(number(-0.00001), "0.0000");
        assert_eq!(round(-0.0).to_string(), "0");
    }

    #[test]
    fn json_has_targets_and_flags() {
        let mut r = Report::default();
        r.measured("x", "a_ms", "a", 3.0, "ms", Target::Below(2.0));
        r.info("x", "b", "b", 1.0, "");
        let line = r.json(true, 1.0);
        assert!(line.starts_with(r#"{"bench":"baton","#), "{line}");
        let j: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(j["a_ms"], 3.0);
        assert_eq!(j["a_ms_target"], 2.0);
        assert_eq!(j["a_ms_pass"], false);
        assert_eq!(j["b"], 1.0);
        assert!(j.get("b_pass").is_none());
        assert!(r.table().contains("MISS"));
    }
}
