//! The keys each mapping of a pipeline file accepts. The hand lowering checks against these lists;
//! a test checks they equal the properties of the JSON Schema derived from `raw`.

pub const PIPELINE: &[&str] = &[
    "name",
    "description",
    "schedule",
    "concurrency",
    "suspended",
    "cause",
    "defaults",
    "steps",
    "backfill",
    "deadline",
];
pub const SCHEDULE: &[&str] = &["cron", "timezone", "catchup"];
pub const DEFAULTS: &[&str] = &["retry", "timeout", "queue_timeout"];
pub const RETRY: &[&str] = &[
    "attempts",
    "backoff",
    "max_backoff",
    "from_failure",
    "on_timeout",
    "on_cancel",
];
pub const STEP: &[&str] = &[
    "account",
    "job_id",
    "job_name",
    "project_id",
    "environment_id",
    "depends_on",
    "overrides",
    "retry",
    "timeout",
    "queue_timeout",
];
pub const BACKFILL: &[&str] = &["schedule", "window", "every", "max_active"];
pub const BACKFILL_SCHEDULE: &[&str] = &["cron", "timezone"];
