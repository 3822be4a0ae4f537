//! Lowering of one pipeline file's YAML tree into a validated `Pipeline`, collecting every
//! problem with its position instead of stopping at the first.

use super::diagnostic::FileReport;
use super::keys;
use super::yaml::{Node, Span};
use crate::ids::JobId;
use crate::model::dag::{self, DependsOn};
use crate::model::pipeline::{
    CatchupPolicy, ConcurrencyPolicy, OverrideValue, Overrides, Pipeline, PipelineName,
    RetryPolicy, RollingBackfill, ScheduleSpec, Step, StepName, Template,
};
use crate::model::schedule::Schedule;
use crate::model::template::{self, override_type, OverrideType, TemplateContext};
use chrono_tz::Tz;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

/// A lowered pipeline and where its name was written (for duplicate-name reports).
#[derive(Debug)]
pub struct Lowered {
    pub pipeline: Pipeline,
    pub name_span: Span,
}

/// The entries of a mapping by key, first occurrence kept.
type Entries<'n> = BTreeMap<&'n str, (&'n Node, &'n Node)>;

/// Closest candidate to `word`, if one is close enough to be a likely typo.
pub fn did_you_mean<'c>(
    word: &str,
    candidates: impl IntoIterator<Item = &'c str>,
) -> Option<&'c str> {
    let lower = word.to_lowercase();
    candidates
        .into_iter()
        .map(|c| (strsim::jaro_winkler(&lower, &c.to_lowercase()), c))
        .filter(|(score, _)| *score >= 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c)
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

const NAME_HINT: &str =
    "names use letters, digits, `_`, `-` and `.`, and start with a letter, digit or `_`";

struct Lowerer<'r, 'a> {
    report: &'r mut FileReport<'a>,
}

/// The retry fields as written, before defaults are applied.
#[derive(Debug, Default, Clone)]
struct PartialRetry {
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
struct RawStep<'n> {
    name: String,
    name_span: Span,
    job_id: Option<JobId>,
    depends_on: Vec<(String, Span)>,
    overrides: Overrides,
    override_nodes: Vec<(&'n Node, OverrideValue)>,
    retry: PartialRetry,
    timeout: Option<Duration>,
    queue_timeout: Option<Duration>,
}

impl<'r, 'a> Lowerer<'r, 'a> {
    fn error(&mut self, span: Span, message: impl Into<String>, hint: Option<String>) {
        self.report.error(span, message, hint);
    }

    fn wrong_type(&mut self, node: &Node, what: &str, expected: &str) {
        self.error(
            node.span,
            format!("{what} must be {expected}, found {}", node.type_name()),
            None,
        );
    }

