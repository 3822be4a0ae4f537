//! Prometheus text exposition format 0.0.4, written by hand: metric families with HELP and TYPE,
//! escaped label values, and cumulative histograms.

use std::fmt::Write;

/// Seconds buckets for times measured in minutes to hours (queued, running).
pub const LONG_BUCKETS: &[f64] = &[
    1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0, 14400.0,
];

/// Seconds buckets for reaction times (dispatch latency, schedule lag).
pub const SHORT_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 3600.0,
];

/// Escapes a label value: backslash, double quote and newline.
pub fn escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

fn labels(pairs: &[(&str, &str)]) -> String {
    if pairs.is_empty() {
        return String::new();
    }
    let inner: Vec<String> = pairs
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
        .collect();
    format!("{{{}}}", inner.join(","))
}

fn number(v: f64) -> String {
    if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.to_string()
    } else {
        format!("{v}")
    }
}

/// Builds one exposition document.
#[derive(Debug, Default)]
pub struct Exposition {
    out: String,
}

impl Exposition {
    pub fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.out, "# HELP {name} {help}");
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
    }

    pub fn sample(&mut self, name: &str, pairs: &[(&str, &str)], value: f64) {
        let _ = writeln!(self.out, "{name}{} {}", labels(pairs), number(value));
    }

    /// A cumulative histogram from its counts per bucket (`bounds.len() + 1` of them, the last
    /// one `+Inf`) and the sum of what it observed.
    pub fn histogram(
        &mut self,
        name: &str,
        pairs: &[(&str, &str)],
        bounds: &[f64],
        counts: &[u32],
        sum: f64,
    ) {
        let mut cumulative: u64 = 0;
        for (i, count) in counts.iter().enumerate() {
            cumulative += u64::from(*count);
            let le = bounds.get(i).map_or("+Inf".to_string(), |b| number(*b));
            let mut with_le: Vec<(&str, &str)> = pairs.to_vec();
            with_le.push(("le", &le));
            let _ = writeln!(self.out, "{name}_bucket{} {cumulative}", labels(&with_le));
        }
        let _ = writeln!(self.out, "{name}_sum{} {}", labels(pairs), number(sum));
        let _ = writeln!(self.out, "{name}_count{} {cumulative}", labels(pairs));
    }

    /// Bytes written so far.
    pub fn written(&self) -> usize {
        self.out.len()
    }

    /// Appends text already in the exposition format.
    pub fn raw(&mut self, text: &str) {
        self.out.push_str(text);
    }

    pub fn finish(self) -> String {
        self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_are_cumulative_and_labels_escaped() {
        let mut e = Exposition::default();
        e.family("x_seconds", "histogram", "test");
        e.histogram(
            "x_seconds",
            &[("pipeline", "a\"b\\c\nd")],
            &[1.0, 10.0],
            &[1, 1, 1],
            55.5,
        );
        let text = e.finish();
        assert!(
            text.contains("x_seconds_bucket{pipeline=\"a\\\"b\\\\c\\nd\",le=\"1\"} 1\n"),
            "{text}"
        );
        assert!(text.contains("le=\"10\"} 2\n"), "{text}");
        assert!(text.contains("le=\"+Inf\"} 3\n"), "{text}");
        assert!(text.contains("x_seconds_sum{pipeline=\"a\\\"b\\\\c\\nd\"} 55.5\n"));
        assert!(text.contains("x_seconds_count{pipeline=\"a\\\"b\\\\c\\nd\"} 3\n"));
    }
}
