//! Templates of overrides and `cause`: the variables a template sees, rendering with minijinja in
//! strict mode (an unknown variable is an error), and the 255-character `cause` with its attempt key.

use super::pipeline::{OverrideValue, Overrides, Pipeline, Template};
use crate::dbt_cloud::wire::{TriggerRequest, MAX_CAUSE_CHARS};
use chrono::{DateTime, TimeZone, Utc};
use chrono_tz::Tz;
use minijinja::{Environment, UndefinedBehavior};
use serde::Serialize;

/// The `cause` template used when a pipeline has none.
pub const DEFAULT_CAUSE: &str =
    "baton: {{ pipeline }} {{ step }} {{ logical_date }} attempt {{ attempt }}";

/// The longest attempt key the daemon appends to a cause.
pub const MAX_ATTEMPT_KEY_CHARS: usize = 40;

/// What ` [` and `]` around the key cost.
const KEY_DECORATION_CHARS: usize = 3;

/// The longest the human part of a cause may render to, whatever the key.
pub const MAX_CAUSE_HUMAN_CHARS: usize =
    MAX_CAUSE_CHARS - MAX_ATTEMPT_KEY_CHARS - KEY_DECORATION_CHARS;

/// The names a template may use.
pub const TEMPLATE_VARIABLES: &[&str] = &[
    "logical_date",
    "ds",
    "ds_nodash",
    "data_interval_start",
    "data_interval_end",
    "pipeline",
    "step",
    "attempt",
    "is_backfill",
];

/// Everything a template can see about one attempt.
#[derive(Debug, Clone, PartialEq)]
pub struct TemplateContext {
    /// The scheduled tick (or the backfill date, or the trigger time).
    pub logical_date: DateTime<Utc>,
    /// The pipeline's zone: dates render in it.
    pub timezone: Tz,
    /// The previous tick: the data interval is `[previous tick, this tick]`.
    pub data_interval_start: DateTime<Utc>,
    pub data_interval_end: DateTime<Utc>,
    pub pipeline: String,
    pub step: String,
    pub attempt: u32,
    /// A boolean in templates: `{% if is_backfill %}` works; printed it reads `True`/`False`
    /// (Jinja's convention).
    pub is_backfill: bool,
}

/// A template that does not parse or render.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct TemplateError {
    pub message: String,
}

impl TemplateError {
    fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
        }
    }
}

impl From<minijinja::Error> for TemplateError {
    fn from(error: minijinja::Error) -> Self {
        let mut message = error.kind().to_string();
        if let Some(detail) = error.detail() {
            message.push_str(": ");
            message.push_str(detail);
        }
        Self { message }
    }
}

/// The kind of value each trigger field takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OverrideType {
    Text,
    Integer,
    Bool,
    TextList,
}

impl OverrideType {
    pub fn describe(self) -> &'static str {
        match self {
            OverrideType::Text => "a string",
            OverrideType::Integer => "an integer",
            OverrideType::Bool => "a boolean",
            OverrideType::TextList => "a list of strings",
        }
    }
}

/// Every trigger field a step may override (the PR-id fields are left out on purpose: they turn
/// a run into a CI run).
pub const OVERRIDE_FIELDS: &[(&str, OverrideType)] = &[
    ("git_sha", OverrideType::Text),
    ("git_branch", OverrideType::Text),
    ("schema_override", OverrideType::Text),
    ("dbt_version_override", OverrideType::Text),
    ("threads_override", OverrideType::Integer),
    ("target_name_override", OverrideType::Text),
    ("generate_docs_override", OverrideType::Bool),
    ("timeout_seconds_override", OverrideType::Integer),
    ("steps_override", OverrideType::TextList),
];

pub fn override_type(field: &str) -> Option<OverrideType> {
    OVERRIDE_FIELDS
        .iter()
        .find(|(name, _)| *name == field)
        .map(|(_, kind)| *kind)
}

#[derive(Serialize, Clone)]
struct Variables {
    logical_date: String,
    ds: String,
    ds_nodash: String,
    data_interval_start: String,
    data_interval_end: String,
    pipeline: String,
    step: String,
    attempt: u32,
    is_backfill: bool,
}

fn rfc3339_in(tz: Tz, instant: DateTime<Utc>) -> String {
    tz.from_utc_datetime(&instant.naive_utc())
        .format("%Y-%m-%dT%H:%M:%S%:z")
        .to_string()
}

