//! Query strings as clients really send them: repeated keys, `key[]`, lists written `a,b`,
//! `["a","b"]` or `['a', 'b']`; the list-runs filters with their validation and the `filters`
//! echo of `extra`.

use crate::dbt_cloud::time::parse_timestamp;
use chrono::{DateTime, Utc};
use serde_json::{Map, Value};
use std::collections::{BTreeMap, BTreeSet};

/// The decoded `(key, value)` pairs of a query string, in order, `key[]` folded into `key`.
#[derive(Debug, Clone, Default)]
pub struct QueryPairs(Vec<(String, String)>);

impl QueryPairs {
    pub fn parse(raw: Option<&str>) -> Self {
        let pairs = url::form_urlencoded::parse(raw.unwrap_or("").as_bytes())
            .map(|(k, v)| (k.trim_end_matches("[]").to_string(), v.into_owned()))
            .collect();
        Self(pairs)
    }

    pub fn all<'a>(&'a self, key: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.0
            .iter()
            .filter(move |(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    pub fn last<'a>(&'a self, key: &'a str) -> Option<&'a str> {
        self.all(key).last()
    }

    pub fn has<'a>(&'a self, key: &'a str) -> bool {
        self.all(key).next().is_some()
    }
}

/// Splits every spelling of a list into its items: `a,b`, `["a","b"]`, `['a', 'b']`, `[1, 2]`,
/// across repeated keys; empty items are dropped.
pub fn parse_list<'a>(values: impl Iterator<Item = &'a str>) -> Vec<String> {
    values
        .flat_map(|v| {
            let v = v.trim();
            let inner = v
                .strip_prefix('[')
                .and_then(|x| x.strip_suffix(']'))
                .or_else(|| v.strip_prefix('(').and_then(|x| x.strip_suffix(')')))
                .unwrap_or(v);
            inner
                .split(',')
                .map(|item| {
                    item.trim()
                        .trim_matches(|c| c == '"' || c == '\'')
                        .trim()
                        .to_string()
                })
                .collect::<Vec<_>>()
        })
        .filter(|s| !s.is_empty())
        .collect()
}

/// The related objects asked for with `include_related`, lower-cased.
pub fn include_related(q: &QueryPairs) -> BTreeSet<String> {
    parse_list(q.all("include_related"))
        .into_iter()
        .map(|s| s.to_ascii_lowercase())
        .collect()
}

/// Field name to message, as the API's 400 `data` carries it.
pub type FieldErrors = BTreeMap<String, String>;

/// The largest `limit` the API accepts.
pub const MAX_LIMIT: usize = 100;

/// A sort key of `order_by`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OrderField {
    Id,
    CreatedAt,
    FinishedAt,
}

/// The parsed filters of `GET runs/`.
#[derive(Debug, Clone)]
pub struct RunFilter {
    pub job_definition_id: Option<i64>,
    pub project_id: Option<i64>,
    pub environment_id: Option<i64>,
    pub status: Option<i64>,
    pub status_in: Option<Vec<i64>>,
    pub pk_in: Option<Vec<i64>>,
    pub pk: Option<i64>,
    pub id_gt: Option<i64>,
    pub created_at_range: Option<(DateTime<Utc>, DateTime<Utc>)>,
    pub finished_at_range: Option<(DateTime<Utc>, DateTime<Utc>)>,
    pub order_field: OrderField,
    pub descending: bool,
    pub order_by: String,
    pub limit: usize,
    pub offset: usize,
    pub include: BTreeSet<String>,
    /// `extra.filters` as the API echoes it.
    pub echo: Map<String, Value>,
}

/// Parses the pagination (`limit` at most 100, `offset`) shared by every list.
pub fn pagination(q: &QueryPairs, errors: &mut FieldErrors) -> (usize, usize) {
    let limit = match q.last("limit").map(str::trim) {
        None | Some("") => MAX_LIMIT,
        Some(raw) => match raw.parse::<i64>() {
            Ok(n) if n > MAX_LIMIT as i64 => {
                errors.insert(
                    "limit".into(),
                    format!("{n} is greater than the maximum of {MAX_LIMIT}"),
                );
                MAX_LIMIT
            }
            Ok(n) if n < 1 => {
                errors.insert("limit".into(), format!("{n} is less than the minimum of 1"));
                MAX_LIMIT
            }
            Ok(n) => n as usize,
            Err(_) => {
                errors.insert("limit".into(), not_integer(raw));
                MAX_LIMIT
            }
        },
    };
    let offset = match q.last("offset").map(str::trim) {
        None | Some("") => 0,
        Some(raw) => match raw.parse::<i64>() {
            Ok(n) if n >= 0 => n as usize,
            Ok(n) => {
                errors.insert(
                    "offset".into(),
                    format!("{n} is less than the minimum of 0"),
                );
                0
            }
            Err(_) => {
                errors.insert("offset".into(), not_integer(raw));
                0
            }
        },
    };
    (limit, offset)
}

fn not_integer(raw: &str) -> String {
    format!("'{raw}' is not of type 'integer'")
}

fn integer(
    q: &QueryPairs,
    key: &str,
    echo: &mut Map<String, Value>,
    errors: &mut FieldErrors,
) -> Option<i64> {
    let raw = q.last(key)?.trim();
    if raw.is_empty() {
        return None;
    }
    match raw.parse::<i64>() {
        Ok(n) => {
            echo.insert(key.into(), Value::from(n));
            Some(n)
        }
        Err(_) => {
            errors.insert(key.into(), not_integer(raw));
            None
        }
    }
}

