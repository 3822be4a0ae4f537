//! Lowering of one pipeline file's YAML tree into a validated `Pipeline`, collecting every
//! problem with its position instead of stopping at the first.

use super::diagnostic::FileReport;
/// Kept here too: callers that used `lower::did_you_mean` before the split still compile.
pub use super::fields::did_you_mean;
use super::fields::{valid_name, Entries, Lowerer, NAME_HINT};
use super::keys;
use super::yaml::{Node, Span};
use crate::ids::{AccountName, EnvironmentId, JobId, ProjectId};
use crate::model::pipeline::{
    CatchupPolicy, ConcurrencyPolicy, JobRef, OverrideValue, Overrides, Pipeline, PipelineName,
    RetryPolicy, RollingBackfill, ScheduleSpec, Step, StepLimits, StepName, Template,
};
use crate::model::template::{self, override_type, OverrideType};
use chrono_tz::Tz;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// A lowered pipeline and where its name was written (for duplicate-name reports).
#[derive(Debug)]
pub struct Lowered {
    pub pipeline: Pipeline,
    pub name_span: Span,
}

/// The retry fields as written, before defaults are applied.
#[derive(Debug, Default, Clone)]
pub(super) struct PartialRetry {
    attempts: Option<u32>,
    backoff: Option<Duration>,
    max_backoff: Option<Duration>,
    from_failure: Option<bool>,
    on_timeout: Option<bool>,
    on_cancel: Option<bool>,
}

impl PartialRetry {
    fn over(&self, base: &PartialRetry) -> PartialRetry {
        PartialRetry {
            attempts: self.attempts.or(base.attempts),
            backoff: self.backoff.or(base.backoff),
            max_backoff: self.max_backoff.or(base.max_backoff),
            from_failure: self.from_failure.or(base.from_failure),
            on_timeout: self.on_timeout.or(base.on_timeout),
            on_cancel: self.on_cancel.or(base.on_cancel),
        }
    }

    fn policy(&self) -> RetryPolicy {
        let d = RetryPolicy::default();
        RetryPolicy {
            attempts: self.attempts.unwrap_or(d.attempts),
            backoff: self.backoff.unwrap_or(d.backoff),
            max_backoff: self.max_backoff.unwrap_or(d.max_backoff),
            from_failure: self.from_failure.unwrap_or(d.from_failure),
            on_timeout: self.on_timeout.unwrap_or(d.on_timeout),
            on_cancel: self.on_cancel.unwrap_or(d.on_cancel),
        }
    }
}

#[derive(Debug, Default)]
struct Defaults {
    retry: PartialRetry,
    timeout: Option<Duration>,
    queue_timeout: Option<Duration>,
}

/// A step as written, with the positions later checks point at.
pub(super) struct RawStep<'n> {
    pub(super) name: String,
    pub(super) name_span: Span,
    pub(super) job_id: Option<JobId>,
    pub(super) depends_on: Vec<(String, Span)>,
    pub(super) overrides: Overrides,
    pub(super) override_nodes: Vec<(&'n Node, OverrideValue)>,
    pub(super) retry: PartialRetry,
    pub(super) timeout: Option<Duration>,
    pub(super) queue_timeout: Option<Duration>,
    pub(super) account: Option<String>,
    pub(super) job_ref: Option<JobRef>,
}

impl Lowerer<'_, '_> {
    fn schedule(&mut self, node: &Node) -> Option<ScheduleSpec> {
        let what = "`schedule`";
        let entries = self.mapping(node, what, keys::SCHEDULE)?;
        let timezone = self.timezone(&entries, what);
        let catchup = self
            .choice(
                &entries,
                "catchup",
                what,
                &[
                    ("none", CatchupPolicy::None),
                    ("latest", CatchupPolicy::Latest),
                    ("all", CatchupPolicy::All),
                ],
            )
            .unwrap_or_default();
        let cron = self.cron(&entries, node.span, what, timezone)?;
        Some(ScheduleSpec {
            cron,
            timezone,
            catchup,
        })
    }

