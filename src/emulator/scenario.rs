//! The scenario file: the account, its token, its jobs and how each one behaves (outcome, durations,
//! timeout, models), the run-slot limit, webhook subscriptions, faults and the random seed.

use super::faults::Faults;
use crate::ids::{AccountId, EnvironmentId, JobId, ProjectId};
use crate::secret::Secret;
use anyhow::{bail, Context};
use serde::{Deserialize, Deserializer};
use std::path::Path;

/// Everything the emulator needs to know to play one dbt Cloud account. See
/// `pipelines/demo.scenario.yaml` for a commented example.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    pub account_id: AccountId,
    #[serde(default = "default_account_name")]
    pub account_name: String,
    /// The API token the emulator accepts (`Authorization: Token X` or `Bearer X`).
    #[serde(deserialize_with = "secret")]
    pub token: Secret,
    /// Seeds every random draw (durations, flaky outcomes, git shas): one seed, one history.
    #[serde(default)]
    pub seed: u64,
    /// Account-wide limit on runs past the queue (status 2 or 3) at once; none when absent.
    #[serde(default)]
    pub run_slots: Option<u32>,
    /// The id of the first run created; later runs count up (ids above 2^32, like the real API).
    #[serde(default = "default_first_run_id")]
    pub first_run_id: i64,
    /// Base of the `href` of runs; the emulator's own URL when absent.
    #[serde(default)]
    pub href_base: Option<String>,
    #[serde(default = "default_dbt_version")]
    pub dbt_version: String,
    /// Defaults for jobs that do not set their own.
    #[serde(default)]
    pub project_id: Option<ProjectId>,
    #[serde(default)]
    pub environment_id: Option<EnvironmentId>,
    #[serde(default)]
    pub timing: Timing,
    pub jobs: Vec<JobSpec>,
    #[serde(default)]
    pub webhooks: Vec<WebhookSpec>,
    #[serde(default)]
    pub faults: Faults,
}

/// Scenario-wide durations, in scenario time (the clock's time line).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Timing {
    /// Status 1 until dequeued, once the run is no longer blocked.
    #[serde(default = "one_second")]
    pub queue_delay: Span,
    /// Status 2 (Starting) until status 3 (Running).
    #[serde(default = "one_second")]
    pub start_delay: Span,
    /// Running time of a job that sets none.
    #[serde(default = "default_duration")]
    pub duration: DurationSpec,
    /// How long a running run keeps running after a cancel request.
    #[serde(default = "one_second")]
    pub cancel_delay: Span,
}

impl Default for Timing {
    fn default() -> Self {
        Self {
            queue_delay: one_second(),
            start_delay: one_second(),
            duration: default_duration(),
            cancel_delay: one_second(),
        }
    }
}

/// One dbt Cloud job and how its runs behave.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobSpec {
    pub id: JobId,
    pub name: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub project_id: Option<ProjectId>,
    #[serde(default)]
    pub environment_id: Option<EnvironmentId>,
    #[serde(default = "default_project_name")]
    pub project_name: String,
    #[serde(default = "default_environment_name")]
    pub environment_name: String,
    /// The dbt commands of the job; each becomes a run step after the three setup steps.
    #[serde(default = "default_execute_steps")]
    pub execute_steps: Vec<String>,
    #[serde(default)]
    pub outcome: Outcome,
    /// `flaky`: the chance that a run fails.
    #[serde(default = "half")]
    pub failure_probability: f64,
    /// `fail_first`: how many runs of the job fail before runs start to succeed.
    #[serde(default = "one")]
    pub fail_first: u32,
    /// The 1-based index of the step that fails (setup steps count); the last step when absent.
    #[serde(default)]
    pub fail_at_step: Option<usize>,
    /// Running time (status 3); the scenario's `timing.duration` when absent.
    #[serde(default)]
    pub duration: Option<DurationSpec>,
    /// Overrides `timing.queue_delay` for this job.
    #[serde(default)]
    pub queue_delay: Option<Span>,
    /// The job's own timeout (`execution.timeout_seconds`), 0 for none.
    #[serde(default)]
    pub timeout_seconds: i64,
    /// How many models `run_results.json` and `manifest.json` hold.
    #[serde(default = "default_models")]
    pub models: u32,
    #[serde(default)]
    pub generate_docs: bool,
    #[serde(default = "default_threads")]
    pub threads: i64,
    #[serde(default = "default_target")]
    pub target_name: String,
    #[serde(default)]
    pub cron: Option<String>,
}