fn integer_list(
    q: &QueryPairs,
    key: &str,
    echo: &mut Map<String, Value>,
    errors: &mut FieldErrors,
) -> Option<Vec<i64>> {
    if !q.has(key) {
        return None;
    }
    let items = parse_list(q.all(key));
    let mut out = Vec::with_capacity(items.len());
    for item in &items {
        match item.parse::<i64>() {
            Ok(n) => out.push(n),
            Err(_) => {
                let raw = q.all(key).collect::<Vec<_>>().join(",");
                errors.insert(
                    key.into(),
                    format!("'{raw}' is not valid under any of the given schemas"),
                );
                return None;
            }
        }
    }
    echo.insert(key.into(), Value::from(out.clone()));
    Some(out)
}

fn range(
    q: &QueryPairs,
    key: &str,
    echo: &mut Map<String, Value>,
    errors: &mut FieldErrors,
) -> Option<(DateTime<Utc>, DateTime<Utc>)> {
    if !q.has(key) {
        return None;
    }
    let items = parse_list(q.all(key));
    let parsed: Vec<DateTime<Utc>> = items
        .iter()
        .filter_map(|s| parse_day_or_timestamp(s))
        .collect();
    if items.len() != 2 || parsed.len() != 2 {
        let raw = q.all(key).collect::<Vec<_>>().join(",");
        errors.insert(
            key.into(),
            format!("'{raw}' is not valid under any of the given schemas"),
        );
        return None;
    }
    echo.insert(key.into(), Value::from(items));
    Some((parsed[0], parsed[1]))
}

fn parse_day_or_timestamp(s: &str) -> Option<DateTime<Utc>> {
    parse_timestamp(s).or_else(|| {
        chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d")
            .ok()
            .and_then(|d| d.and_hms_opt(0, 0, 0))
            .map(|t| t.and_utc())
    })
}

/// Parses and validates every filter of `GET runs/`; the field errors make a 400.
pub fn run_filter(q: &QueryPairs, account_id: i64) -> Result<RunFilter, FieldErrors> {
    let mut errors = FieldErrors::new();
    let mut echo = Map::new();
    let (limit, offset) = pagination(q, &mut errors);
    echo.insert("limit".into(), Value::from(limit));
    echo.insert("offset".into(), Value::from(offset));
    echo.insert("state".into(), Value::from("all"));
    echo.insert("account_id".into(), Value::from(account_id));
    let job_definition_id = integer(q, "job_definition_id", &mut echo, &mut errors);
    let project_id = integer(q, "project_id", &mut echo, &mut errors);
    let environment_id = integer(q, "environment_id", &mut echo, &mut errors);
    let status = integer(q, "status", &mut echo, &mut errors);
    let pk = integer(q, "pk", &mut echo, &mut errors);
    let id_gt = integer(q, "id__gt", &mut echo, &mut errors);
    let status_in = integer_list(q, "status__in", &mut echo, &mut errors);
    let pk_in = integer_list(q, "pk__in", &mut echo, &mut errors);
    let created_at_range = range(q, "created_at__range", &mut echo, &mut errors);
    let finished_at_range = range(q, "finished_at__range", &mut echo, &mut errors);
    let order_by = q
        .last("order_by")
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .unwrap_or("id");
    let (descending, field) = match order_by.strip_prefix('-') {
        Some(f) => (true, f),
        None => (false, order_by),
    };
    let order_field = match field {
        "id" | "pk" => OrderField::Id,
        "created_at" => OrderField::CreatedAt,
        "finished_at" => OrderField::FinishedAt,
        other => {
            errors.insert(
                "order_by".into(),
                format!("'{other}' is not one of ['id', 'created_at', 'finished_at']"),
            );
            OrderField::Id
        }
    };
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(RunFilter {
        job_definition_id,
        project_id,
        environment_id,
        status,
        status_in,
        pk_in,
        pk,
        id_gt,
        created_at_range,
        finished_at_range,
        order_field,
        descending,
        order_by: order_by.to_string(),
        limit,
        offset,
        include: include_related(q),
        echo,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn include_related_accepts_every_spelling() {
        let want: BTreeSet<String> = ["trigger".to_string(), "job".to_string()].into();
        for raw in [
            "include_related=trigger,job",
            "include_related=%5B%22trigger%22%2C%22job%22%5D",
            "include_related=['trigger', 'job']",
            "include_related=trigger&include_related=job",
            "include_related[]=trigger&include_related[]=job",
            "include_related=%5B%27trigger%27%2C+%27job%27%5D",
        ] {
            assert_eq!(
                include_related(&QueryPairs::parse(Some(raw))),
                want,
                "{raw}"
            );
        }
        assert!(include_related(&QueryPairs::parse(Some("include_related="))).is_empty());
        assert!(include_related(&QueryPairs::parse(Some("include_related=[]"))).is_empty());
        assert!(include_related(&QueryPairs::parse(None)).is_empty());
    }

    #[test]
    fn run_filter_parses_lists_and_rejects_bad_values() {
        let q = QueryPairs::parse(Some("pk__in=[3,4]&status__in=1&status__in=2&order_by=-id&limit=2&offset=1&job_definition_id=7"));
        let f = run_filter(&q, 9).unwrap();
        assert_eq!(f.pk_in, Some(vec![3, 4]));
        assert_eq!(f.status_in, Some(vec![1, 2]));
        assert!(f.descending);
        assert_eq!((f.limit, f.offset), (2, 1));
        assert_eq!(f.echo["job_definition_id"], 7);
        assert_eq!(f.echo["account_id"], 9);

        let bad = run_filter(
            &QueryPairs::parse(Some(
                "status__in=DbtCloudJobRunStatus.NON_TERMINAL_STATUSES&limit=101",
            )),
            9,
        )
        .unwrap_err();
        assert!(bad["status__in"].contains("is not valid under any of the given schemas"));
        assert!(bad.contains_key("limit"));
    }
}
