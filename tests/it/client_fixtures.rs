//! Decoding conformance: every recorded dbt Cloud response in `../shared/dbt-cloud-api/fixtures`
//! (when that folder exists) and the project's own edge cases in `tests/data/client/` decode into the
//! wire types the client uses, and error bodies map to the right `ApiError` class.

#![allow(clippy::unwrap_used)] // tests may unwrap; clippy only knows that inside #[test] functions

use baton::dbt_cloud::client::decode_enveloped;
use baton::dbt_cloud::error::error_from_response;
use baton::dbt_cloud::wire::{Job, Pagination, Run, RunStatus, RunStep};
use baton::dbt_cloud::ApiError;
use baton::ids::{AccountId, JobId, RunId};
use serde_json::Value;
use std::path::{Path, PathBuf};

fn shared_fixtures() -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/dbt-cloud-api/fixtures");
    if dir.is_dir() {
        Some(dir)
    } else {
        println!(
            "SKIPPED: {} is absent, so the recorded dbt Cloud responses were not checked",
            dir.display()
        );
        None
    }
}

fn project_data(name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/client")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn run(body: &[u8]) -> Run {
    decode_enveloped::<Run>(body, "a run").unwrap().0
}

fn runs(body: &[u8]) -> (Vec<Run>, Option<Pagination>) {
    let (runs, extra) = decode_enveloped::<Vec<Run>>(body, "runs").unwrap();
    (runs, extra.and_then(|e| e.pagination))
}

/// The status code an error fixture's envelope carries, as the HTTP status it came with.
fn envelope_code(body: &[u8]) -> u16 {
    let value: Value = serde_json::from_slice(body).unwrap();
    value["status"]["code"].as_u64().unwrap() as u16
}

