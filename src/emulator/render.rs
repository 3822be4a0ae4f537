//! Runs, triggers, jobs and steps rendered as the real API writes them: every key present, null
//! where the API has null, spaced timestamps for runs, `T` for jobs, `HH:MM:SS` durations,
//! humanized strings, the derived booleans, `href`, and the envelopes around them.

use super::scenario::JobSpec;
use super::state::{Ending, RunState, World, SETUP_STEPS};
use crate::dbt_cloud::time::{format_hms, humanize_duration, IsoTimestamp, SpacedTimestamp};
use crate::dbt_cloud::wire::{
    ApiStatus, Job, JobExecution, JobSettings, Run, RunStatus, RunStep, Trigger,
};
use crate::ids::{EnvironmentId, ProjectId, StepId};
use chrono::{DateTime, Duration, Utc};
use serde_json::{json, Map, Value};
use std::collections::BTreeSet;

const DEFAULT_PROJECT_ID: i64 = 70_403_103_926_818;
const DEFAULT_ENVIRONMENT_ID: i64 = 70_403_103_931_988;

pub fn project_id(world: &World, job: &JobSpec) -> ProjectId {
    job.project_id
        .or(world.scenario.project_id)
        .unwrap_or(ProjectId(DEFAULT_PROJECT_ID))
}

pub fn environment_id(world: &World, job: &JobSpec) -> EnvironmentId {
    job.environment_id
        .or(world.scenario.environment_id)
        .unwrap_or(EnvironmentId(DEFAULT_ENVIRONMENT_ID))
}

fn spaced(t: Option<DateTime<Utc>>) -> Option<SpacedTimestamp> {
    t.map(SpacedTimestamp)
}

fn seconds(d: Duration) -> i64 {
    d.num_seconds().max(0)
}

/// One run as `runs/{id}/` writes it; `include` adds `trigger`, `job`, `run_steps`.
pub fn run_json(
    world: &World,
    run: &RunState,
    now: DateTime<Utc>,
    href_base: &str,
    include: &BTreeSet<String>,
) -> Value {
    let spec = world.job(run.job_id);
    let account_id = world.scenario.account_id;
    let project = spec.map(|s| project_id(world, s));
    let environment = spec.map(|s| environment_id(world, s));
    let status = run.status;
    let end = run.finished_at.unwrap_or(now);
    let queued_until = run.started_at.unwrap_or(end);
    let run_seconds = run.started_at.map(|s| seconds(end - s)).unwrap_or(0);
    let queued_seconds = seconds(queued_until - run.created_at);
    let total_seconds = seconds(end - run.created_at);
    let artifacts_saved = run.finished_at.is_some() && run.started_at.is_some();
    let generate_docs = run
        .request
        .generate_docs_override
        .unwrap_or(spec.is_some_and(|s| s.generate_docs));
    let retry_reason = world.retry_not_supported_reason(run);
    let wire = Run {
        id: run.id,
        status,
        trigger_id: Some(run.trigger_id),
        account_id: Some(account_id),
        environment_id: environment,
        project_id: project,
        job_definition_id: Some(run.job_id),
        dbt_version: Some(
            run.request
                .dbt_version_override
                .clone()
                .unwrap_or_else(|| world.scenario.dbt_version.clone()),
        ),
        git_branch: run.git_branch.clone(),
        git_sha: run.git_sha.clone(),
        status_message: run.status_message.clone(),
        owner_thread_id: None,
        executed_by_thread_id: run
            .dequeued_at
            .map(|_| format!("scheduler-run-0-{}", &run.fingerprint[..10])),
        deferring_run_id: None,
        artifacts_saved: Some(artifacts_saved),
        artifact_s3_path: artifacts_saved
            .then(|| format!("prod-us-c1/runs/{}/artifacts/target", run.id)),
        has_docs_generated: Some(
            generate_docs && artifacts_saved && run.ending == Some(Ending::Success),
        ),
        has_sources_generated: Some(false),
        notifications_sent: Some(status.is_terminal()),
        blocked_by: world.blocked_by(run),
        created_at: Some(SpacedTimestamp(run.created_at)),
        updated_at: Some(SpacedTimestamp(run.updated_at)),
        dequeued_at: spaced(run.dequeued_at),
        started_at: spaced(run.started_at),
        finished_at: spaced(run.finished_at),
        last_checked_at: spaced(run.started_at.and(run.finished_at)),
        last_heartbeat_at: spaced(run.started_at.map(|_| end)),
        should_start_at: Some(SpacedTimestamp(run.created_at)),
        trigger: include.contains("trigger").then(|| trigger_wire(run)),
        job: include
            .contains("job")
            .then(|| spec.map(|s| job_wire(world, s)))
            .flatten(),
        environment: None,
        run_steps: if include.contains("run_steps") {
            step_views(run, now)
                .iter()
                .map(|v| step_wire(world, run, v, now))
                .collect()
        } else {
            Vec::new()
        },
        status_humanized: Some(status.humanized().into()),
        in_progress: Some(!status.is_terminal()),
        is_complete: Some(status.is_terminal()),
        is_success: Some(status == RunStatus::Success),
        is_error: Some(status == RunStatus::Error),
        is_cancelled: Some(status == RunStatus::Cancelled),
        duration: Some(format_hms(total_seconds)),
        queued_duration: Some(format_hms(queued_seconds)),
        run_duration: Some(format_hms(run_seconds)),
        duration_humanized: Some(humanize_duration(total_seconds)),
        queued_duration_humanized: Some(humanize_duration(queued_seconds)),
        run_duration_humanized: Some(humanize_duration(run_seconds)),
        created_at_humanized: Some(format!(
            "{} ago",
            humanize_duration(seconds(now - run.created_at))
        )),
        finished_at_humanized: Some(match run.finished_at {
            Some(f) => format!("{} ago", humanize_duration(seconds(now - f))),
            None => "0 minutes from now".into(),
        }),
        retrying_run_id: None,
        can_retry: Some(retry_reason.is_none()),
        retry_not_supported_reason: retry_reason.map(str::to_string),
        job_id: Some(run.job_id),
        is_running: None,
        href: Some(format!(
            "{}/deploy/{}/projects/{}/runs/{}/",
            href_base.trim_end_matches('/'),
            account_id,
            project.map(|p| p.0).unwrap_or(DEFAULT_PROJECT_ID),
            run.id
        )),
        used_repo_cache: None,
    };
    let mut value = serde_json::to_value(&wire).unwrap_or(Value::Null);
    if let Value::Object(map) = &mut value {
        // Present in every captured run, missing from the wire type the client decodes.
        map.insert("scribe_enabled".into(), Value::Bool(true));
        if include.contains("job") {
            if let (Some(job), Some(spec)) = (map.get_mut("job"), spec) {
                add_job_extras(job, spec);
            }
        }
    }
    value
}

