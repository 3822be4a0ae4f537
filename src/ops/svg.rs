//! Server-rendered SVG for the pipeline page: the DAG with its edges, the Gantt of one run and a
//! step's duration trend. No script: the pictures are plain markup with `<title>` tooltips, and
//! every piece of text in them is escaped.

use super::html::{escape, safe_href};
use super::run_history::{Gantt, StepTrend};
use crate::model::pipeline::Pipeline;
use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use std::collections::BTreeMap;
use std::fmt::Write;

const NODE_W: usize = 150;
const NODE_H: usize = 34;
const COL_W: usize = 200;
const ROW_H: usize = 50;
const PAD: usize = 10;

/// Shortens a label to fit a box (the whole name stays in the `<title>`).
fn fit(text: &str, chars: usize) -> String {
    if text.chars().count() <= chars {
        text.to_string()
    } else {
        let cut: String = text.chars().take(chars.saturating_sub(1)).collect();
        format!("{cut}…")
    }
}

/// The DAG, one column per depth, edges from each upstream to its downstream. `states`: each
/// step's state in the run shown; `hrefs`: its dbt Cloud run.
pub fn dag(
    def: &Pipeline,
    states: &BTreeMap<String, String>,
    hrefs: &BTreeMap<String, String>,
) -> String {
    let mut per_level: Vec<usize> = Vec::new();
    let mut place: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
    for (step, d) in def.steps.iter().zip(def.step_depths()) {
        if per_level.len() <= d {
            per_level.resize(d + 1, 0);
        }
        let x = PAD + d * COL_W;
        let y = PAD + per_level[d] * ROW_H;
        per_level[d] += 1;
        place.insert(step.name.0.as_str(), (x, y));
    }
    let width = PAD * 2 + per_level.len().max(1) * COL_W - (COL_W - NODE_W);
    let height = PAD * 2 + per_level.iter().copied().max().unwrap_or(1) * ROW_H - (ROW_H - NODE_H);
    let mut s = String::new();
    let _ = write!(
        s,
        "<svg class=\"dag-svg\" xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" \
viewBox=\"0 0 {width} {height}\" role=\"img\" aria-label=\"DAG of {} steps\">\
<defs><marker id=\"arrow\" viewBox=\"0 0 10 10\" refX=\"10\" refY=\"5\" markerWidth=\"7\" markerHeight=\"7\" orient=\"auto\">\
<path d=\"M0,0L10,5L0,10z\" fill=\"#777\"/></marker></defs>",
        def.steps.len()
    );
    for step in &def.steps {
        let (x2, y2) = place[step.name.0.as_str()];
        for up in &step.depends_on {
            let Some(&(x1, y1)) = place.get(up.0.as_str()) else {
                continue;
            };
            let (sx, sy, ex, ey) = (x1 + NODE_W, y1 + NODE_H / 2, x2, y2 + NODE_H / 2);
            let mid = (sx + ex) / 2;
            let _ = write!(
                s,
                "<path class=\"edge\" data-from=\"{}\" data-to=\"{}\" d=\"M{sx},{sy} C{mid},{sy} {mid},{ey} {ex},{ey}\" marker-end=\"url(#arrow)\"/>",
                escape(&up.0),
                escape(&step.name.0)
            );
        }
    }
    for step in &def.steps {
        let name = step.name.0.as_str();
        let (x, y) = place[name];
        let state = states.get(name).map_or("not_run", String::as_str);
        let node = format!(
            "<g class=\"node {state}\" data-step=\"{0}\" data-state=\"{state}\"><title>{0}: {state} (job {1})</title>\
<rect x=\"{x}\" y=\"{y}\" width=\"{NODE_W}\" height=\"{NODE_H}\" rx=\"4\"/>\
<text x=\"{2}\" y=\"{3}\">{4}</text></g>",
            escape(name),
            step.job_id.0,
            x + 8,
            y + NODE_H / 2 + 4,
            escape(&fit(name, 20))
        );
        match safe_href(hrefs.get(name).map(String::as_str)) {
            Some(h) => {
                let _ = write!(s, "<a href=\"{h}\" rel=\"noreferrer\">{node}</a>");
            }
            None => s.push_str(&node),
        }
    }
    s.push_str("</svg>");
    s
}

const LABEL_W: f64 = 170.0;
const CHART_W: f64 = 1000.0;
const BAR_H: f64 = 16.0;
const LINE_H: f64 = 22.0;
const AXIS_H: f64 = 24.0;

fn clock(at: DateTime<Utc>, zone: Tz) -> String {
    at.with_timezone(&zone).format("%H:%M:%S").to_string()
}

