//! The body of `jobs/{id}/run/` (and `rerun/`) as dbt Cloud validates it: JSON or a form, `cause`
//! required and 1 to 255 characters, field errors in the 400's `data`.

use super::query::FieldErrors;
use super::scenario::MAX_COMMANDS;
use crate::dbt_cloud::wire::{TriggerRequest, MAX_CAUSE_CHARS};
use serde_json::{json, Map, Value};

/// Parses a trigger body (JSON, or a form). With `require_cause`, a missing cause is an error;
/// without, a body without cause means "no body" (`Ok(None)`).
pub(super) fn parse_trigger(
    body: &[u8],
    require_cause: bool,
) -> Result<Option<TriggerRequest>, FieldErrors> {
    let text = String::from_utf8_lossy(body);
    let value: Value = if text.trim().is_empty() {
        Value::Object(Map::new())
    } else {
        match serde_json::from_str(&text) {
            Ok(v) => v,
            Err(_) => form_to_json(&text),
        }
    };
    let Value::Object(object) = value else {
        return Err(FieldErrors::from([(
            "non_field_errors".to_string(),
            "Invalid data. Expected a dictionary.".to_string(),
        )]));
    };
    let field = |msg: &str| FieldErrors::from([("cause".to_string(), msg.to_string())]);
    match object.get("cause") {
        None | Some(Value::Null) if !require_cause => return Ok(None),
        None | Some(Value::Null) => return Err(cause_required()),
        Some(Value::String(s)) if s.trim().is_empty() => {
            return Err(field("This field may not be blank."))
        }
        Some(Value::String(s)) if s.chars().count() > MAX_CAUSE_CHARS => {
            return Err(field(&format!(
                "Ensure this field has no more than {MAX_CAUSE_CHARS} characters."
            )))
        }
        Some(Value::String(_)) => {}
        Some(_) => return Err(field("Not a valid string.")),
    }
    let request = serde_json::from_value::<TriggerRequest>(Value::Object(object))
        .map_err(|e| FieldErrors::from([("non_field_errors".to_string(), e.to_string())]))?;
    // Each command becomes a step whose id lives in the run's own id range.
    if request
        .steps_override
        .as_ref()
        .is_some_and(|s| s.len() > MAX_COMMANDS)
    {
        return Err(FieldErrors::from([(
            "steps_override".to_string(),
            format!("Ensure this field has no more than {MAX_COMMANDS} elements."),
        )]));
    }
    Ok(Some(request))
}

fn form_to_json(text: &str) -> Value {
    let mut object = Map::new();
    for (k, v) in url::form_urlencoded::parse(text.as_bytes()) {
        let value = if let Ok(n) = v.parse::<i64>() {
            Value::from(n)
        } else if v == "true" || v == "false" {
            Value::Bool(v == "true")
        } else {
            Value::from(v.into_owned())
        };
        if k == "steps_override" {
            let entry = object.entry(k.into_owned()).or_insert_with(|| json!([]));
            if let Value::Array(items) = entry {
                items.push(value);
            }
        } else {
            object.insert(k.into_owned(), value);
        }
    }
    Value::Object(object)
}

/// The 400 `data` for a trigger without `cause`.
pub(super) fn cause_required() -> FieldErrors {
    FieldErrors::from([("cause".to_string(), "This field is required.".to_string())])
}