    fn retry(&mut self, node: &Node, what: &str) -> PartialRetry {
        let Some(e) = self.mapping(node, what, keys::RETRY) else {
            return PartialRetry::default();
        };
        PartialRetry {
            attempts: self
                .positive_int(&e, "attempts", what)
                .map(|a| u32::try_from(a).unwrap_or(u32::MAX)),
            backoff: self.duration(&e, "backoff", what, true),
            max_backoff: self.duration(&e, "max_backoff", what, true),
            from_failure: self.boolean(&e, "from_failure", what),
            on_timeout: self.boolean(&e, "on_timeout", what),
            on_cancel: self.boolean(&e, "on_cancel", what),
        }
    }

    fn defaults(&mut self, node: &Node) -> Defaults {
        let what = "`defaults`";
        let Some(e) = self.mapping(node, what, keys::DEFAULTS) else {
            return Defaults::default();
        };
        Defaults {
            retry: Self::present(&e, "retry")
                .map(|n| self.retry(n, "`defaults.retry`"))
                .unwrap_or_default(),
            timeout: self.duration(&e, "timeout", what, false),
            queue_timeout: self.duration(&e, "queue_timeout", what, false),
        }
    }

    fn override_value(
        &mut self,
        field: &str,
        kind: OverrideType,
        node: &Node,
        what: &str,
    ) -> Option<OverrideValue> {
        let value = match kind {
            OverrideType::Text => node
                .as_str()
                .map(|s| OverrideValue::Text(Template(s.to_string()))),
            OverrideType::Integer => node.as_int().map(OverrideValue::Integer),
            OverrideType::Bool => node.as_bool().map(OverrideValue::Bool),
            OverrideType::TextList => node.as_sequence().and_then(|items| {
                items
                    .iter()
                    .map(|i| i.as_str().map(|s| Template(s.to_string())))
                    .collect::<Option<Vec<_>>>()
                    .map(OverrideValue::List)
            }),
        };
        if value.is_none() {
            self.wrong_type(node, &format!("`{field}` in {what}"), kind.describe());
        }
        value
    }

