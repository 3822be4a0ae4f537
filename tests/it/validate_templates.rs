//! Template checks at validation: the 212-character border of `cause`, both branches of a
//! condition, and override values of the wrong type.

use baton::config::load_pipeline_str;
use baton::model::template::{render_cause, TemplateContext, MAX_CAUSE_HUMAN_CHARS};

fn with_cause(cause: &str) -> String {
    format!("name: p\ncause: '{cause}'\nsteps:\n  s:\n    job_id: 1\n")
}

#[test]
fn cause_border_is_212_characters() {
    assert_eq!(MAX_CAUSE_HUMAN_CHARS, 212);
    let fits = "x".repeat(212);
    let pipeline = load_pipeline_str("p.yaml", &with_cause(&fits)).unwrap();
    let ctx = TemplateContext::sample("p", "s", chrono_tz::UTC);
    let key = "0123456789abcdef0123456789abcdef01234567";
    let cause = render_cause(&pipeline, &ctx, key);
    assert_eq!(cause.chars().count(), 255);
    assert_eq!(cause, format!("{fits} [{key}]"));

    let too_long = "x".repeat(213);
    let err = load_pipeline_str("p.yaml", &with_cause(&too_long)).unwrap_err();
    assert!(err.items[0].message.contains("213 characters"), "{err}");
}

#[test]
fn cause_is_measured_with_the_longest_values() {
    // 200 fixed characters plus an attempt number: fits for attempt 1, not for 4294967295.
    let template = format!("{}{{{{ attempt }}}}", "x".repeat(205));
    let err = load_pipeline_str("p.yaml", &with_cause(&template)).unwrap_err();
    assert!(err.items[0].message.contains("215 characters"), "{err}");
}

#[test]
fn both_branches_of_a_condition_are_rendered() {
    let text = "name: p\nsteps:\n  s:\n    job_id: 1\n    overrides:\n      schema_override: \"{% if is_backfill %}{{ nope }}{% else %}main{% endif %}\"\n";
    let err = load_pipeline_str("p.yaml", text).unwrap_err();
    assert_eq!(err.len(), 1, "{err}");
    assert!(
        err.items[0].message.contains("unknown variable `nope`"),
        "{err}"
    );
    assert_eq!((err.items[0].line, err.items[0].column), (6, 24));
}

#[test]
fn template_syntax_errors_are_reported() {
    let text =
        "name: p\nsteps:\n  s:\n    job_id: 1\n    overrides:\n      git_branch: \"{{ ds \"\n";
    let err = load_pipeline_str("p.yaml", text).unwrap_err();
    assert!(err.items[0].message.contains("does not render"), "{err}");
}

#[test]
fn override_values_of_the_wrong_type() {
    let text = "name: p\nsteps:\n  s:\n    job_id: 1\n    overrides:\n      schema_override: 12\n      generate_docs_override: \"yes\"\n      steps_override: [\"dbt run\", 3]\n      timeout_seconds_override: 1.5\n      azure_pull_request_id: 4\n";
    let err = load_pipeline_str("p.yaml", text).unwrap_err();
    let messages: Vec<&str> = err.items.iter().map(|d| d.message.as_str()).collect();
    assert_eq!(
        messages,
        [
            "`schema_override` in the overrides of step `s` must be a string, found an integer",
            "`generate_docs_override` in the overrides of step `s` must be a boolean, found a string",
            "`steps_override` in the overrides of step `s` must be a list of strings, found a list",
            "`timeout_seconds_override` in the overrides of step `s` must be an integer, found a number",
            "unknown key `azure_pull_request_id` in the overrides of step `s`",
        ],
        "{err}"
    );
}

proptest::proptest! {
    #[test]
    fn render_cause_always_fits_and_keeps_the_key(
        human in "[a-zé€ {}]{0,400}",
        key in "[a-z0-9-]{1,40}",
        step in "[a-z_]{1,80}",
    ) {
        let pipeline = load_pipeline_str("p.yaml", "name: p\nsteps:\n  s:\n    job_id: 1\n").unwrap();
        let pipeline = baton::model::pipeline::Pipeline {
            cause: Some(baton::model::pipeline::Template(human.replace(['{', '}'], ""))),
            ..pipeline
        };
        let ctx = TemplateContext::sample("p", &step, chrono_tz::Asia::Kathmandu);
        let cause = render_cause(&pipeline, &ctx, &key);
        let suffix = format!(" [{key}]");
        proptest::prop_assert!(cause.chars().count() <= 255);
        proptest::prop_assert!(cause.ends_with(&suffix));
    }
}