fn trigger_wire(run: &RunState) -> Trigger {
    let r = &run.request;
    Trigger {
        id: Some(run.trigger_id),
        cause: Some(r.cause.clone()),
        job_definition_id: Some(run.job_id),
        git_branch: r.git_branch.clone(),
        git_sha: r.git_sha.clone(),
        azure_pull_request_id: r.azure_pull_request_id,
        github_pull_request_id: r.github_pull_request_id,
        gitlab_merge_request_id: r.gitlab_merge_request_id,
        non_native_pull_request_id: r.non_native_pull_request_id,
        schema_override: r.schema_override.clone(),
        dbt_version_override: r.dbt_version_override.clone(),
        threads_override: r.threads_override,
        target_name_override: r.target_name_override.clone(),
        generate_docs_override: r.generate_docs_override,
        timeout_seconds_override: r.timeout_seconds_override,
        steps_override: r.steps_override.clone(),
        created_at: Some(SpacedTimestamp(run.created_at)),
        cause_humanized: Some(r.cause.clone()),
        job: None,
        cause_category: Some("api".into()),
    }
}

fn job_wire(world: &World, spec: &JobSpec) -> Job {
    let scheduled = spec.cron.is_some();
    Job {
        id: spec.id,
        execution: Some(JobExecution {
            timeout_seconds: Some(spec.timeout_seconds),
        }),
        generate_docs: Some(spec.generate_docs),
        run_generate_sources: Some(false),
        run_compare_changes: Some(false),
        account_id: Some(world.scenario.account_id),
        project_id: Some(project_id(world, spec)),
        environment_id: Some(environment_id(world, spec)),
        name: Some(spec.name.clone()),
        description: Some(spec.description.clone()),
        dbt_version: None,
        raw_dbt_version: None,
        created_at: Some(IsoTimestamp(world.epoch)),
        updated_at: Some(IsoTimestamp(world.epoch)),
        execute_steps: spec.execute_steps.clone(),
        state: Some(1),
        deactivated: Some(false),
        run_failure_count: Some(0),
        deferring_job_definition_id: None,
        deferring_environment_id: Some(environment_id(world, spec)),
        lifecycle_webhooks: Some(false),
        lifecycle_webhooks_url: None,
        triggers: Some(json!({
            "github_webhook": false,
            "git_provider_webhook": false,
            "custom_branch_only": false,
            "schedule": scheduled,
            "on_merge": false,
        })),
        settings: Some(JobSettings {
            threads: Some(spec.threads),
            target_name: Some(spec.target_name.clone()),
        }),
        schedule: Some(json!({
            "cron": spec.cron.clone().unwrap_or_else(|| "0 * * * *".into()),
            "date": {
                "type": "interval_cron",
                "days": [0, 1, 2, 3, 4, 5, 6],
                "cron": spec.cron.clone().unwrap_or_else(|| "0 * * * *".into()),
            },
            "time": {"type": "every_hour", "interval": 1},
        })),
        is_deferrable: Some(false),
        job_type: Some(if scheduled { "scheduled" } else { "other" }.into()),
        triggers_on_draft_pr: Some(false),
        job_completion_trigger_condition: None,
    }
}

