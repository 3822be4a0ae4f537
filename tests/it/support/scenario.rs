//! The emulated dbt Cloud account the daemon tests share, its usual jobs, and the scenario YAML
//! around a list of jobs, so that each test names only the jobs it needs.

/// The account of every shared scenario.
pub const ACCOUNT: i64 = 70_403_103_922_125;
/// Its API token (a test value).
pub const TOKEN: &str = "test-token";

/// The usual jobs, as scenario YAML flow mappings.
pub const STAGING_JOB: &str = "{ id: 101, name: staging, duration: 3m }";
pub const MARTS_JOB: &str = "{ id: 102, name: marts, duration: 5m }";
pub const BROKEN_JOB: &str = "{ id: 105, name: broken, duration: 1m, outcome: error }";
pub const HANGS_JOB: &str = "{ id: 106, name: hangs, duration: 10h }";

/// A scenario of the shared account with `jobs` (one YAML flow mapping each).
pub fn scenario(jobs: &[&str]) -> String {
    scenario_with("", jobs)
}

/// As `scenario`, with `top` (more top-level YAML keys, such as `href_base:` or `webhooks:`).
pub fn scenario_with(top: &str, jobs: &[&str]) -> String {
    let mut yaml = format!("account_id: {ACCOUNT}\ntoken: {TOKEN}\n{top}");
    if !yaml.ends_with('\n') {
        yaml.push('\n');
    }
    yaml.push_str("jobs:\n");
    for job in jobs {
        yaml.push_str("  - ");
        yaml.push_str(job);
        yaml.push('\n');
    }
    yaml
}

/// The pipelines the kill tests (crash test, fault soak) run, each with `head` (its schedule and
/// concurrency): a fan-in DAG on jobs 11–14, a chain on 21–22, a flaky job with retries on 31–32
/// and a rerun-from-failure on 41.
pub fn kill_test_pipelines(head: &str) -> Vec<(&'static str, String)> {
    vec![
        (
            "fanin.yaml",
            format!(
                "name: fanin\n{head}steps:\n  a: {{ job_id: 11 }}\n  b: {{ job_id: 12, depends_on: [a] }}\n  \
                 c: {{ job_id: 13, depends_on: [a] }}\n  d: {{ job_id: 14, depends_on: [b, c] }}\n"
            ),
        ),
        (
            "chain.yaml",
            format!(
                "name: chain\n{head}steps:\n  x: {{ job_id: 21 }}\n  y: {{ job_id: 22, depends_on: [x] }}\n"
            ),
        ),
        (
            "flaky.yaml",
            format!(
                "name: flaky\n{head}steps:\n  f:\n    job_id: 31\n    retry: {{ attempts: 3, backoff: 3s }}\n  \
                 g: {{ job_id: 32, depends_on: [f] }}\n"
            ),
        ),
        (
            "rerun.yaml",
            format!(
                "name: rerun\n{head}steps:\n  r:\n    job_id: 41\n    retry: {{ attempts: 3, backoff: 3s, from_failure: true }}\n"
            ),
        ),
    ]
}