/// Checks one recorded file; `false` when no check knows the file (a new fixture needs one).
fn check_fixture(name: &str, body: &[u8]) -> bool {
    match name {
        "kestra-responses-run_trigger_queued_2024.json" => {
            let run = run(body);
            assert_eq!(run.id, RunId(300_580_980));
            assert_eq!(run.status, RunStatus::Queued);
            assert_eq!(run.job_definition_id, Some(JobId(559_062)));
            let trigger = run.trigger.expect("trigger filled on a trigger response");
            assert_eq!(trigger.cause.as_deref(), Some("Triggered by Kestra."));
            assert_eq!(trigger.timeout_seconds_override, Some(7200));
            assert!(run.job.is_some());
            assert!(run.started_at.is_none());
        }
        "openmetadata-list_runs_timeout_cancelled_and_queued_blocked.json" => {
            let (runs, pagination) = runs(body);
            assert_eq!(runs.len(), 2);
            assert_eq!(runs[0].id, RunId(70_403_110_257_794));
            assert_eq!(runs[0].account_id, Some(AccountId(70_403_103_922_125)));
            assert_eq!(runs[0].status, RunStatus::Cancelled);
            assert!(runs[0]
                .status_message
                .as_deref()
                .unwrap()
                .contains("timed out"));
            assert_eq!(runs[0].duration.as_deref(), Some("24:00:36"));
            assert_eq!(runs[1].status, RunStatus::Queued);
            assert_eq!(runs[1].blocked_by, vec![RunId(70_403_111_611_683)]);
            assert_eq!(
                pagination,
                Some(Pagination {
                    count: 4,
                    total_count: 4
                })
            );
        }
        "openmetadata-list_jobs_with_extra.json" => {
            let (jobs, extra) = decode_enveloped::<Vec<Job>>(body, "jobs").unwrap();
            assert_eq!(jobs.len(), 1);
            assert_eq!(jobs[0].id, JobId(70_403_103_936_332));
            assert!(jobs.iter().all(|j| j.created_at.is_some()));
            let extra = extra.unwrap();
            assert_eq!(extra.filters["state"], "active");
            assert_eq!(extra.pagination.unwrap().total_count, 2);
        }
        "dbt-cloud-cli-run_get_response.json" => {
            let run = run(body);
            assert_eq!(run.id, RunId(36_053_848));
            assert_eq!(run.status, RunStatus::Success);
            assert!(run.status.is_terminal());
            assert!(run.trigger.is_none() && run.job.is_none());
            assert!(run.finished_at.is_some());
        }
        "dbt-cloud-cli-run_cancel_response.json" => {
            let run = run(body);
            assert_eq!(run.status, RunStatus::Cancelled);
            assert_eq!(run.status_message.as_deref(), Some("Cancelled by user."));
            assert!(run.started_at.is_none());
        }
        "dbt-cloud-cli-run_list_artifacts_response.json" | "dagster-legacy-list_artifacts.json" => {
            let (paths, _) = decode_enveloped::<Vec<String>>(body, "paths").unwrap();
            assert!(paths.iter().any(|p| p == "manifest.json"));
            assert!(paths.iter().any(|p| p == "run_results.json"));
        }
        "dbt-cloud-cli-run_get_artifact_response.json" => {
            // A raw file, no envelope: the client hands back the bytes; they are the JSON dbt wrote.
            let file: Value = serde_json::from_slice(body).unwrap();
            assert!(file["results"].as_array().is_some_and(|r| !r.is_empty()));
            assert!(decode_enveloped::<Run>(body, "a run").is_err());
        }
        "dbt-cloud-cli-job_get_response.json" => {
            let (job, _) = decode_enveloped::<Job>(body, "a job").unwrap();
            assert_eq!(job.id, JobId(43_167));
            assert_eq!(job.execution.unwrap().timeout_seconds, Some(0));
            assert_eq!(
                job.execute_steps,
                vec!["dbt run -s not_a_model".to_string()]
            );
            assert_eq!(job.settings.unwrap().threads, Some(4));
        }
        "dagster-legacy-run_details_include_related_trigger_job.json" => {
            let run = run(body);
            assert_eq!(run.status, RunStatus::Success);
            assert_eq!(
                run.trigger.unwrap().cause.as_deref(),
                Some("Triggered via Dagster")
            );
            assert!(run.job.is_some());
        }
        "unknownrepo-idx4808442438-list_runs_error_paginated.json" => {
            let (runs, pagination) = runs(body);
            assert_eq!(runs.len(), 2);
            assert!(runs.iter().all(|r| r.status == RunStatus::Error));
            assert_eq!(
                pagination,
                Some(Pagination {
                    count: 2,
                    total_count: 5
                })
            );
        }
        "airflow-pr48466-error_run_subset_and_steps.PARTIAL.json" => {
            // Not a response: a subset of a run's keys and its steps, printed by hand.
            let value: Value = serde_json::from_slice(body).unwrap();
            let steps: Vec<RunStep> =
                serde_json::from_value(value["run_steps_partial"].clone()).unwrap();
            assert_eq!(steps.len(), 2);
            assert_eq!(steps[0].status, Some(RunStatus::Success));
            assert_eq!(steps[0].run_id, Some(RunId(70_471_831_584_850)));
            // The subset lacks `status`, the one key besides `id` a run must have.
            let mut subset = value["run_subset"].clone();
            assert!(serde_json::from_value::<Run>(subset.clone()).is_err());
            subset["status"] = Value::from(20);
            let run: Run = serde_json::from_value(subset).unwrap();
            assert_eq!(run.id, RunId(70_471_831_584_850));
            assert_eq!(run.job_id, Some(JobId(70_471_823_442_042)));
            assert!(run.finished_at.is_some());
        }
        "airflow-test_data-job_run_partial_run_steps.json" => {
            // Test data without a status envelope or a run id: its parts decode.
            let value: Value = serde_json::from_slice(body).unwrap();
            let job: Job = serde_json::from_value(value["data"]["job"].clone()).unwrap();
            assert_eq!(job.execute_steps, vec!["dbt build".to_string()]);
            let steps: Vec<RunStep> =
                serde_json::from_value(value["data"]["run_steps"].clone()).unwrap();
            assert_eq!(steps.len(), 4);
            assert_eq!(steps[3].index, Some(4));
        }
        "error-400-validation-status__in.json" => {
            let error = error_from_response(envelope_code(body), None, body);
            let ApiError::InvalidRequest { message, fields } = &error else {
                panic!("not an invalid request: {error:?}");
            };
            assert!(message.contains("invalid"));
            assert!(fields["status__in"].contains("is not valid"));
            assert!(!error.is_transient());
        }
        "error-401-invalid-token.json" => {
            assert_eq!(
                error_from_response(envelope_code(body), None, body),
                ApiError::Unauthorized
            );
        }
        "error-403-token-not-scoped-to-account.json" => {
            let error = error_from_response(envelope_code(body), None, body);
            assert!(
                matches!(&error, ApiError::Forbidden { message } if message.contains("not scoped to account")),
                "{error:?}"
            );
        }
        "error-404-not-found-terraform-test.json" => {
            let error = error_from_response(envelope_code(body), None, body);
            assert!(
                matches!(&error, ApiError::NotFound { message } if message.contains("not found")),
                "{error:?}"
            );
        }
        _ => return false,
    }
    true
}

