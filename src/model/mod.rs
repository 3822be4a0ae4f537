//! Validated pipelines: the types every other part consumes once `config` has lowered and checked the
//! YAML. Nothing here can be invalid: a `Pipeline` that exists has an acyclic DAG, parsed schedules and
//! templates that render.

pub mod dag;
pub mod pipeline;
pub mod schedule;
pub mod template;
