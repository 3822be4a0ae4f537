use super::*;
use crate::ops::sample_history;
use std::sync::Arc;

fn t(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

fn history(steps: usize, runs: usize) -> (Arc<Pipeline>, Vec<PipelineRun>) {
    let def = Arc::new(sample_history::pipeline("wide", steps).unwrap());
    let runs = sample_history::runs(&def, runs, t("2026-01-01T01:00:00Z"));
    (def, runs)
}

#[test]
fn the_grid_holds_the_last_runs_oldest_first_with_one_row_per_step() {
    let (def, runs) = history(6, 40);
    let grid = Grid::build(&def, &runs);
    assert_eq!(grid.runs.len(), GRID_RUNS);
    assert_eq!(grid.steps.len(), 6);
    assert!(grid.runs[0].logical_date < grid.runs[GRID_RUNS - 1].logical_date);
    assert_eq!(grid.runs[GRID_RUNS - 1].id, runs[0].id.0);
    let cell = grid.cells[0][0].as_ref().unwrap();
    assert!(cell.href.as_deref().unwrap().starts_with("https://"));
    assert!(cell.seconds.unwrap() > 0.0);
    // A failed step says why, in words.
    let failed = grid
        .cells
        .iter()
        .flatten()
        .flatten()
        .find(|c| c.state == "failed")
        .unwrap();
    assert_eq!(
        failed.reason.as_deref(),
        Some("Database Error in model <orders>")
    );
}

#[test]
fn the_gantt_shows_queued_running_retried_and_waits_with_the_critical_path() {
    let (_, runs) = history(6, 8);
    // The run with a retried step (every seventh, counted from 3).
    let run = runs.iter().find(|r| r.id.0.contains("2026-01-04")).unwrap();
    let gantt = Gantt::build(run, t("2027-01-01T00:00:00Z"));
    assert_eq!(gantt.rows.len(), 6);
    let kinds: BTreeSet<SpanKind> = gantt
        .rows
        .iter()
        .flat_map(|r| r.spans.iter().map(|s| s.kind))
        .collect();
    for kind in [
        SpanKind::WaitingUpstream,
        SpanKind::Queued,
        SpanKind::Running,
        SpanKind::Retried,
        SpanKind::WaitingRetry,
    ] {
        assert!(kinds.contains(&kind), "{kind:?} missing: {gantt:#?}");
    }
    // Spans never run backwards and stay inside the run.
    for row in &gantt.rows {
        for s in &row.spans {
            assert!(s.from < s.to && s.from >= gantt.start && s.to <= gantt.end);
        }
    }
    // s05 ends last; it waits on s04 (ends after s02), which waits on s03, then s02...
    let critical: Vec<&str> = gantt
        .rows
        .iter()
        .filter(|r| r.critical)
        .map(|r| r.step.as_str())
        .collect();
    assert_eq!(critical, ["s00", "s01", "s02", "s03", "s04", "s05"]);
}

#[test]
fn a_run_in_flight_ends_its_spans_now() {
    let (_, runs) = history(3, 1);
    let mut run = runs[0].clone();
    let now =
        run.steps.values().next().unwrap().attempts[0].created_at + chrono::Duration::seconds(10);
    run.state = PipelineRunState::Running;
    run.finished_at = None;
    for (i, s) in run.steps.values_mut().enumerate() {
        if i == 0 {
            s.state = crate::engine::state::StepState::Running;
            s.attempts.truncate(1);
            s.attempts[0].finished_at = None;
        } else {
            s.state = crate::engine::state::StepState::Pending;
            s.attempts.clear();
        }
    }
    let gantt = Gantt::build(&run, now);
    assert!(gantt
        .rows
        .iter()
        .flat_map(|r| &r.spans)
        .all(|s| s.to <= now));
    assert_eq!(gantt.end, now);
    // The steps not started yet wait on their upstream until now.
    assert_eq!(gantt.rows[1].spans[0].kind, SpanKind::WaitingUpstream);
}

#[test]
fn trends_mark_the_median_and_the_slowest_runs() {
    let (def, runs) = history(4, 30);
    let trends = Trends::build(&def, &runs);
    assert_eq!(trends.runs, 30);
    let s0 = &trends.steps[0];
    assert_eq!(s0.points.len(), 30);
    assert!(s0.points[0].logical_date < s0.points[29].logical_date);
    let mut sorted: Vec<f64> = s0.points.iter().map(|p| p.seconds).collect();
    sorted.sort_by(f64::total_cmp);
    assert_eq!(s0.median_seconds, Some(sorted[14]));
    assert_eq!(s0.slowest.len(), 3);
    assert_eq!(s0.slowest[0].seconds, sorted[29]);
    assert_eq!(s0.max_seconds, Some(sorted[29]));
}

#[test]
fn merged_runs_are_newest_first_and_unique() {
    let (_, runs) = history(2, 5);
    let merged = merge_runs(runs[..2].to_vec(), runs[1..].to_vec(), 4);
    let ids: Vec<&str> = merged.iter().map(|r| r.id.0.as_str()).collect();
    assert_eq!(ids.len(), 4);
    assert_eq!(ids[0], runs[0].id.0);
    assert_eq!(ids[3], runs[3].id.0);
}