    fn step<'n>(
        &mut self,
        key: &'n Node,
        name: &str,
        node: &'n Node,
        defaults: &Defaults,
    ) -> Option<RawStep<'n>> {
        let what = format!("step `{name}`");
        let e = self.mapping(node, &what, keys::STEP)?;
        let job_name = self.string(&e, "job_name", &what);
        let project_id = self.positive_int(&e, "project_id", &what).map(ProjectId);
        let environment_id = self
            .positive_int(&e, "environment_id", &what)
            .map(EnvironmentId);
        let job_id = match (Self::present(&e, "job_id"), &job_name) {
            (None, None) => {
                self.missing(key.span, "job_id", &what);
                None
            }
            (None, Some(_)) => Some(JobId(0)),
            (Some(_), Some((_, span))) => {
                self.error(
                    *span,
                    format!("{what} sets both `job_id` and `job_name`"),
                    Some("name the job one way: its id, or its exact name".into()),
                );
                None
            }
            (Some(_), None) => {
                for key in ["project_id", "environment_id"] {
                    if let Some(node) = Self::present(&e, key) {
                        self.error(
                            node.span,
                            format!(
                                "`{key}` in {what} narrows a `job_name`; this step has a `job_id`"
                            ),
                            Some(format!("remove `{key}`, or name the job with `job_name`")),
                        );
                    }
                }
                self.positive_int(&e, "job_id", &what).map(JobId)
            }
        };
        let job_ref = job_name.map(|(name, _)| JobRef {
            name,
            project_id,
            environment_id,
        });
        let account = self.string(&e, "account", &what).map(|(a, span)| {
            if !valid_name(&a) {
                self.error(
                    span,
                    format!("invalid account name `{a}` in {what}"),
                    Some(NAME_HINT.into()),
                );
            }
            a
        });
        let mut depends_on = Vec::new();
        if let Some(list) = Self::present(&e, "depends_on") {
            match list.as_sequence() {
                Some(items) => {
                    for item in items {
                        match item.as_str() {
                            Some(s) => depends_on.push((s.to_string(), item.span)),
                            None => self.wrong_type(
                                item,
                                &format!("an entry of `depends_on` in {what}"),
                                "a step name",
                            ),
                        }
                    }
                }
                None => self.wrong_type(
                    list,
                    &format!("`depends_on` in {what}"),
                    "a list of step names, e.g. `[staging]`",
                ),
            }
        }
        let mut overrides = Overrides::new();
        let mut override_nodes = Vec::new();
        if let Some(map) = Self::present(&e, "overrides") {
            let allowed: Vec<&str> = template::OVERRIDE_FIELDS.iter().map(|(n, _)| *n).collect();
            let owhat = format!("the overrides of {what}");
            if let Some(entries) = self.mapping(map, &owhat, &allowed) {
                for (field, (_, value)) in entries {
                    let Some(kind) = override_type(field) else {
                        continue;
                    };
                    if value.is_null() {
                        continue;
                    }
                    if let Some(v) = self.override_value(field, kind, value, &owhat) {
                        override_nodes.push((value, v.clone()));
                        overrides.insert(field.to_string(), v);
                    }
                }
            }
        }
        let retry = Self::present(&e, "retry")
            .map(|n| self.retry(n, &format!("the retry of {what}")))
            .unwrap_or_default()
            .over(&defaults.retry);
        Some(RawStep {
            name: name.to_string(),
            name_span: key.span,
            job_id,
            depends_on,
            overrides,
            override_nodes,
            retry,
            timeout: self
                .duration(&e, "timeout", &what, false)
                .or(defaults.timeout),
            queue_timeout: self
                .duration(&e, "queue_timeout", &what, false)
                .or(defaults.queue_timeout),
            account,
            job_ref,
        })
    }

    fn steps<'n>(&mut self, node: &'n Node, defaults: &Defaults) -> Vec<RawStep<'n>> {
        let Some(pairs) = node.as_mapping() else {
            self.wrong_type(node, "`steps`", "a mapping of step names to steps");
            return Vec::new();
        };
        if pairs.is_empty() {
            self.error(node.span, "a pipeline needs at least one step", None);
        }
        let mut seen = Entries::new();
        let mut steps = Vec::new();
        for (key, value) in pairs {
            let Some(name) = key.scalar_text() else {
                self.wrong_type(key, "a step name", "a string");
                continue;
            };
            if !valid_name(name) {
                self.error(
                    key.span,
                    format!("invalid step name `{name}`"),
                    Some(NAME_HINT.into()),
                );
            }
            if seen.contains_key(name) {
                self.insert_once(&mut seen, name, key, value, &format!("step `{name}`"));
                continue;
            }
            seen.insert(name, (key, value));
            if let Some(step) = self.step(key, name, value, defaults) {
                steps.push(step);
            }
        }
        steps
    }

    fn backfill(&mut self, node: &Node, default_tz: Tz) -> Option<RollingBackfill> {
        let what = "`backfill`";
        let e = self.mapping(node, what, keys::BACKFILL)?;
        let schedule = match Self::present(&e, "schedule") {
            None => {
                self.missing(node.span, "schedule", what);
                None
            }
            Some(s) => {
                let swhat = "`backfill.schedule`";
                self.mapping(s, swhat, keys::BACKFILL_SCHEDULE)
                    .and_then(|se| {
                        let tz = if Self::present(&se, "timezone").is_some() {
                            self.timezone(&se, swhat)
                        } else {
                            default_tz
                        };
                        self.cron(&se, s.span, swhat, tz).map(|cron| ScheduleSpec {
                            cron,
                            timezone: tz,
                            catchup: CatchupPolicy::None,
                        })
                    })
            }
        };
        let window = self.duration(&e, "window", what, false);
        if Self::present(&e, "window").is_none() {
            self.missing(node.span, "window", what);
        }
        let every = self
            .duration(&e, "every", what, false)
            .unwrap_or(Duration::from_secs(86_400));
        let max_active = self
            .positive_int(&e, "max_active", what)
            .map_or(1, |m| u32::try_from(m).unwrap_or(u32::MAX));
        let window = window?;
        if every > window {
            if let Some(n) = Self::present(&e, "every") {
                self.error(
                    n.span,
                    "`every` in `backfill` is longer than its `window`",
                    None,
                );
            }
            return None;
        }
        Some(RollingBackfill {
            schedule: schedule?,
            window,
            every,
            max_active,
        })
    }
}

