//! Checks across a whole pipeline once its steps are lowered: `depends_on` names, cycles (reported
//! as their whole path) and templates rendered against sample contexts (`cause` measured too).

use super::fields::{did_you_mean, Lowerer};
use super::lower::RawStep;
use super::yaml::Span;
use crate::model::dag::{self, DependsOn};
use crate::model::pipeline::{OverrideValue, Template};
use crate::model::template;
use chrono_tz::Tz;

impl Lowerer<'_, '_> {
    /// `depends_on` names, cycles: returns the order when the graph is sound.
    pub(super) fn check_graph(&mut self, steps: &[RawStep]) -> Option<Vec<String>> {
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
        // A graph in topological order has no cycle to look for (the search costs more).
        let order = dag::topological_order(&deps);
        let cycles = if order.is_none() {
            dag::cycles(&deps)
        } else {
            Vec::new()
        };
        for cycle in cycles {
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
        order.map(|order| order.into_iter().map(str::to_string).collect())
    }

    pub(super) fn check_templates(
        &mut self,
        pipeline: &str,
        tz: Tz,
        steps: &[RawStep],
        cause: Option<&(String, Span)>,
    ) {
        for step in steps {
            for (node, value) in &step.override_nodes {
                let templates: Vec<&Template> = match value {
                    OverrideValue::Text(t) => vec![t],
                    OverrideValue::List(items) => items.iter().collect(),
                    _ => continue,
                };
                for t in templates {
                    let rendered = template::render_samples(t, pipeline, &step.name, tz);
                    if let Err(e) = rendered {
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
        match template::render_samples(&cause, pipeline, longest_step, tz) {
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
}