/// How a job's runs end when nothing (timeout, cancel) ends them first.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    #[default]
    Success,
    /// Every run errors (at `fail_at_step`).
    Error,
    /// Each run errors with `failure_probability`, drawn from the seeded generator.
    Flaky,
    /// The first `fail_first` runs of the job error, every later one succeeds.
    FailFirst,
}

/// A webhook subscription: where to POST, the HMAC key, which events, which jobs (all when empty).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookSpec {
    #[serde(default = "default_webhook_name")]
    pub name: String,
    pub url: String,
    #[serde(deserialize_with = "secret")]
    pub secret: Secret,
    #[serde(default = "all_events")]
    pub events: Vec<String>,
    #[serde(default)]
    pub job_ids: Vec<JobId>,
    /// Attempts per delivery, the first included (dbt Cloud retries five times).
    #[serde(default = "default_attempts")]
    pub max_attempts: u32,
    /// Real-time wait before the first retry; doubles on each further one.
    #[serde(default = "default_retry_backoff")]
    pub retry_backoff: Span,
}

/// The longest duration a scenario may write (keeps time arithmetic in range).
const MAX_SPAN: std::time::Duration = std::time::Duration::from_secs(10 * 366 * 86_400);

/// A length of time written `5s`, `2m 30s`, `250ms` or a number of seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span(pub std::time::Duration);

impl Span {
    pub fn seconds(s: u64) -> Self {
        Self(std::time::Duration::from_secs(s))
    }

    pub fn chrono(self) -> chrono::Duration {
        chrono::Duration::from_std(self.0).unwrap_or(chrono::Duration::MAX)
    }
}

impl<'de> Deserialize<'de> for Span {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Seconds(f64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Seconds(s) if (0.0..=MAX_SPAN.as_secs_f64()).contains(&s) => {
                Ok(Span(std::time::Duration::from_secs_f64(s)))
            }
            Raw::Seconds(s) => Err(serde::de::Error::custom(format_args!(
                "a duration cannot be {s} seconds"
            ))),
            Raw::Text(t) => match humantime::parse_duration(&t) {
                Ok(d) if d <= MAX_SPAN => Ok(Span(d)),
                Ok(_) => Err(serde::de::Error::custom(format_args!(
                    "{t:?} is longer than ten years"
                ))),
                Err(e) => Err(serde::de::Error::custom(format_args!(
                    "not a duration: {t:?} ({e})"
                ))),
            },
        }
    }
}

/// A fixed duration (`5s`) or a range drawn uniformly per run (`{min: 2s, max: 8s}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum DurationSpec {
    Fixed(Span),
    Range { min: Span, max: Span },
}

impl Scenario {
    pub fn from_yaml_str(yaml: &str) -> anyhow::Result<Self> {
        let scenario: Scenario =
            serde_yaml::from_str(yaml).context("the scenario is not valid YAML for a scenario")?;
        scenario.validate()?;
        Ok(scenario)
    }