impl TemplateContext {
    fn variables(&self) -> Variables {
        let local = self
            .timezone
            .from_utc_datetime(&self.logical_date.naive_utc());
        Variables {
            logical_date: rfc3339_in(self.timezone, self.logical_date),
            ds: local.format("%Y-%m-%d").to_string(),
            ds_nodash: local.format("%Y%m%d").to_string(),
            data_interval_start: rfc3339_in(self.timezone, self.data_interval_start),
            data_interval_end: rfc3339_in(self.timezone, self.data_interval_end),
            pipeline: self.pipeline.clone(),
            step: self.step.clone(),
            attempt: self.attempt,
            is_backfill: self.is_backfill,
        }
    }

    /// The contexts validation renders every template against: [`Self::sample`] as a first and
    /// as a last attempt, in a backfill and not, so that both branches of a condition are tried.
    pub fn samples(pipeline: &str, step: &str, timezone: Tz) -> Vec<TemplateContext> {
        let longest = Self::sample(pipeline, step, timezone);
        let mut samples = Vec::new();
        for is_backfill in [false, true] {
            for attempt in [1, u32::MAX] {
                samples.push(TemplateContext {
                    is_backfill,
                    attempt,
                    ..longest.clone()
                });
            }
        }
        samples
    }

    /// A context with the longest values a real one can hold for `pipeline` and `step`: what
    /// validation renders every template against.
    pub fn sample(pipeline: &str, step: &str, timezone: Tz) -> TemplateContext {
        let logical_date = Utc
            .with_ymd_and_hms(2026, 12, 31, 23, 59, 59)
            .single()
            .unwrap_or(DateTime::<Utc>::UNIX_EPOCH);
        TemplateContext {
            logical_date,
            timezone,
            data_interval_start: logical_date - chrono::Duration::days(1),
            data_interval_end: logical_date,
            pipeline: pipeline.to_string(),
            step: step.to_string(),
            attempt: u32::MAX,
            is_backfill: false,
        }
    }
}

fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env
}

thread_local! {
    /// One environment per thread: making one (its filters and tests) cost more than rendering
    /// a short template with it.
    static ENVIRONMENT: Environment<'static> = environment();
    /// The variables of a sample context, per zone (the samples differ only in the names
    /// `VARY_BETWEEN_SAMPLES`, set for each rendering).
    static SAMPLE_VARIABLES: std::cell::RefCell<std::collections::HashMap<Tz, Variables>> =
        std::cell::RefCell::default();
    /// What a template that reads neither `pipeline` nor `step` rendered to in a zone: the same
    /// override in many files is checked once.
    static SAMPLE_RENDERINGS: std::cell::RefCell<std::collections::HashMap<(String, Tz), SampleRenderings>> =
        std::cell::RefCell::default();
}

type SampleRenderings = Result<Vec<String>, TemplateError>;

/// Renders `template` against `ctx`; an unknown variable is an error.
pub fn render(template: &Template, ctx: &TemplateContext) -> Result<String, TemplateError> {
    ENVIRONMENT.with(|env| Ok(env.render_str(&template.0, ctx.variables())?))
}

/// The variables the samples of [`TemplateContext::samples`] differ in.
const VARY_BETWEEN_SAMPLES: &[&str] = &["attempt", "is_backfill"];

/// What a template renders to against each of [`TemplateContext::samples`] for `pipeline`,
/// `step` and `timezone`, or the first error; what validation checks. The samples differ only in
/// `attempt` and `is_backfill`, so a template that reads neither (nor anything else a sample
/// might vary in) is parsed and rendered once, for all four; one without any `{` renders to
/// itself; and one that reads neither `pipeline` nor `step` is checked once per zone (per thread),
/// however many files repeat it.
pub fn render_samples(
    template: &Template,
    pipeline: &str,
    step: &str,
    timezone: Tz,
) -> Result<Vec<String>, TemplateError> {
    if !template.0.contains('{') {
        return Ok(vec![template.0.clone()]);
    }
    let key = (template.0.clone(), timezone);
    if let Some(known) = SAMPLE_RENDERINGS.with(|r| r.borrow().get(&key).cloned()) {
        return known;
    }
    let sample = SAMPLE_VARIABLES.with(|cache| {
        cache
            .borrow_mut()
            .entry(timezone)
            .or_insert_with(|| TemplateContext::sample(pipeline, step, timezone).variables())
            .clone()
    });
    ENVIRONMENT.with(|env| {
        let parsed = env.template_from_str(&template.0)?;
        let names = parsed.undeclared_variables(false);
        // Any name beyond the known ones (a function that reads the whole context) may render
        // differently too.
        let varies = names.iter().any(|name| {
            !TEMPLATE_VARIABLES.contains(&name.as_str())
                || VARY_BETWEEN_SAMPLES.contains(&name.as_str())
        });
        let general = !names.contains("pipeline") && !names.contains("step");
        let samples: &[(u32, bool)] = if varies {
            &[(1, false), (u32::MAX, false), (1, true), (u32::MAX, true)]
        } else {
            &[(u32::MAX, false)]
        };
        let renderings: SampleRenderings = samples
            .iter()
            .map(|&(attempt, is_backfill)| {
                let variables = Variables {
                    pipeline: pipeline.to_string(),
                    step: step.to_string(),
                    attempt,
                    is_backfill,
                    ..sample.clone()
                };
                Ok(parsed.render(variables)?)
            })
            .collect();
        if general {
            SAMPLE_RENDERINGS.with(|r| {
                let mut known = r.borrow_mut();
                // Bounded: ten thousand distinct templates must not all stay.
                if known.len() >= 1024 {
                    known.clear();
                }
                known.insert(key, renderings.clone());
            });
        }
        renderings
    })
}

