//! SHIM (replaced by the foundation branch): templates.

use super::pipeline::{OverrideValue, Overrides, Pipeline, Template};
use crate::dbt_cloud::wire::TriggerRequest;
use chrono::{DateTime, Utc};
use chrono_tz::Tz;

#[derive(Debug, Clone)]
pub struct TemplateContext {
    pub logical_date: DateTime<Utc>,
    pub timezone: Tz,
    pub data_interval_start: DateTime<Utc>,
    pub data_interval_end: DateTime<Utc>,
    pub pipeline: String,
    pub step: String,
    pub attempt: u32,
    pub is_backfill: bool,
}

#[derive(Debug, thiserror::Error)]
#[error("template: {0}")]
pub struct TemplateError(String);

pub fn render(template: &Template, ctx: &TemplateContext) -> Result<String, TemplateError> {
    let mut env = minijinja::Environment::new();
    env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
    let local = ctx.logical_date.with_timezone(&ctx.timezone);
    env.render_str(
        &template.0,
        minijinja::context! {
            logical_date => local.to_rfc3339(),
            ds => local.format("%Y-%m-%d").to_string(),
            ds_nodash => local.format("%Y%m%d").to_string(),
            pipeline => ctx.pipeline.clone(),
            step => ctx.step.clone(),
            attempt => ctx.attempt,
            is_backfill => ctx.is_backfill,
        },
    )
    .map_err(|e| TemplateError(e.to_string()))
}

pub fn render_overrides(
    overrides: &Overrides,
    ctx: &TemplateContext,
) -> Result<TriggerRequest, TemplateError> {
    let mut req = TriggerRequest::default();
    for (key, value) in overrides {
        match (key.as_str(), value) {
            ("schema_override", OverrideValue::Text(t)) => {
                req.schema_override = Some(render(t, ctx)?)
            }
            ("threads_override", OverrideValue::Integer(n)) => req.threads_override = Some(*n),
            ("timeout_seconds_override", OverrideValue::Integer(n)) => {
                req.timeout_seconds_override = Some(*n)
            }
            _ => {}
        }
    }
    Ok(req)
}

pub fn render_cause(pipeline: &Pipeline, ctx: &TemplateContext, attempt_key: &str) -> String {
    let _ = pipeline;
    format!(
        "baton: {} {} {} attempt {} [{}]",
        ctx.pipeline, ctx.step, ctx.logical_date, ctx.attempt, attempt_key
    )
}