fn add_job_extras(job: &mut Value, spec: &JobSpec) {
    if let Value::Object(map) = job {
        map.insert("generate_sources".into(), Value::Bool(false));
        map.insert(
            "cron_humanized".into(),
            Value::from(match &spec.cron {
                Some(c) => format!("Cron: {c}"),
                None => "Every hour".into(),
            }),
        );
        map.insert("next_run".into(), Value::Null);
        map.insert("next_run_humanized".into(), Value::Null);
    }
}

/// The account as `accounts/{id}/` writes it.
pub fn account_json(world: &World) -> Value {
    let s = &world.scenario;
    json!({
        "id": s.account_id,
        "name": s.account_name,
        "state": 1,
        "plan": "enterprise",
        "run_slots": s.run_slots.unwrap_or(100),
        "developer_seats": 10,
        "it_seats": 1,
        "explorer_seats": 0,
        "analyst_seats": 0,
        "read_only_seats": 10,
        "locked": false,
        "lock_reason": null,
        "lock_cause": null,
        "unlocked_at": null,
        "pending_cancel": false,
        "billing_email_address": null,
        "pod_memory_request_mebibytes": 600,
        "develop_pod_memory_request_mebibytes": 600,
        "run_duration_limit_seconds": 86_400,
        "queue_limit": 50,
        "enterprise_login_slug": null,
        "business_critical": false,
        "starter_repo_url": null,
        "git_auth_level": "team",
        "identifier": format!("act_{}", s.account_id),
        "trial_end_date": null,
        "static_subdomain": null,
        "vanity_subdomain": null,
        "run_locked_until": null,
        "docs_job_id": null,
        "freshness_job_id": null,
        "created_at": IsoTimestamp(world.epoch),
        "updated_at": IsoTimestamp(world.epoch),
    })
}

/// One job as `jobs/{id}/` writes it.
pub fn job_json(world: &World, spec: &JobSpec) -> Value {
    let mut value = serde_json::to_value(job_wire(world, spec)).unwrap_or(Value::Null);
    add_job_extras(&mut value, spec);
    value
}

/// A step as it stands at `now`.
#[derive(Debug, Clone)]
pub struct StepView {
    pub index: usize,
    pub name: String,
    pub status: RunStatus,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
}

impl StepView {
    pub fn is_dbt_command(&self) -> bool {
        self.index > SETUP_STEPS.len()
    }
}

/// The steps that have begun by `now` (later ones do not exist yet, as in the real API).
pub fn step_views(run: &RunState, now: DateTime<Utc>) -> Vec<StepView> {
    let Some(started) = run.started_at else {
        return Vec::new();
    };
    let each = run.step_duration();
    let mut views = Vec::new();
    for (i, name) in run.steps.iter().enumerate() {
        let begin = started + each * i as i32;
        let end = begin + each;
        let (status, finished_at, last) = match run.finished_at {
            Some(f) if i > 0 && begin >= f => break,
            Some(f) if f <= end => {
                let status = match run.ending {
                    Some(Ending::Success) => RunStatus::Success,
                    Some(Ending::Error { .. }) => RunStatus::Error,
                    _ => RunStatus::Cancelled,
                };
                (status, Some(f), true)
            }
            Some(_) => (RunStatus::Success, Some(end), false),
            None if begin > now => break,
            None if end <= now => (RunStatus::Success, Some(end), false),
            None => (RunStatus::Running, None, true),
        };
        views.push(StepView {
            index: i + 1,
            name: name.clone(),
            status,
            started_at: begin,
            finished_at,
        });
        if last {
            break;
        }
    }
    views
}