/// Variables `template` reads that no context provides, sorted (empty when it does not parse).
pub fn unknown_variables(template: &Template) -> Vec<String> {
    ENVIRONMENT.with(|env| {
        let Ok(parsed) = env.template_from_str(&template.0) else {
            return Vec::new();
        };
        let mut unknown: Vec<String> = parsed
            .undeclared_variables(false)
            .into_iter()
            .filter(|v| !TEMPLATE_VARIABLES.contains(&v.as_str()))
            .collect();
        unknown.sort();
        unknown
    })
}

/// Renders every override into a trigger body; `cause` is left empty for the caller.
pub fn render_overrides(
    overrides: &Overrides,
    ctx: &TemplateContext,
) -> Result<TriggerRequest, TemplateError> {
    let mut request = TriggerRequest::default();
    for (field, value) in overrides {
        let mismatch = || {
            TemplateError::new(format!(
                "`{field}` takes {}",
                override_type(field).map_or("nothing", OverrideType::describe)
            ))
        };
        let text = |value: &OverrideValue| match value {
            OverrideValue::Text(t) => render(t, ctx),
            _ => Err(mismatch()),
        };
        let integer = |value: &OverrideValue| match value {
            OverrideValue::Integer(i) => Ok(*i),
            _ => Err(mismatch()),
        };
        match field.as_str() {
            "git_sha" => request.git_sha = Some(text(value)?),
            "git_branch" => request.git_branch = Some(text(value)?),
            "schema_override" => request.schema_override = Some(text(value)?),
            "dbt_version_override" => request.dbt_version_override = Some(text(value)?),
            "target_name_override" => request.target_name_override = Some(text(value)?),
            "threads_override" => request.threads_override = Some(integer(value)?),
            "timeout_seconds_override" => request.timeout_seconds_override = Some(integer(value)?),
            "generate_docs_override" => match value {
                OverrideValue::Bool(b) => request.generate_docs_override = Some(*b),
                _ => return Err(mismatch()),
            },
            "steps_override" => match value {
                OverrideValue::List(items) => {
                    let rendered: Result<Vec<String>, TemplateError> =
                        items.iter().map(|t| render(t, ctx)).collect();
                    request.steps_override = Some(rendered?);
                }
                _ => return Err(mismatch()),
            },
            other => {
                return Err(TemplateError::new(format!(
                    "`{other}` is not a trigger field baton sends"
                )))
            }
        }
    }
    Ok(request)
}

