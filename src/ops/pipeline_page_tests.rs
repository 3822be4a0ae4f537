use super::*;
use crate::ops::sample_history;

fn t(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

fn page(name: &str, chosen: Option<&str>) -> PipelinePage {
    let mut def = sample_history::pipeline("wide", 5).unwrap();
    def.name = PipelineName(name.to_string());
    def.description = Some("staging & marts <nightly>".into());
    let def = Arc::new(def);
    let mut runs = sample_history::runs(&def, 12, t("2026-01-01T01:00:00Z"));
    // A dbt Cloud message and a link that must stay text.
    let a = runs[0]
        .steps
        .values_mut()
        .next()
        .unwrap()
        .attempts
        .last_mut()
        .unwrap();
    a.href = Some("javascript:alert(1)".into());
    let snapshot = Snapshot {
        now: t("2026-02-01T00:00:00Z"),
        definition: def,
        paused: false,
        in_memory: Vec::new(),
    };
    PipelinePage::build(snapshot, &runs, chosen)
}

#[test]
fn the_page_holds_the_dag_grid_gantt_and_trends() {
    let p = page("wide", None);
    let html = render(&p, &Base::relative(1));
    assert!(html.contains("<svg class=\"dag-svg\""));
    assert!(html.contains("class=\"edge\" data-from=\"s00\" data-to=\"s01\""));
    assert_eq!(
        html.matches("<tr data-step=").count(),
        5 * 2,
        "grid and trends rows"
    );
    assert_eq!(html.matches("<th class=\"run ").count(), 12);
    assert!(html.contains("<svg class=\"gantt-svg\""));
    assert!(html.contains("data-critical=\"true\""));
    assert!(html.contains("Critical path: s00 → "));
    assert!(html.contains("<svg class=\"trend-svg\""));
    assert!(html.contains("class=\"median\""));
    assert!(html.contains("href=\"https://cloud.getdbt.com/deploy/1/projects/1/runs/"));
    // The newest run is the Gantt's by default; a heading links to each run's Gantt.
    assert!(html.contains("data-run=\"wide@2026-01-12T01:00:00Z\">Run"));
    assert!(html.contains("href=\"?run=wide%402026-01-01T01%3A00%3A00Z#gantt\""));
    // Times for people: the zone and UTC, to the second.
    assert!(
        html.contains("2026-02-01 01:00:00 CET (00:00:00 UTC)"),
        "{html}"
    );
    assert!(!html.contains("<script"));
}

#[test]
fn a_chosen_run_is_shown_and_an_unknown_one_said_so() {
    let p = page("wide", Some("wide@2026-01-04T01:00:00Z"));
    assert_eq!(p.gantt.as_ref().unwrap().run, "wide@2026-01-04T01:00:00Z");
    let html = render(&p, &Base::relative(1));
    assert!(html.contains("retried"));
    let p = page("wide", Some("<b>nope</b>"));
    assert!(p.gantt.is_none());
    let html = render(&p, &Base::relative(1));
    assert!(html.contains("No run <code>&lt;b&gt;nope&lt;/b&gt;</code>"));
}

#[test]
fn user_text_is_escaped_and_only_http_links_are_links() {
    let p = page("<script>x</script>", None);
    let html = render(&p, &Base::relative(1));
    assert!(!html.contains("<script>"), "{html}");
    assert!(html.contains("&lt;script&gt;x&lt;/script&gt;"));
    assert!(html.contains("staging &amp; marts &lt;nightly&gt;"));
    assert!(!html.contains("javascript:"));
    assert!(html.contains("Database Error in model &lt;orders&gt;"));
}

#[test]
fn the_home_link_follows_the_proxy_prefix() {
    let p = page("wide", None);
    assert!(render(&p, &Base::relative(1)).contains("class=\"home\" href=\"../\""));
    let mut headers = HeaderMap::new();
    headers.insert("x-forwarded-prefix", "/ops/baton".parse().unwrap());
    assert!(render(&p, &Base::from_headers(&headers, 1))
        .contains("class=\"home\" href=\"/ops/baton/\""));
}
