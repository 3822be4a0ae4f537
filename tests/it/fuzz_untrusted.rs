//! Fuzzes the two other places that read bytes from outside: the webhook receiver's signature
//! check and event decoding (`ops::webhook::signature_is_valid`, `WebhookEvent` and its run id, as
//! `receive` reads them), and the emulator's trigger body (JSON or form), POSTed over loopback HTTP
//! to a running in-process emulator.
//!
//! Properties: nothing panics; the receiver accepts the emulator's signature of exactly these bytes
//! and refuses it for other bytes or another secret; the emulator answers every body with 200 (a run
//! whose cause is the one sent) or 400 with field errors, always JSON, never a 5xx or a dropped
//! connection.

#![allow(clippy::unwrap_used)] // helpers of a test crate, not only #[test] fns

use crate::support::emulator;
use crate::support::fuzz;
use crate::support::fuzz::{Target, Verdict};
use baton::dbt_cloud::wire::WebhookEvent;
use baton::emulator::webhooks::signature;
use baton::ops::webhook::signature_is_valid;
use baton::secret::Secret;
use proptest::prelude::*;
use serde_json::{json, Value};

const SECRET: &str = "whsec-fuzz";

const DICTIONARY: &[&str] = &[
    "{",
    "}",
    "[",
    "]",
    "\"",
    ":",
    ",",
    "&",
    "=",
    "%",
    "%00",
    "%FF",
    "+",
    "null",
    "true",
    "1e400",
    "\"cause\":",
    "cause=",
    "\"steps_override\":",
    "steps_override=",
    "\"threads_override\":",
    "\"eventType\":",
    "\"job.run.completed\"",
    "\"runId\":",
    "\"9223372036854775808\"",
    "\"data\":",
    "\"eventId\":",
    "\\u0000",
    "\\ud800",
    "é",
];

fn check_webhook(bytes: &[u8]) -> Verdict {
    let secret = Secret::new(SECRET);
    let good = signature(SECRET, bytes);
    if !signature_is_valid(&secret, bytes, &good) {
        return Err("webhook signature refused: the emulator's own signature".into());
    }
    if signature_is_valid(&Secret::new("another"), bytes, &good) {
        return Err("webhook signature accepted: under another secret".into());
    }
    let mut other = bytes.to_vec();
    other.push(b' ');
    if signature_is_valid(&secret, &other, &good) {
        return Err("webhook signature accepted: for other bytes".into());
    }
    // The fuzzed bytes as a signature header, as the receiver reads `Authorization`.
    let header = String::from_utf8_lossy(&bytes[..bytes.len().min(80)]);
    let _ = signature_is_valid(&secret, bytes, &header);
    if let Ok(event) = serde_json::from_slice::<WebhookEvent>(bytes) {
        fuzz::count("bodies decoded as a webhook event");
        let _ = event.data.run_id.trim().parse::<i64>();
        let _ = event.event_type.starts_with("job.run.");
    }
    Ok(())
}

struct Emulator {
    runtime: tokio::runtime::Runtime,
    harness: emulator::Harness,
}

impl Emulator {
    fn start() -> Emulator {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let harness = runtime.block_on(emulator::Harness::start());
        Emulator { runtime, harness }
    }

    fn check(&self, bytes: &[u8]) -> Verdict {
        let form = bytes.len() % 2 == 1;
        let content_type = if form {
            "application/x-www-form-urlencoded"
        } else {
            "application/json"
        };
        let url = self.harness.url("jobs/100/run/");
        let request = self
            .harness
            .client
            .post(url)
            .header("Authorization", format!("Token {}", emulator::TOKEN))
            .header("Content-Type", content_type)
            .body(bytes.to_vec());
        let (status, text) = self.runtime.block_on(async {
            match request.send().await {
                Ok(response) => {
                    let status = response.status().as_u16();
                    (status, response.text().await.map_err(|e| e.to_string()))
                }
                Err(e) => (0, Err(e.to_string())),
            }
        });
        let text = text.map_err(|e| format!("emulator dropped the exchange: {e}"))?;
        let answer: Value = serde_json::from_str(&text)
            .map_err(|e| format!("emulator answer not JSON: status {status}: {e}: {text}"))?;
        match status {
            200 => {
                fuzz::count("trigger bodies accepted by the emulator");
                let cause = answer["data"]["trigger"]["cause"].as_str().unwrap_or("");
                if cause.trim().is_empty() || cause.chars().count() > 255 {
                    return Err(format!("emulator accepted a bad cause: {cause:?}"));
                }
            }
            400 => {
                fuzz::count("trigger bodies refused with 400");
                if !answer["data"].is_object() {
                    return Err(format!("emulator 400 without field errors: {answer}"));
                }
            }
            429 => fuzz::count("trigger bodies rate limited"),
            _ => return Err(format!("emulator answered {status}: {answer}")),
        }
        // Keep the rate limiter's window moving.
        self.harness.advance(1);
        Ok(())
    }
}