    /// Checks `node` is a mapping with only `allowed` keys, each once; returns its entries.
    fn mapping<'n>(&mut self, node: &'n Node, what: &str, allowed: &[&str]) -> Option<Entries<'n>> {
        let Some(pairs) = node.as_mapping() else {
            self.wrong_type(node, what, "a mapping");
            return None;
        };
        let mut entries = Entries::new();
        for (key, value) in pairs {
            let Some(name) = key.scalar_text() else {
                self.wrong_type(key, &format!("a key in {what}"), "a string");
                continue;
            };
            if !allowed.contains(&name) {
                let hint = match did_you_mean(name, allowed.iter().copied()) {
                    Some(close) => format!("did you mean `{close}`?"),
                    None => format!("expected one of: {}", allowed.join(", ")),
                };
                self.error(
                    key.span,
                    format!("unknown key `{name}` in {what}"),
                    Some(hint),
                );
                continue;
            }
            self.insert_once(
                &mut entries,
                name,
                key,
                value,
                &format!("key `{name}` in {what}"),
            );
        }
        Some(entries)
    }

    fn insert_once<'n>(
        &mut self,
        entries: &mut Entries<'n>,
        name: &'n str,
        key: &'n Node,
        value: &'n Node,
        what: &str,
    ) {
        if let Some((first, _)) = entries.get(name) {
            let first_line = first.span.line;
            self.error(
                key.span,
                format!("duplicate {what}"),
                Some(format!(
                    "first defined on line {first_line}; YAML keeps only one"
                )),
            );
        } else {
            entries.insert(name, (key, value));
        }
    }

    fn present<'n>(entries: &Entries<'n>, key: &str) -> Option<&'n Node> {
        entries.get(key).map(|(_, v)| *v).filter(|v| !v.is_null())
    }

    fn missing(&mut self, at: Span, field: &str, what: &str) {
        self.error(at, format!("missing field `{field}` in {what}"), None);
    }

    fn string(&mut self, entries: &Entries, key: &str, what: &str) -> Option<(String, Span)> {
        let node = Self::present(entries, key)?;
        match node.as_str() {
            Some(s) => Some((s.to_string(), node.span)),
            None => {
                self.wrong_type(node, &format!("`{key}` in {what}"), "a string");
                None
            }
        }
    }

    fn boolean(&mut self, entries: &Entries, key: &str, what: &str) -> Option<bool> {
        let node = Self::present(entries, key)?;
        let value = node.as_bool();
        if value.is_none() {
            self.wrong_type(
                node,
                &format!("`{key}` in {what}"),
                "a boolean (true or false)",
            );
        }
        value
    }

    fn positive_int(&mut self, entries: &Entries, key: &str, what: &str) -> Option<i64> {
        let node = Self::present(entries, key)?;
        match node.as_int() {
            Some(i) if i >= 1 => Some(i),
            Some(i) => {
                self.error(
                    node.span,
                    format!("`{key}` in {what} must be at least 1, found {i}"),
                    None,
                );
                None
            }
            None => {
                self.wrong_type(node, &format!("`{key}` in {what}"), "a positive integer");
                None
            }
        }
    }

    fn duration(
        &mut self,
        entries: &Entries,
        key: &str,
        what: &str,
        allow_zero: bool,
    ) -> Option<Duration> {
        let node = Self::present(entries, key)?;
        let Some(text) = node.scalar_text().filter(|_| node.as_sequence().is_none()) else {
            self.wrong_type(
                node,
                &format!("`{key}` in {what}"),
                "a duration such as `90s` or `2h 30m`",
            );
            return None;
        };
        match humantime::parse_duration(text) {
            Ok(d) if d.is_zero() && !allow_zero => {
                self.error(
                    node.span,
                    format!("`{key}` in {what} must be longer than zero"),
                    None,
                );
                None
            }
            Ok(d) => Some(d),
            Err(e) => {
                self.error(
                    node.span,
                    format!("`{key}` in {what}: bad duration `{text}`: {e}"),
                    Some("durations look like `90s`, `15m`, `2h 30m`, `7d`".to_string()),
                );
                None
            }
        }
    }

    fn choice<T: Copy>(
        &mut self,
        entries: &Entries,
        key: &str,
        what: &str,
        options: &[(&str, T)],
    ) -> Option<T> {
        let node = Self::present(entries, key)?;
        let names: Vec<&str> = options.iter().map(|(n, _)| *n).collect();
        let text = node.scalar_text().unwrap_or_default();
        if let Some((_, value)) = options.iter().find(|(n, _)| *n == text) {
            return Some(*value);
        }
        let hint = match did_you_mean(text, names.iter().copied()) {
            Some(close) => format!("did you mean `{close}`?"),
            None => format!("expected one of: {}", names.join(", ")),
        };
        self.error(
            node.span,
            format!(
                "`{key}` in {what} must be one of {}, found `{text}`",
                names.join(" | ")
            ),
            Some(hint),
        );
        None
    }

    fn timezone(&mut self, entries: &Entries, what: &str) -> Tz {
        let Some(node) = Self::present(entries, "timezone") else {
            return chrono_tz::UTC;
        };
        let text = node.scalar_text().unwrap_or_default();
        if let Ok(tz) = text.parse::<Tz>() {
            return tz;
        }
        let names = chrono_tz::TZ_VARIANTS.iter().map(|tz| tz.name());
        let hint = match did_you_mean(text, names) {
            Some(close) => format!("did you mean `{close}`?"),
            None => "use an IANA time zone name such as `Europe/Amsterdam` or `UTC`".to_string(),
        };
        self.error(
            node.span,
            format!("unknown time zone `{text}` in {what}"),
            Some(hint),
        );
        chrono_tz::UTC
    }

    fn cron(&mut self, entries: &Entries, at: Span, what: &str, timezone: Tz) -> Option<String> {
        let Some(node) = Self::present(entries, "cron") else {
            self.missing(at, "cron", what);
            return None;
        };
        let Some(text) = node.as_str() else {
            self.wrong_type(node, &format!("`cron` in {what}"), "a string");
            return None;
        };
        match Schedule::parse(text, timezone) {
            Ok(_) => Some(text.trim().to_string()),
            Err(e) => {
                self.error(
                    node.span,
                    format!("bad cron expression `{text}` in {what}: {e}"),
                    Some(
                        "5 fields: minute hour day-of-month month day-of-week, e.g. `30 2 * * *`"
                            .into(),
                    ),
                );
                None
            }
        }
    }

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
        let job_id = match Self::present(&e, "job_id") {
            None => {
                self.missing(key.span, "job_id", &what);
                None
            }
            Some(_) => self.positive_int(&e, "job_id", &what).map(JobId),
        };
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

    /// `depends_on` names, cycles: returns the order when the graph is sound.
    fn check_graph(&mut self, steps: &[RawStep]) -> Option<Vec<String>> {
        let names: Vec<&str> = steps.iter().map(|s| s.name.as_str()).collect();
        let mut sound = true;
        for step in steps {
            let mut listed: Vec<&str> = Vec::new();
            for (up, span) in &step.depends_on {
                if listed.contains(&up.as_str()) {
                    self.error(
                        *span,
                        format!("step `{}` lists `{up}` twice in `depends_on`", step.name),
                        None,
                    );
                    sound = false;
                }
                listed.push(up);
                if !names.contains(&up.as_str()) {
                    let hint =
                        match did_you_mean(up, names.iter().copied().filter(|n| *n != step.name)) {
                            Some(close) => format!("did you mean `{close}`?"),
                            None => format!("the steps are: {}", names.join(", ")),
                        };
                    self.error(
                        *span,
                        format!(
                            "step `{}` depends on `{up}`, which is not a step of this pipeline",
                            step.name
                        ),
                        Some(hint),
                    );
                    sound = false;
                }
            }
        }
        let deps: DependsOn = steps
            .iter()
            .map(|s| {
                (
                    s.name.as_str(),
                    s.depends_on.iter().map(|(u, _)| u.as_str()).collect(),
                )
            })
            .collect();
        for cycle in dag::cycles(&deps) {
            let first = cycle.first().cloned().unwrap_or_default();
            let span = steps
                .iter()
                .find(|s| s.name == first)
                .map(|s| s.name_span)
                .unwrap_or_default();
            self.error(
                span,
                format!("dependency cycle: {}", cycle.join(" -> ")),
                Some("each arrow points from a step to a step it depends on; remove one of these `depends_on` entries".into()),
            );
            sound = false;
        }
        if !sound {
            return None;
        }
        dag::topological_order(&deps).map(|order| order.into_iter().map(str::to_string).collect())
    }

    fn check_templates(
        &mut self,
        pipeline: &str,
        tz: Tz,
        steps: &[RawStep],
        cause: Option<&(String, Span)>,
    ) {
        for step in steps {
            let samples = TemplateContext::samples(pipeline, &step.name, tz);
            for (node, value) in &step.override_nodes {
                let templates: Vec<&Template> = match value {
                    OverrideValue::Text(t) => vec![t],
                    OverrideValue::List(items) => items.iter().collect(),
                    _ => continue,
                };
                for t in templates {
                    let failure = samples
                        .iter()
                        .find_map(|ctx| template::render(t, ctx).err());
                    if let Some(e) = failure {
                        self.template_error(
                            node.span,
                            &format!("an override of step `{}`", step.name),
                            t,
                            &e.message,
                        );
                    }
                }
            }
        }
        let Some((text, span)) = cause else { return };
        let longest_step = steps
            .iter()
            .map(|s| s.name.as_str())
            .max_by_key(|n| n.chars().count())
            .unwrap_or("step");
        let cause = Template(text.clone());
        let rendered: Result<Vec<String>, _> = TemplateContext::samples(pipeline, longest_step, tz)
            .iter()
            .map(|ctx| template::render(&cause, ctx))
            .collect();
        match rendered {
            Err(e) => self.template_error(*span, "`cause`", &cause, &e.message),
            Ok(renderings) => {
                let length = renderings
                    .iter()
                    .map(|r| r.chars().count())
                    .max()
                    .unwrap_or(0);
                if length > template::MAX_CAUSE_HUMAN_CHARS {
                    self.error(
                        *span,
                        format!(
                            "`cause` can render to {length} characters, more than the {} left beside the attempt key (dbt Cloud takes 255)",
                            template::MAX_CAUSE_HUMAN_CHARS
                        ),
                        Some("shorten the template; it was measured with the longest step name, attempt number and dates, as a backfill and not".into()),
                    );
                }
            }
        }
    }

    fn template_error(&mut self, span: Span, what: &str, t: &Template, message: &str) {
        let variables = template::TEMPLATE_VARIABLES.join(", ");
        let unknown = template::unknown_variables(t);
        let Some(first) = unknown.first() else {
            self.error(
                span,
                format!("template in {what} does not render: {message}"),
                Some(format!("templates may use: {variables}")),
            );
            return;
        };
        let names: Vec<String> = unknown.iter().map(|u| format!("`{u}`")).collect();
        let hint = match did_you_mean(first, template::TEMPLATE_VARIABLES.iter().copied()) {
            Some(close) => format!("did you mean `{close}`? templates may use: {variables}"),
            None => format!("templates may use: {variables}"),
        };
        self.error(
            span,
            format!(
                "template in {what} uses unknown variable {}",
                names.join(", ")
            ),
            Some(hint),
        );
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
    let mut by_name: BTreeMap<String, RawStep> =
        steps.into_iter().map(|s| (s.name.clone(), s)).collect();
    let mut ordered = Vec::new();
    for step_name in order? {
        let raw = by_name.remove(&step_name)?;
        ordered.push(Step {
            name: StepName(raw.name),
            job_id: raw.job_id?,
            depends_on: raw
                .depends_on
                .into_iter()
                .map(|(d, _)| StepName(d))
                .collect(),
            overrides: raw.overrides,
            retry: raw.retry.policy(),
            timeout: raw.timeout,
            queue_timeout: raw.queue_timeout,
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
        },
        name_span,
    })
}