    pub fn from_file(path: impl AsRef<Path>) -> anyhow::Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read scenario {}", path.display()))?;
        Self::from_yaml_str(&text).with_context(|| format!("in scenario {}", path.display()))
    }

    pub fn job(&self, id: JobId) -> Option<&JobSpec> {
        self.jobs.iter().find(|j| j.id == id)
    }

    fn validate(&self) -> anyhow::Result<()> {
        if self.token.is_empty() {
            bail!("the scenario's token is empty");
        }
        let mut seen = std::collections::BTreeSet::new();
        for job in &self.jobs {
            if !seen.insert(job.id) {
                bail!("job {} is declared twice", job.id);
            }
            if !(0.0..=1.0).contains(&job.failure_probability) {
                bail!("job {}: failure_probability must be within 0..1", job.id);
            }
            if job.execute_steps.is_empty() || job.execute_steps.len() > MAX_COMMANDS {
                bail!(
                    "job {}: execute_steps must hold 1 to {MAX_COMMANDS} commands",
                    job.id
                );
            }
            let steps = super::state::SETUP_STEPS.len() + job.execute_steps.len();
            if let Some(k) = job.fail_at_step {
                if k == 0 || k > steps {
                    bail!("job {}: fail_at_step {k} is not within 1..={steps}", job.id);
                }
            }
            if let Some(DurationSpec::Range { min, max }) = job.duration {
                if min.0 > max.0 {
                    bail!("job {}: duration min is above max", job.id);
                }
            }
        }
        if self.run_slots == Some(0) {
            bail!("run_slots must be at least 1");
        }
        for hook in &self.webhooks {
            url::Url::parse(&hook.url)
                .with_context(|| format!("webhook {:?}: bad url", hook.name))?;
            for e in &hook.events {
                if !ALL_EVENTS.contains(&e.as_str()) {
                    bail!("webhook {:?}: unknown event {e:?}", hook.name);
                }
            }
        }
        Ok(())
    }
}

/// The most dbt commands a job may have (step ids are numbered within a run's id range).
pub const MAX_COMMANDS: usize = 50;

/// The webhook events dbt Cloud sends.
pub const ALL_EVENTS: [&str; 3] = ["job.run.started", "job.run.completed", "job.run.errored"];

fn secret<'de, D: Deserializer<'de>>(d: D) -> Result<Secret, D::Error> {
    String::deserialize(d).map(Secret::new)
}
fn default_account_name() -> String {
    "Emulated account".into()
}
fn default_first_run_id() -> i64 {
    70_403_110_257_794
}
fn default_dbt_version() -> String {
    "versionless".into()
}
fn one_second() -> Span {
    Span::seconds(1)
}
fn default_duration() -> DurationSpec {
    DurationSpec::Fixed(Span::seconds(5))
}
fn default_project_name() -> String {
    "Analytics".into()
}
fn default_environment_name() -> String {
    "Production".into()
}
fn default_execute_steps() -> Vec<String> {
    vec!["dbt build".into()]
}
fn half() -> f64 {
    0.5
}
fn one() -> u32 {
    1
}
fn default_models() -> u32 {
    5
}
fn default_threads() -> i64 {
    4
}
fn default_target() -> String {
    "prod".into()
}
fn default_webhook_name() -> String {
    "baton".into()
}
fn all_events() -> Vec<String> {
    ALL_EVENTS.iter().map(|s| s.to_string()).collect()
}
fn default_attempts() -> u32 {
    6
}
fn default_retry_backoff() -> Span {
    Span(std::time::Duration::from_millis(200))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_minimal_scenario_parses_with_defaults() {
        let s = Scenario::from_yaml_str(
            "account_id: 1\ntoken: t\njobs:\n  - {id: 5, name: a, duration: {min: 2s, max: 3s}}\n  - {id: 6, name: b, outcome: flaky, failure_probability: 0.2, duration: 1.5}\n",
        )
        .unwrap();
        assert_eq!(s.jobs.len(), 2);
        assert_eq!(s.jobs[1].outcome, Outcome::Flaky);
        assert_eq!(
            s.jobs[1].duration,
            Some(DurationSpec::Fixed(Span(std::time::Duration::from_millis(
                1500
            ))))
        );
        assert!(!format!("{s:?}").contains("token: t"));
    }

    #[test]
    fn bad_scenarios_are_rejected_with_the_reason() {
        let err = Scenario::from_yaml_str(
            "account_id: 1\ntoken: t\njobs:\n  - {id: 5, name: a, fail_at_step: 9}\n",
        )
        .unwrap_err();
        assert!(format!("{err:#}").contains("fail_at_step 9"), "{err:#}");
        assert!(Scenario::from_yaml_str("account_id: 1\ntoken: t\njobs: []\nbogus: 1\n").is_err());
    }
}
