//! Jobs named instead of numbered, against the in-process emulator over loopback HTTP: a name is
//! found through the jobs list's own filters and pages and matched exactly; ambiguity and absence
//! are errors that list what was found; a job recreated under a new id is picked up by the real
//! reload path; and during a dbt Cloud outage the ids stored by the last resolution stand in.

use crate::support::daemon::{pipeline, Harness};
use crate::support::t;
use baton::cli::daemon::Reloader;
use baton::clock::SharedClock;
use baton::dbt_cloud::client::{ClientConfig, DbtCloudClient};
use baton::dbt_cloud::job_names::resolve_job_names;
use baton::dbt_cloud::RequestBudget;
use baton::emulator::Faults;
use baton::engine::event::{Event, OperatorRequest};
use baton::ids::{AccountName, JobId};
use baton::model::pipeline::{Pipeline, PipelineName};
use baton::secret::Secret;
use baton::store::Store;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// 150 jobs whose names contain `[nightly] staging` come before the one named exactly that, so
/// finding it takes a second page of the jobs list.
fn scenario() -> String {
    let mut yaml = String::from(
        "account_id: 70403103922125\ntoken: test-token\njobs:\n\
         - { id: 202, name: \"[nightly] marts\", project_id: 1, environment_id: 10, duration: 1m }\n\
         - { id: 203, name: \"[nightly] marts\", project_id: 2, environment_id: 20, duration: 1m }\n\
         - { id: 204, name: \"[nightly] marts (old)\", project_id: 1, environment_id: 10, duration: 1m }\n",
    );
    for i in 0..150 {
        yaml.push_str(&format!(
            "- {{ id: {}, name: \"[nightly] staging copy {i}\", duration: 1m }}\n",
            1000 + i
        ));
    }
    yaml.push_str("- { id: 5000, name: \"[nightly] staging\", duration: 1m }\n");
    yaml
}

const NAMED: &str = r#"
name: named
steps:
  staging: { job_name: "[nightly] staging" }
  marts:
    job_name: "[nightly] marts"
    project_id: 1
    depends_on: [staging]
"#;

fn clients(h: &Harness) -> BTreeMap<AccountName, DbtCloudClient> {
    BTreeMap::from([(AccountName::default(), h.client())])
}

/// A client that does not retry: the outage test runs on a manual clock nobody moves, and a
/// retry's backoff waits on it.
fn impatient_clients(h: &Harness) -> BTreeMap<AccountName, DbtCloudClient> {
    let mut config = ClientConfig::new(
        h.emulator.base_url().parse().unwrap(),
        h.emulator.account_id(),
        Secret::new(h.emulator.token()),
    );
    config.max_retries = 0;
    let clock: SharedClock = Arc::new(h.clock.clone());
    let budget = Arc::new(RequestBudget::new(1_000_000, clock));
    let client = DbtCloudClient::with_budget(config, budget).unwrap();
    BTreeMap::from([(AccountName::default(), client)])
}

fn job_of(p: &Pipeline, step: &str) -> JobId {
    p.steps.iter().find(|s| s.name.0 == step).unwrap().job_id
}

#[tokio::test]
async fn names_resolve_through_the_filters_and_pages_to_the_exact_match() {
    let h = Harness::start("2026-01-05T10:00:00Z", &scenario(), vec![]).await;
    let mut pipelines = vec![pipeline(NAMED)];
    assert_eq!(job_of(&pipelines[0], "staging"), JobId(0), "unresolved");
    let ids = resolve_job_names(&clients(&h), &mut pipelines, &BTreeMap::new())
        .await
        .unwrap();
    assert_eq!(job_of(&pipelines[0], "staging"), JobId(5000));
    assert_eq!(job_of(&pipelines[0], "marts"), JobId(202));
    assert_eq!(ids["default/*/*/[nightly] staging"], JobId(5000));
    assert_eq!(ids["default/1/*/[nightly] marts"], JobId(202));
    let lists = h
        .emulator
        .request_counts()
        .get(&("list_jobs".to_string(), 200))
        .copied();
    assert_eq!(lists, Some(3), "two pages for staging, one for marts");
    h.shutdown().await;
}

#[tokio::test]
async fn ambiguity_and_absence_are_errors_that_list_what_was_found() {
    let h = Harness::start("2026-01-05T10:00:00Z", &scenario(), vec![]).await;
    let yaml = r#"
name: unclear
steps:
  both: { job_name: "[nightly] marts" }
  none: { job_name: "[nightly] exposures" }
  prefix: { job_name: "[nightly] marts (ol" }
"#;
    let mut pipelines = vec![pipeline(yaml)];
    let problems = resolve_job_names(&clients(&h), &mut pipelines, &BTreeMap::new())
        .await
        .unwrap_err();
    assert_eq!(problems.len(), 3, "{problems:#?}");
    let text = problems.join("\n");
    assert!(
        text.contains("2 jobs are named `[nightly] marts` in account `default`: job 202 `[nightly] marts` (project 1, environment 10); job 203 `[nightly] marts` (project 2, environment 20); add `project_id:` or `environment_id:`"),
        "{text}"
    );
    assert!(
        text.contains("no job named `[nightly] exposures` in account `default`"),
        "{text}"
    );
    assert!(
        text.contains("no job named `[nightly] marts (ol` in account `default`; names containing it: job 204 `[nightly] marts (old)` (project 1, environment 10)"),
        "{text}"
    );
    h.shutdown().await;
}

