//! One structured log line per engine transition, with the fields journald and log shippers index.

use crate::engine::event::{Transition, TransitionKind};

pub fn transition(t: &Transition) {
    let run = t.run.as_ref().map(|r| r.0.as_str()).unwrap_or("");
    // A pipeline run id is `pipeline@logical_date`.
    let logical_date = run.split_once('@').map(|(_, d)| d).unwrap_or("");
    let step = t.step.as_deref().unwrap_or("");
    let attempt = t.attempt.unwrap_or(0);
    let dbt_run = t.dbt_run.map(|r| r.0).unwrap_or(0);
    let href = t.href.as_deref().unwrap_or("");
    macro_rules! line {
        ($level:ident) => {
            tracing::$level!(
                target: "baton::transition",
                event = t.what.name(),
                pipeline = %t.pipeline,
                pipeline_run = run,
                logical_date,
                step,
                attempt,
                dbt_run,
                href,
                "{}",
                t.detail
            )
        };
    }
    match t.what {
        TransitionKind::StepFailed
        | TransitionKind::PipelineRunFailed
        | TransitionKind::PipelineRunLate
        | TransitionKind::TriggerAmbiguous
        | TransitionKind::UnknownStatus
        | TransitionKind::TicksMissed => line!(warn),
        TransitionKind::StepStatus => line!(debug),
        _ => line!(info),
    }
}
