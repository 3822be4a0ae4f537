use super::*;

fn t(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

fn view() -> StatusView {
    let step =
        |name: &str, deps: &[&str], state: Option<&'static str>, href: Option<&str>| StepView {
            name: name.into(),
            job_id: 7,
            depends_on: deps.iter().map(|d| d.to_string()).collect(),
            state,
            attempts: 1,
            href: href.map(str::to_string),
        };
    StatusView {
        now: t("2026-01-05T10:00:00Z"),
        pipelines: vec![PipelineView {
            name: "<script>alert(1)</script>".into(),
            description: Some("a & b \"quoted\"".into()),
            schedule: Some(("0 2 * * *".into(), "Europe/Amsterdam".into())),
            paused: true,
            suspended: false,
            next_fire: Some((t("2026-01-06T01:00:00Z"), "2026-01-06 02:00 CET".into())),
            latest: Some(("x@2026-01-05T01:00:00Z".into(), "failed")),
            failed: true,
            late: true,
            levels: vec![
                vec![step(
                    "staging",
                    &[],
                    Some("succeeded"),
                    Some("https://cloud.getdbt.com/runs/1/"),
                )],
                vec![step(
                    "marts'",
                    &["staging"],
                    Some("failed"),
                    Some("javascript:alert(1)"),
                )],
            ],
        }],
        in_flight: vec![InFlightView {
            pipeline_run: "y@2026-01-05T09:00:00Z".into(),
            step: "s".into(),
            attempt: 2,
            status: "Running".into(),
            dbt_run_id: Some(42),
            href: Some("https://cloud.getdbt.com/runs/42/".into()),
            since: t("2026-01-05T09:00:00Z"),
        }],
        failures: vec![FailureView {
            pipeline_run: "x@2026-01-05T01:00:00Z".into(),
            finished_at: Some(t("2026-01-05T01:30:00Z")),
            steps: vec![(
                "marts'".into(),
                "failed",
                Some("Database Error <relation>".into()),
                None,
            )],
        }],
    }
}

#[test]
fn every_text_is_escaped_and_only_http_links_are_links() {
    let html = render(&view(), &Base::relative(0));
    assert!(!html.contains("<script>"), "{html}");
    assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
    assert!(html.contains("a &amp; b &quot;quoted&quot;"));
    assert!(html.contains("marts&#39;"));
    assert!(html.contains("Database Error &lt;relation&gt;"));
    assert!(!html.contains("href=\"javascript"), "{html}");
    assert!(html
        .contains("<a href=\"https://cloud.getdbt.com/runs/1/\" rel=\"noreferrer\">staging</a>"));
    assert!(
        html.contains("<a href=\"https://cloud.getdbt.com/runs/42/\" rel=\"noreferrer\">42</a>")
    );
    assert!(html.contains("<strong>Paused.</strong>"));
    assert!(html.contains("2026-01-06 02:00 CET"));
    assert!(html.contains("Runs in flight (1)"));
    assert!(html.contains("Recent failures (1)"));
    assert!(!html.contains("<script"), "no script at all");
}

#[test]
fn many_pipelines_are_listed_compactly_failed_first() {
    let mut v = view();
    let mut ok = v.pipelines[0].clone();
    ok.failed = false;
    ok.late = false;
    ok.name = "aaa_ok".into();
    v.pipelines = std::iter::repeat_n(ok, FULL_DAGS_UP_TO)
        .chain(std::iter::once(v.pipelines[0].clone()))
        .collect();
    let html = render(&v, &Base::relative(0));
    assert!(!html.contains("class=\"dag\""));
    let failed = html.find("data-failed=\"true\"").unwrap();
    let ok = html.find("data-pipeline=\"aaa_ok\"").unwrap();
    assert!(failed < ok, "failed pipelines first");
    assert!(html.contains("<a class=\"pipeline-link\" href=\"pipelines/aaa_ok\">aaa_ok</a>"));
}

#[test]
fn each_pipeline_links_to_its_page_and_says_failed_or_late() {
    let html = render(&view(), &Base::relative(0));
    assert!(html.contains(
        "<a class=\"pipeline-link\" href=\"pipelines/%3Cscript%3Ealert%281%29%3C%2Fscript%3E\">"
    ));
    assert!(html.contains("<span class=\"mark failed\">failed</span>"));
    assert!(html.contains("<span class=\"mark late\">late</span>"));
    assert!(html.contains("1 failed, 1 late."));
}

#[test]
fn the_dag_is_drawn_level_by_level() {
    let html = render(&view(), &Base::relative(0));
    let staging = html.find("data-step=\"staging\"").unwrap();
    let marts = html.find("data-step=\"marts&#39;\"").unwrap();
    assert!(staging < marts);
    assert!(html.contains("data-state=\"failed\""));
    assert!(html.contains("<small>after staging</small>"));
}

#[test]
fn a_pipeline_is_late_when_its_latest_run_is_marked_or_ended_past_its_deadline() {
    let def = std::sync::Arc::new(crate::ops::sample_history::pipeline("p", 2).unwrap());
    let mut run = crate::ops::sample_history::runs(&def, 1, t("2026-01-05T01:00:00Z"))
        .pop()
        .unwrap();
    assert!(!is_late(None));
    assert!(!is_late(Some(&run)), "no deadline, never late");
    let finished = run.finished_at.unwrap();
    run.deadline = Some(finished);
    assert!(!is_late(Some(&run)), "ended at its deadline");
    run.deadline = Some(finished - chrono::Duration::minutes(12));
    assert!(is_late(Some(&run)), "ended past its deadline unnoticed");
    run.deadline = Some(finished + chrono::Duration::hours(1));
    run.late_since = Some(finished);
    assert!(is_late(Some(&run)), "marked late");
}
