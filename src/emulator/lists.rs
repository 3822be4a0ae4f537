//! `GET runs/` and `GET jobs/`: filtering, ordering, pagination and the `extra` echo.

use super::handlers::Reply;
use super::query::{self, FieldErrors, QueryPairs};
use super::render;
use super::state::RunState;
use super::Shared;
use serde_json::{json, Map};

pub(super) fn list_runs(shared: &Shared, q: &QueryPairs, account: i64) -> Reply {
    let filter = match query::run_filter(q, account) {
        Ok(f) => f,
        Err(errors) => return Reply::field_errors(errors),
    };
    shared.with_world(|world, now| {
        let keep = |r: &&RunState| {
            let spec = world.job(r.job_id);
            let project = spec.map(|s| render::project_id(world, s).0);
            let environment = spec.map(|s| render::environment_id(world, s).0);
            filter.job_definition_id.is_none_or(|j| j == r.job_id.0)
                && filter.project_id.is_none_or(|p| Some(p) == project)
                && filter.environment_id.is_none_or(|e| Some(e) == environment)
                && filter.status.is_none_or(|s| s == r.status.code())
                && filter
                    .status_in
                    .as_ref()
                    .is_none_or(|s| s.contains(&r.status.code()))
                && filter
                    .pk_in
                    .as_ref()
                    .is_none_or(|ids| ids.contains(&r.id.0))
                && filter.pk.is_none_or(|id| id == r.id.0)
                && filter.id_gt.is_none_or(|id| r.id.0 > id)
                && filter
                    .created_at_range
                    .is_none_or(|(a, b)| a <= r.created_at && r.created_at <= b)
                && filter
                    .finished_at_range
                    .is_none_or(|(a, b)| r.finished_at.is_some_and(|f| a <= f && f <= b))
        };
        // Batched polling asks for a few ids among many runs: look those up directly.
        let mut runs: Vec<&RunState> = match &filter.pk_in {
            Some(ids) => {
                let ids: std::collections::BTreeSet<_> = ids.iter().copied().collect();
                ids.into_iter()
                    .filter_map(|id| world.runs.get(&crate::ids::RunId(id)))
                    .filter(keep)
                    .collect()
            }
            None => world.runs.values().filter(keep).collect(),
        };
        runs.sort_by(|a, b| {
            let ordering = match filter.order_field {
                query::OrderField::Id => a.id.cmp(&b.id),
                query::OrderField::CreatedAt => {
                    a.created_at.cmp(&b.created_at).then(a.id.cmp(&b.id))
                }
                // Unfinished runs sort after finished ones, as NULLs do in Postgres.
                query::OrderField::FinishedAt => match (a.finished_at, b.finished_at) {
                    (Some(x), Some(y)) => x.cmp(&y),
                    (Some(_), None) => std::cmp::Ordering::Less,
                    (None, Some(_)) => std::cmp::Ordering::Greater,
                    (None, None) => std::cmp::Ordering::Equal,
                }
                .then(a.id.cmp(&b.id)),
            };
            if filter.descending {
                ordering.reverse()
            } else {
                ordering
            }
        });
        let total = runs.len();
        let page = runs
            .into_iter()
            .skip(filter.offset)
            .take(filter.limit)
            .map(|r| render::run_json(world, r, now, &shared.href_base, &filter.include))
            .collect();
        Reply::json(
            200,
            render::ok_list(page, filter.echo.clone(), &filter.order_by, total),
        )
    })
}

pub(super) fn list_jobs(shared: &Shared, q: &QueryPairs, account: i64) -> Reply {
    let mut errors = FieldErrors::new();
    let (limit, offset) = query::pagination(q, &mut errors);
    let number = |key: &str, errors: &mut FieldErrors| -> Option<i64> {
        let raw = q.last(key)?.trim().to_string();
        raw.parse()
            .map_err(|_| {
                errors.insert(key.to_string(), format!("'{raw}' is not of type 'integer'"))
            })
            .ok()
    };
    let project = number("project_id", &mut errors);
    let environment = number("environment_id", &mut errors);
    let name_contains = q
        .last("name__icontains")
        .filter(|s| !s.is_empty())
        .map(str::to_lowercase);
    let order_by = q
        .last("order_by")
        .filter(|s| !s.is_empty())
        .unwrap_or("id")
        .to_string();
    if !matches!(order_by.as_str(), "id" | "-id" | "name" | "-name") {
        errors.insert(
            "order_by".into(),
            format!("'{order_by}' is not one of ['id', 'name']"),
        );
    }
    if !errors.is_empty() {
        return Reply::field_errors(errors);
    }
    let mut echo = Map::new();
    echo.insert("limit".into(), json!(limit));
    echo.insert("offset".into(), json!(offset));
    echo.insert("state".into(), json!("active"));
    echo.insert("account_id".into(), json!(account));
    if let Some(p) = project {
        echo.insert("project_id".into(), json!(p));
    }
    if let Some(e) = environment {
        echo.insert("environment_id".into(), json!(e));
    }
    if let Some(n) = &name_contains {
        echo.insert("name__icontains".into(), json!(n));
    }
    shared.with_world(|world, _| {
        let mut jobs: Vec<_> = world
            .scenario
            .jobs
            .iter()
            .filter(|j| project.is_none_or(|p| p == render::project_id(world, j).0))
            .filter(|j| environment.is_none_or(|e| e == render::environment_id(world, j).0))
            .filter(|j| {
                name_contains
                    .as_ref()
                    .is_none_or(|n| j.name.to_lowercase().contains(n))
            })
            .collect();
        match order_by.trim_start_matches('-') {
            "name" => jobs.sort_by(|a, b| a.name.cmp(&b.name).then(a.id.cmp(&b.id))),
            _ => jobs.sort_by_key(|j| j.id),
        }
        if order_by.starts_with('-') {
            jobs.reverse();
        }
        let total = jobs.len();
        let page = jobs
            .into_iter()
            .skip(offset)
            .take(limit)
            .map(|j| render::job_json(world, j))
            .collect();
        Reply::json(200, render::ok_list(page, echo, &order_by, total))
    })
}