/// One run's steps on a time axis: a bar per span, the critical path's rows marked.
pub fn gantt(g: &Gantt, zone: Tz) -> String {
    let total = (g.end - g.start).num_milliseconds().max(1) as f64;
    let x = |at: DateTime<Utc>| -> f64 {
        LABEL_W + ((at - g.start).num_milliseconds() as f64 / total * CHART_W).clamp(0.0, CHART_W)
    };
    let width = LABEL_W + CHART_W + 20.0;
    let height = AXIS_H + g.rows.len() as f64 * LINE_H + 10.0;
    let mut s = String::new();
    let _ = write!(
        s,
        "<svg class=\"gantt-svg\" xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" \
viewBox=\"0 0 {width} {height}\" role=\"img\" aria-label=\"Gantt of run {}\">",
        escape(&g.run)
    );
    for i in 0..=4 {
        let at = g.start + chrono::Duration::milliseconds((total * f64::from(i) / 4.0) as i64);
        let tx = x(at);
        let anchor = match i {
            0 => "start",
            4 => "end",
            _ => "middle",
        };
        let _ = write!(
            s,
            "<line class=\"axis\" x1=\"{tx:.1}\" y1=\"{AXIS_H}\" x2=\"{tx:.1}\" y2=\"{height}\"/>\
<text x=\"{tx:.1}\" y=\"14\" text-anchor=\"{anchor}\">{}</text>",
            clock(at, zone)
        );
    }
    for (i, row) in g.rows.iter().enumerate() {
        let y = AXIS_H + i as f64 * LINE_H;
        let _ = write!(
            s,
            "<g class=\"row{}\" data-step=\"{}\" data-critical=\"{}\">",
            if row.critical { " critical" } else { "" },
            escape(&row.step),
            row.critical
        );
        if row.critical {
            let _ = write!(
                s,
                "<rect class=\"critical-mark\" x=\"0\" y=\"{:.1}\" width=\"4\" height=\"{BAR_H}\"><title>on the critical path</title></rect>",
                y + 3.0
            );
        }
        let _ = write!(
            s,
            "<text x=\"8\" y=\"{:.1}\"{}>{}</text>",
            y + 15.0,
            if row.critical {
                " font-weight=\"bold\""
            } else {
                ""
            },
            escape(&fit(&row.step, 22))
        );
        for span in &row.spans {
            let (x1, x2) = (x(span.from), x(span.to));
            let attempt = span
                .attempt
                .map_or(String::new(), |n| format!(", attempt {n}"));
            let _ = write!(
                s,
                "<rect class=\"span {}\" data-kind=\"{}\" x=\"{x1:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{BAR_H}\">\
<title>{}: {}{attempt}, {} to {} ({})</title></rect>",
                span.kind.name(),
                span.kind.name(),
                y + 3.0,
                (x2 - x1).max(1.0),
                escape(&row.step),
                span.kind.label(),
                clock(span.from, zone),
                clock(span.to, zone),
                crate::humanize::between(span.from, span.to)
            );
        }
        s.push_str("</g>");
    }
    s.push_str("</svg>");
    s
}

const TREND_W: f64 = 260.0;
const TREND_H: f64 = 50.0;

/// A step's durations, oldest run left: the median as a dashed line, the slowest runs in red.
pub fn trend(t: &StepTrend) -> String {
    let max = t.max_seconds.unwrap_or(0.0).max(1.0);
    let n = t.points.len();
    let x = |i: usize| -> f64 {
        if n <= 1 {
            TREND_W / 2.0
        } else {
            4.0 + i as f64 / (n - 1) as f64 * (TREND_W - 8.0)
        }
    };
    let y = |secs: f64| -> f64 { TREND_H - 4.0 - secs / max * (TREND_H - 8.0) };
    let mut s = String::new();
    let _ = write!(
        s,
        "<svg class=\"trend-svg\" xmlns=\"http://www.w3.org/2000/svg\" width=\"{TREND_W}\" height=\"{TREND_H}\" \
viewBox=\"0 0 {TREND_W} {TREND_H}\" role=\"img\" aria-label=\"durations of {}\">",
        escape(&t.step)
    );
    if n > 1 {
        let points: Vec<String> = t
            .points
            .iter()
            .enumerate()
            .map(|(i, p)| format!("{:.1},{:.1}", x(i), y(p.seconds)))
            .collect();
        let _ = write!(
            s,
            "<polyline class=\"trend-line\" points=\"{}\"/>",
            points.join(" ")
        );
    }
    if let Some(m) = t.median_seconds {
        let _ = write!(
            s,
            "<line class=\"median\" x1=\"0\" x2=\"{TREND_W}\" y1=\"{0:.1}\" y2=\"{0:.1}\"><title>median {1}</title></line>",
            y(m),
            secs(m)
        );
    }
    for (i, p) in t.points.iter().enumerate() {
        let slow = t.slowest.iter().any(|q| q.run == p.run);
        let _ = write!(
            s,
            "<circle class=\"{}\" cx=\"{:.1}\" cy=\"{:.1}\" r=\"{}\"><title>{}: {} ({})</title></circle>",
            if slow { "slowest" } else { "point" },
            x(i),
            y(p.seconds),
            if slow { 3.5 } else { 2.0 },
            escape(&p.run),
            secs(p.seconds),
            escape(&p.state)
        );
    }
    s.push_str("</svg>");
    s
}

/// Seconds as a duration a person reads.
pub fn secs(seconds: f64) -> String {
    crate::humanize::duration(std::time::Duration::from_secs_f64(seconds.max(0.0)))
}
