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