/// The pipeline's cause for one attempt: its `cause` template (or [`DEFAULT_CAUSE`]) followed by
/// ` [attempt_key]`. Never longer than 255 characters: the human part is cut, never the key.
pub fn render_cause(pipeline: &Pipeline, ctx: &TemplateContext, attempt_key: &str) -> String {
    let default = Template(DEFAULT_CAUSE.to_string());
    let template = pipeline.cause.as_ref().unwrap_or(&default);
    // Validation rendered this template already; a failure now still must not lose the key.
    let human = render(template, ctx).unwrap_or_else(|_| {
        format!(
            "baton: {} {} attempt {}",
            ctx.pipeline, ctx.step, ctx.attempt
        )
    });
    let room = MAX_CAUSE_CHARS.saturating_sub(attempt_key.chars().count() + KEY_DECORATION_CHARS);
    let human: String = human.chars().take(room).collect();
    format!("{human} [{attempt_key}]")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_render_once_unless_the_template_reads_what_differs_between_them() {
        let tz: Tz = "Europe/Amsterdam".parse().unwrap();
        let plain = Template("analytics".into());
        assert_eq!(
            render_samples(&plain, "p", "s", tz).unwrap(),
            vec!["analytics".to_string()]
        );
        let dated = Template("analytics_{{ ds_nodash }}_{{ step }}".into());
        assert_eq!(
            render_samples(&dated, "p", "s", tz).unwrap(),
            vec!["analytics_20270101_s".to_string()]
        );
        let attempt = Template("{% if is_backfill %}bf{% endif %}{{ attempt }}".into());
        assert_eq!(render_samples(&attempt, "p", "s", tz).unwrap().len(), 4);
        // Fails for the first attempt only: found although the other samples render.
        let first_fails = Template("{{ 10 // (attempt - 1) }}".into());
        assert!(render_samples(&first_fails, "p", "s", tz).is_err());
        let unknown = Template("{{ nope }}".into());
        assert!(render_samples(&unknown, "p", "s", tz).is_err());
        assert!(render_samples(&unknown, "p", "s", tz).is_err(), "cached");
    }

    fn ctx() -> TemplateContext {
        let tz: Tz = "Europe/Amsterdam".parse().unwrap();
        let logical = Utc.with_ymd_and_hms(2026, 3, 28, 23, 30, 0).unwrap();
        TemplateContext {
            logical_date: logical,
            timezone: tz,
            data_interval_start: logical - chrono::Duration::days(1),
            data_interval_end: logical,
            pipeline: "nightly".into(),
            step: "marts".into(),
            attempt: 2,
            is_backfill: true,
        }
    }

    #[test]
    fn variables_render_in_the_pipeline_zone() {
        let t = Template(
            "{{ ds }} {{ ds_nodash }} {{ logical_date }} {{ data_interval_start }} {{ pipeline }}/{{ step }}#{{ attempt }} {{ is_backfill }}".into(),
        );
        assert_eq!(
            render(&t, &ctx()).unwrap(),
            "2026-03-29 20260329 2026-03-29T00:30:00+01:00 2026-03-28T00:30:00+01:00 nightly/marts#2 True"
        );
    }

    #[test]
    fn unknown_variable_is_an_error() {
        let err = render(&Template("{{ dss }}".into()), &ctx()).unwrap_err();
        assert!(err.message.contains("undefined"), "{err}");
    }

    #[test]
    fn overrides_fill_typed_fields() {
        let mut o = Overrides::new();
        o.insert(
            "schema_override".into(),
            OverrideValue::Text(Template("bf_{{ ds_nodash }}".into())),
        );
        o.insert("threads_override".into(), OverrideValue::Integer(8));
        o.insert("generate_docs_override".into(), OverrideValue::Bool(true));
        o.insert(
            "steps_override".into(),
            OverrideValue::List(vec![Template("dbt build --vars '{day: {{ ds }}}'".into())]),
        );
        let r = render_overrides(&o, &ctx()).unwrap();
        assert_eq!(r.schema_override.as_deref(), Some("bf_20260329"));
        assert_eq!(r.threads_override, Some(8));
        assert_eq!(r.generate_docs_override, Some(true));
        assert_eq!(
            r.steps_override,
            Some(vec!["dbt build --vars '{day: 2026-03-29}'".to_string()])
        );
        assert!(r.cause.is_empty());
        o.insert("threads_override".into(), OverrideValue::Bool(true));
        assert!(render_overrides(&o, &ctx()).is_err());
    }

    #[test]
    fn cause_keeps_the_key_and_fits() {
        let mut pipeline = crate::model::pipeline::Pipeline {
            name: crate::model::pipeline::PipelineName("nightly".into()),
            description: None,
            source: "x.yaml".into(),
            schedule: None,
            concurrency: Default::default(),
            suspended: false,
            cause: None,
            steps: vec![],
            backfill: None,
            deadline: None,
        };
        let key = "k".repeat(40);
        let cause = render_cause(&pipeline, &ctx(), &key);
        assert_eq!(
            cause,
            format!("baton: nightly marts 2026-03-29T00:30:00+01:00 attempt 2 [{key}]")
        );
        pipeline.cause = Some(Template("é".repeat(400)));
        let cause = render_cause(&pipeline, &ctx(), &key);
        assert_eq!(cause.chars().count(), 255);
        assert!(cause.ends_with(&format!(" [{key}]")));
    }
}