#[tokio::test]
async fn an_outage_uses_the_stored_ids_and_without_them_says_why_it_cannot_resolve() {
    let h = Harness::start("2026-01-05T10:00:00Z", &scenario(), vec![]).await;
    let store_dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open(store_dir.path()).unwrap();
        let mut pipelines = vec![pipeline(NAMED)];
        let ids = resolve_job_names(&clients(&h), &mut pipelines, &BTreeMap::new())
            .await
            .unwrap();
        store.save_resolved_jobs(&ids).unwrap();
    }
    // dbt Cloud's jobs list fails from now on; a restart reads the ids the last start stored.
    let faults: Faults = serde_json::from_value(serde_json::json!({
        "server_errors_next": 1000, "routes": ["list_jobs"]
    }))
    .unwrap();
    h.emulator.set_faults(faults);
    let stored = Store::open(store_dir.path())
        .unwrap()
        .resolved_jobs()
        .unwrap();
    let mut pipelines = vec![pipeline(NAMED)];
    resolve_job_names(&impatient_clients(&h), &mut pipelines, &stored)
        .await
        .unwrap();
    assert_eq!(job_of(&pipelines[0], "staging"), JobId(5000));
    assert_eq!(job_of(&pipelines[0], "marts"), JobId(202));

    let mut pipelines = vec![pipeline(NAMED)];
    let problems = resolve_job_names(&impatient_clients(&h), &mut pipelines, &BTreeMap::new())
        .await
        .unwrap_err();
    assert!(
        problems[0].contains("dbt Cloud did not answer") && problems[0].contains("no id is stored"),
        "{problems:#?}"
    );
    h.shutdown().await;
}

#[tokio::test]
async fn a_job_recreated_under_a_new_id_is_picked_up_on_reload() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("named.yaml");
    std::fs::write(&file, NAMED).unwrap();
    let mut pipelines = baton::config::load_pipelines(&[dir.path().to_path_buf()]).unwrap();
    let probe = Harness::start("2026-01-05T10:00:00Z", &scenario(), vec![]).await;
    let ids = resolve_job_names(&clients(&probe), &mut pipelines, &BTreeMap::new())
        .await
        .unwrap();
    probe.shutdown().await;

    let mut h = Harness::start("2026-01-05T10:00:00Z", &scenario(), pipelines).await;
    let trigger = |day: &str| {
        Event::Operator(OperatorRequest::TriggerPipeline {
            pipeline: PipelineName("named".into()),
            logical_date: Some(t(day).into()),
        })
    };
    h.daemon.send(trigger("2026-01-05T00:00:00Z")).unwrap();
    h.run_for(300, 10).await;
    assert_eq!(h.runs_of(5000).len(), 1);

    // Terraform recreates the job: same name, new id.
    h.emulator.recreate_job(JobId(5000), JobId(7000)).unwrap();
    let reloader = Reloader {
        pipelines_dir: dir.path().to_path_buf(),
        accounts: BTreeSet::from([AccountName::default()]),
        clients: clients(&h),
        resolved: Arc::new(tokio::sync::Mutex::new(ids)),
    };
    reloader.reload(&h.daemon).await;
    assert_eq!(
        reloader.resolved.lock().await["default/*/*/[nightly] staging"],
        JobId(7000)
    );
    h.daemon.send(trigger("2026-01-06T00:00:00Z")).unwrap();
    h.run_for(300, 10).await;
    assert_eq!(h.runs_of(7000).len(), 1, "the new id is triggered");
    assert_eq!(h.runs_of(5000).len(), 1, "the old id is not");
    let run = h.pipeline_run("named@2026-01-06T00:00:00Z").await;
    assert_eq!(run.state, baton::engine::state::PipelineRunState::Succeeded);

    // The loop stored the new id for the next start.
    h.stop().await;
    let stored = Store::open(h.state_dir.path())
        .unwrap()
        .resolved_jobs()
        .unwrap();
    assert_eq!(stored["default/*/*/[nightly] staging"], JobId(7000));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validate_online_says_what_dbt_cloud_has_for_every_job_reference() {
    let h = Harness::start("2026-01-05T10:00:00Z", &scenario(), vec![]).await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("pipelines")).unwrap();
    std::fs::write(dir.path().join("token"), h.emulator.token()).unwrap();
    let config = dir.path().join("baton.yaml");
    std::fs::write(
        &config,
        format!(
            "dbt_cloud:\n  base_url: {}\n  account_id: {}\n  token_file: token\nstate_dir: state\n",
            h.emulator.base_url(),
            h.emulator.account_id()
        ),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("pipelines/online.yaml"),
        "name: online\nsteps:\n  by_name: { job_name: \"[nightly] staging\" }\n  by_id: { job_id: 202 }\n  gone: { job_id: 99999 }\n",
    )
    .unwrap();
    let output = tokio::task::spawn_blocking(move || {
        assert_cmd::Command::cargo_bin("baton")
            .unwrap()
            .args(["validate", "--online", "--config"])
            .arg(&config)
            .timeout(std::time::Duration::from_secs(60))
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains(
            "found: online step by_name (account default): job `[nightly] staging` is job 5000"
        ),
        "{stdout}"
    );
    assert!(
        stdout.contains("found: online step by_id (account default): job 202 is `[nightly] marts`"),
        "{stdout}"
    );
    assert!(
        stdout.contains("PROBLEM: online step gone (account default): no job 99999 in the account"),
        "{stdout}"
    );
    assert!(!stdout.contains("test-token"));
    h.shutdown().await;
}
