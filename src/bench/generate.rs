//! Generated inputs: emulator scenarios (one distinct job per step, since dbt Cloud runs one run
//! per job at a time) and pipeline files (chains for the daemon, varied shapes for `validate`).

use std::fmt::Write as _;
use std::path::Path;

/// The account and token every bench scenario plays.
pub const ACCOUNT_ID: i64 = 70_403_103_999_001;
const TOKEN: &str = "bench-token-not-secret";

/// The job of step `step` (0-based) of pipeline `pipeline`.
pub fn job_id(pipeline: usize, step: usize) -> i64 {
    1_000_000 + (pipeline as i64) * 10 + step as i64
}

/// An emulator scenario: `jobs` as (id, duration in the scenario's span syntax), the queue and
/// start delays, and an optional signed webhook subscription to `url`.
pub fn scenario(
    jobs: impl IntoIterator<Item = (i64, String)>,
    queue_and_start_delay: &str,
    webhook: Option<(&str, &str)>,
) -> String {
    let mut out = format!(
        "account_id: {ACCOUNT_ID}\ntoken: {TOKEN}\nseed: 9\n\
         timing: {{ queue_delay: {queue_and_start_delay}, start_delay: {queue_and_start_delay}, cancel_delay: 1s }}\n"
    );
    if let Some((url, secret)) = webhook {
        let _ = write!(
            out,
            "webhooks:\n  - {{ name: baton, url: \"{url}\", secret: \"{secret}\" }}\n"
        );
    }
    out.push_str("jobs:\n");
    for (id, duration) in jobs {
        let _ = writeln!(
            out,
            "  - {{ id: {id}, name: bench-{id}, duration: {duration} }}"
        );
    }
    out
}

/// A pipeline of `steps` steps in a chain (each after the one before), on `cron` in UTC, with no
/// catch-up, for pipeline number `index`.
pub fn chain(name: &str, cron: &str, index: usize, steps: usize) -> String {
    let mut out = format!(
        "name: {name}\nschedule: {{ cron: \"{cron}\", timezone: UTC, catchup: none }}\nconcurrency: skip\nsteps:\n"
    );
    for s in 0..steps {
        let _ = write!(out, "  s{s}: {{ job_id: {}", job_id(index, s));
        if s > 0 {
            let _ = write!(out, ", depends_on: [s{}]", s - 1);
        }
        out.push_str(" }\n");
    }
    out
}

/// Writes `count` chain pipelines into `dir`; `cron(i)` gives pipeline i's schedule.
pub fn write_chains(
    dir: &Path,
    count: usize,
    steps: usize,
    cron: impl Fn(usize) -> String,
) -> anyhow::Result<()> {
    for i in 0..count {
        let name = format!("p{i:05}");
        std::fs::write(
            dir.join(format!("{name}.yaml")),
            chain(&name, &cron(i), i, steps),
        )?;
    }
    Ok(())
}

const ZONES: [&str; 5] = [
    "UTC",
    "Europe/Amsterdam",
    "America/New_York",
    "Australia/Sydney",
    "Asia/Kolkata",
];

/// A valid pipeline of five steps whose shape, zone, policies and templates vary with `i`: a
/// chain, a fan-out/fan-in diamond, or a wide fan-in; overrides templated from the logical date.
pub fn varied(i: usize) -> String {
    let zone = ZONES[i % ZONES.len()];
    let mut out = format!(
        "name: v{i:05}\ndescription: generated pipeline {i}\n\
         schedule:\n  cron: \"{} {} * * {}\"\n  timezone: {zone}\n  catchup: {}\n\
         concurrency: {}\n\
         defaults:\n  retry: {{ attempts: {}, backoff: 2m, max_backoff: 30m, from_failure: {} }}\n  \
         timeout: 2h\n  queue_timeout: 30m\nsteps:\n",
        i % 60,
        i % 24,
        if i.is_multiple_of(3) { "*" } else { "1-5" },
        ["none", "latest", "all"][i % 3],
        ["skip", "queue", "cancel_running"][i % 3],
        1 + i % 3,
        i.is_multiple_of(2),
    );
    let deps: [&[usize]; 5] = match i % 3 {
        0 => [&[], &[0], &[1], &[2], &[3]],
        1 => [&[], &[0], &[0], &[1, 2], &[3]],
        _ => [&[], &[], &[], &[], &[0, 1, 2, 3]],
    };
    for (s, upstream) in deps.iter().enumerate() {
        let _ = writeln!(out, "  step{s}:\n    job_id: {}", job_id(i, s));
        if !upstream.is_empty() {
            let names: Vec<String> = upstream.iter().map(|u| format!("step{u}")).collect();
            let _ = writeln!(out, "    depends_on: [{}]", names.join(", "));
        }
        if s % 2 == 1 {
            let _ = writeln!(
                out,
                "    overrides:\n      threads_override: {}\n      schema_override: \"analytics_{{{{ ds_nodash }}}}_{s}\"",
                4 + s
            );
        }
    }
    out
}