/// Lowers one document; every problem goes to `report`. `None` when there was any.
pub fn lower_pipeline(report: &mut FileReport, root: &Node, source: &Path) -> Option<Lowered> {
    let before = report.diagnostics.len();
    let mut l = Lowerer { report };
    let e = l.mapping(root, "the pipeline", keys::PIPELINE)?;
    let name = match Lowerer::present(&e, "name") {
        None => {
            l.missing(root.span, "name", "the pipeline");
            None
        }
        Some(_) => l.string(&e, "name", "the pipeline"),
    };
    if let Some((n, span)) = &name {
        if !valid_name(n) {
            l.error(
                *span,
                format!("invalid pipeline name `{n}`"),
                Some(NAME_HINT.into()),
            );
        }
    }
    let description = l.string(&e, "description", "the pipeline").map(|(d, _)| d);
    let schedule = Lowerer::present(&e, "schedule").and_then(|n| l.schedule(n));
    let concurrency = l
        .choice(
            &e,
            "concurrency",
            "the pipeline",
            &[
                ("skip", ConcurrencyPolicy::Skip),
                ("queue", ConcurrencyPolicy::Queue),
                ("cancel_running", ConcurrencyPolicy::CancelRunning),
            ],
        )
        .unwrap_or_default();
    let suspended = l.boolean(&e, "suspended", "the pipeline").unwrap_or(false);
    let deadline = l.duration(&e, "deadline", "the pipeline", false);
    let cause = l.string(&e, "cause", "the pipeline");
    let defaults = Lowerer::present(&e, "defaults")
        .map(|n| l.defaults(n))
        .unwrap_or_default();
    let steps = match Lowerer::present(&e, "steps") {
        None => {
            l.missing(root.span, "steps", "the pipeline");
            Vec::new()
        }
        Some(n) => l.steps(n, &defaults),
    };
    let tz = schedule.as_ref().map_or(chrono_tz::UTC, |s| s.timezone);
    let backfill = Lowerer::present(&e, "backfill").and_then(|n| l.backfill(n, tz));
    let order = l.check_graph(&steps);
    let pipeline_name = name.as_ref().map_or("pipeline", |(n, _)| n.as_str());
    l.check_templates(pipeline_name, tz, &steps, cause.as_ref());

    if l.report.diagnostics.len() > before {
        return None;
    }
    let (name, name_span) = name?;
    // The steps in topological order, each listed there exactly once.
    let order = order?;
    let mut placed: Vec<(usize, RawStep)> = steps
        .into_iter()
        .filter_map(|s| Some((order.iter().position(|n| *n == s.name)?, s)))
        .collect();
    placed.sort_unstable_by_key(|(at, _)| *at);
    if placed.len() != order.len() || placed.iter().enumerate().any(|(i, (at, _))| i != *at) {
        return None;
    }
    // Exact capacities: 10,000 definitions stay in memory, and a vector grown by pushes keeps up
    // to twice the room it needs (a collect from `depends_on` would keep its larger allocation).
    let mut ordered = Vec::with_capacity(placed.len());
    // Steps that allow alike share their limits (most share the process-wide default).
    let mut limits: Vec<Arc<StepLimits>> = Vec::new();
    for (_, raw) in placed {
        let mut depends_on = Vec::with_capacity(raw.depends_on.len());
        depends_on.extend(raw.depends_on.into_iter().map(|(d, _)| StepName(d)));
        ordered.push(Step {
            name: StepName(raw.name),
            job_id: raw.job_id?,
            depends_on,
            overrides: raw.overrides,
            limits: share(
                &mut limits,
                StepLimits {
                    retry: raw.retry.policy(),
                    timeout: raw.timeout,
                    queue_timeout: raw.queue_timeout,
                },
            ),
            account: raw
                .account
                .map(|a| AccountName(a.into()))
                .unwrap_or_default(),
            job_ref: raw.job_ref.map(Box::new),
        });
    }
    Some(Lowered {
        pipeline: Pipeline {
            name: PipelineName(name),
            description,
            source: source.to_path_buf(),
            schedule,
            concurrency,
            suspended,
            cause: cause.map(|(c, _)| Template(c)),
            steps: ordered,
            backfill,
            deadline,
        },
        name_span,
    })
}

/// The pipeline's one copy of `wanted` (kept in `known`), the default's being the process's.
fn share(known: &mut Vec<Arc<StepLimits>>, wanted: StepLimits) -> Arc<StepLimits> {
    if let Some(same) = known.iter().find(|k| ***k == wanted) {
        return same.clone();
    }
    let shared = wanted.shared();
    known.push(shared.clone());
    shared
}