#[test]
fn every_recorded_response_decodes() {
    let Some(dir) = shared_fixtures() else {
        return;
    };
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".json"))
        .collect();
    names.sort();
    assert!(!names.is_empty(), "no fixtures in {}", dir.display());
    let mut unchecked = Vec::new();
    for name in &names {
        let body = std::fs::read(dir.join(name)).unwrap();
        if !check_fixture(name, &body) {
            unchecked.push(name.clone());
        }
    }
    assert!(
        unchecked.is_empty(),
        "fixtures without a decoding check: {unchecked:?}"
    );
    println!(
        "checked {} recorded responses in {}",
        names.len(),
        dir.display()
    );
}

#[test]
fn unknown_status_is_kept_not_terminal_and_unknown_fields_are_ignored() {
    let run = run(&project_data("run_unknown_status.json"));
    assert_eq!(run.id, RunId(70_403_110_257_794));
    assert_eq!(run.status, RunStatus::Unknown(42));
    assert!(!run.status.is_terminal());
    assert!(run.blocked_by.is_empty() && run.run_steps.is_empty());
}

#[test]
fn every_timestamp_spelling_decodes_to_the_same_instant() {
    let (runs, pagination) = runs(&project_data("runs_timestamp_spellings.json"));
    assert_eq!(runs.len(), 6);
    let first = runs[0].created_at.unwrap();
    for run in &runs[..5] {
        assert_eq!(run.created_at, Some(first), "run {}", run.id);
    }
    let whole_second = runs[5].created_at.unwrap();
    assert_eq!(runs[5].finished_at, Some(whole_second));
    assert_eq!(pagination.unwrap().total_count, 6);
}

#[test]
fn absent_and_null_fields_decode() {
    let run = run(&project_data("run_only_id_and_status.json"));
    assert_eq!(run.id, RunId(99_999_999_999_999));
    assert_eq!(run.status, RunStatus::Running);
    assert!(run.trigger.is_none() && run.created_at.is_none());

    let run = self::run(&project_data("run_every_optional_null.json"));
    assert_eq!(run.id, RunId(12_345_678_901_234));
    assert_eq!(run.status, RunStatus::Starting);
    assert!(run.status.is_queued());

    let (job, _) =
        decode_enveloped::<Job>(&project_data("job_no_fraction_and_offset.json"), "a job").unwrap();
    assert_eq!(job.id, JobId(70_403_103_936_332));
    assert!(job.created_at.is_some() && job.updated_at.is_some());
    assert!(job.execute_steps.is_empty());
}

#[test]
fn load_balancer_and_empty_bodies_are_server_errors() {
    let error = error_from_response(502, None, &project_data("error_502_load_balancer.html"));
    assert!(
        matches!(&error, ApiError::Server { status: 502, excerpt } if excerpt.contains("502 Bad Gateway")),
        "{error:?}"
    );
    assert!(error.is_transient());
    let error = error_from_response(504, None, &project_data("empty_body.txt"));
    assert!(matches!(error, ApiError::Server { status: 504, .. }));
    let error = error_from_response(429, Some(std::time::Duration::from_secs(7)), b"");
    assert_eq!(error.retry_after(), Some(std::time::Duration::from_secs(7)));
    assert!(error.is_transient());
}

#[test]
fn field_messages_of_a_400_are_kept_even_as_lists() {
    let error = error_from_response(400, None, &project_data("error_400_list_messages.json"));
    let ApiError::InvalidRequest { fields, .. } = &error else {
        panic!("{error:?}");
    };
    assert_eq!(
        fields["limit"],
        "Ensure this value is less than or equal to 100."
    );
    assert_eq!(fields["cause"], "This field is required.");
    assert!(error.to_string().contains("limit: Ensure"));
}

#[test]
fn a_success_without_data_or_with_an_empty_body_is_a_decode_error() {
    for name in ["success_with_null_data.json", "empty_body.txt"] {
        let error = decode_enveloped::<Run>(&project_data(name), "a run").unwrap_err();
        assert!(
            matches!(&error, ApiError::Decode { expected, .. } if expected == "a run"),
            "{name}: {error:?}"
        );
        assert!(!error.is_transient());
    }
}