pub fn step_id(run: &RunState, index: usize) -> StepId {
    StepId(run.step_id_base + index as i64)
}

fn step_logs(run: &RunState, view: &StepView, models: u32) -> String {
    if !view.is_dbt_command() {
        return format!("{}\n", view.name);
    }
    match view.status {
        RunStatus::Success => format!(
            "Running with dbt=1.9.0\nFound {models} models\n\nCompleted successfully\n\nDone. PASS={models} WARN=0 ERROR=0 SKIP=0 TOTAL={models}\n"
        ),
        RunStatus::Error => {
            let failing = models / 2 + 1;
            format!(
                "Running with dbt=1.9.0\nFound {models} models\n\nCompleted with 1 error and 0 warnings:\n\nDatabase Error in model model_{failing} (models/model_{failing}.sql)\n  division by zero\n\nDone. PASS={} WARN=0 ERROR=1 SKIP={} TOTAL={models}\n",
                failing - 1,
                models - failing
            )
        }
        RunStatus::Cancelled => run.status_message.clone().unwrap_or_default(),
        _ => "Running with dbt=1.9.0\n".into(),
    }
}

fn step_wire(world: &World, run: &RunState, view: &StepView, now: DateTime<Utc>) -> RunStep {
    let models = world.job(run.job_id).map(|s| s.models).unwrap_or(0);
    let secs = seconds(view.finished_at.unwrap_or(now) - view.started_at);
    let color = match view.status {
        RunStatus::Success => "#55973a",
        RunStatus::Error => "#d9534f",
        RunStatus::Cancelled => "#999999",
        _ => "#428bca",
    };
    RunStep {
        id: Some(step_id(run, view.index)),
        run_id: Some(run.id),
        account_id: Some(world.scenario.account_id),
        index: Some(view.index as i64),
        status: Some(view.status),
        name: Some(view.name.clone()),
        logs: Some(step_logs(run, view, models)),
        debug_logs: Some(String::new()),
        log_location: Some("db".into()),
        log_path: None,
        debug_log_path: None,
        log_archive_type: Some("db_flushed".into()),
        truncated_debug_logs: Some(String::new()),
        created_at: Some(SpacedTimestamp(view.started_at)),
        updated_at: Some(SpacedTimestamp(view.finished_at.unwrap_or(now))),
        started_at: Some(SpacedTimestamp(view.started_at)),
        finished_at: spaced(view.finished_at),
        status_color: Some(color.into()),
        status_humanized: Some(view.status.humanized().into()),
        duration: Some(format_hms(secs)),
        duration_humanized: Some(humanize_duration(secs)),
    }
}

/// A step as `steps/{id}/` writes it.
pub fn step_json(world: &World, run: &RunState, view: &StepView, now: DateTime<Utc>) -> Value {
    serde_json::to_value(step_wire(world, run, view, now)).unwrap_or(Value::Null)
}

fn success_status() -> ApiStatus {
    ApiStatus {
        code: 200,
        is_success: true,
        user_message: Some("Success!".into()),
        developer_message: Some(String::new()),
    }
}

/// `{"status": ..., "data": data}` for a 200.
pub fn ok(data: Value) -> Value {
    json!({"status": success_status(), "data": data})
}

/// A list envelope with `extra.filters`, `order_by` and `pagination`.
pub fn ok_list(
    data: Vec<Value>,
    filters: Map<String, Value>,
    order_by: &str,
    total: usize,
) -> Value {
    let count = data.len();
    json!({
        "status": success_status(),
        "data": data,
        "extra": {
            "filters": filters,
            "order_by": order_by,
            "pagination": {"count": count, "total_count": total},
        },
    })
}

/// An error envelope; `developer_message` is `""` for 400 and 404 and null otherwise, as captured.
pub fn error(code: u16, user_message: &str, data: Value) -> Value {
    let developer = if matches!(code, 400 | 404) {
        Value::from("")
    } else {
        Value::Null
    };
    json!({
        "status": {
            "code": code,
            "is_success": false,
            "user_message": user_message,
            "developer_message": developer,
        },
        "data": data,
    })
}