fn trigger_body() -> impl Strategy<Value = Vec<u8>> {
    let cause = prop_oneof![
        4 => "[a-z ]{1,20}".prop_map(Value::from),
        1 => Just(Value::from("")),
        1 => Just(Value::from(" ")),
        1 => Just(Value::from("x".repeat(255))),
        1 => Just(Value::from("é".repeat(256))),
        1 => Just(Value::Null),
        1 => any::<i64>().prop_map(Value::from),
        1 => Just(json!(["a"])),
    ];
    let field = prop::sample::select(vec![
        ("git_branch", json!("main")),
        ("git_sha", json!(12)),
        ("threads_override", json!(4)),
        ("threads_override", json!("four")),
        ("threads_override", json!(9_223_372_036_854_775_807i64)),
        ("steps_override", json!(["dbt run"])),
        ("steps_override", json!([])),
        ("steps_override", json!([1, null])),
        ("timeout_seconds_override", json!(-1)),
        ("generate_docs_override", json!("yes")),
        ("unknown", json!({"deep": [1]})),
    ]);
    (
        prop::option::weighted(0.9, cause),
        prop::collection::vec(field, 0..4),
        any::<bool>(),
    )
        .prop_map(|(cause, fields, as_form)| {
            let mut object = serde_json::Map::new();
            if let Some(cause) = cause {
                object.insert("cause".into(), cause);
            }
            for (k, v) in fields {
                object.insert(k.into(), v);
            }
            if as_form {
                let mut form = url::form_urlencoded::Serializer::new(String::new());
                for (k, v) in &object {
                    match v {
                        Value::Array(items) => {
                            for item in items {
                                form.append_pair(k, &item.to_string());
                            }
                        }
                        Value::String(s) => {
                            form.append_pair(k, s);
                        }
                        other => {
                            form.append_pair(k, &other.to_string());
                        }
                    }
                }
                let mut bytes = form.finish().into_bytes();
                // Odd lengths go as forms.
                if bytes.len().is_multiple_of(2) {
                    bytes.push(b'&');
                }
                bytes
            } else {
                let mut bytes = Value::Object(object).to_string().into_bytes();
                if bytes.len() % 2 == 1 {
                    bytes.push(b' ');
                }
                bytes
            }
        })
}

fn webhook_event() -> impl Strategy<Value = Vec<u8>> {
    (
        prop::sample::select(vec![
            "job.run.started",
            "job.run.completed",
            "job.run.errored",
            "job.other",
            "",
        ]),
        prop_oneof![
            (1i64..i64::MAX).prop_map(|n| n.to_string()),
            Just(" 12 ".to_string()),
            Just("-1".to_string()),
            Just("9223372036854775808".to_string()),
            Just("x".to_string()),
        ],
    )
        .prop_map(|(event_type, run_id)| {
            json!({
                "accountId": 1, "eventId": "wev_1", "timestamp": "2024-07-03T13:59:00Z",
                "eventType": event_type, "webhookName": "baton",
                "data": {"jobId": "100", "runId": run_id, "runStatus": "Success"}
            })
            .to_string()
            .into_bytes()
        })
}

#[test]
fn webhook_and_trigger_bodies_never_panic_and_answer_in_kind() {
    let emulator = Emulator::start();
    let check = |bytes: &[u8]| {
        check_webhook(bytes)?;
        emulator.check(bytes)
    };
    fuzz::run(
        Target {
            name: "untrusted",
            seeds: Vec::new(),
            dictionary: DICTIONARY,
            check: &check,
        },
        prop_oneof![3 => trigger_body(), 1 => webhook_event()].boxed(),
    );
}
