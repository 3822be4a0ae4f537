//! Structure-aware HTTP responses for `tests/fuzz_client.rs`: statuses, `Retry-After` values and
//! dbt Cloud envelopes around runs, run lists and error bodies, good and bad.

use chrono::DateTime;
use proptest::prelude::*;
use serde_json::{json, Value};

/// The client's API token: bodies sometimes echo it, and no error may show it.
pub const TOKEN: &str = "dbtu_FuzzT0ken";

fn timestamp() -> impl Strategy<Value = Value> {
    prop_oneof![
        12 => (1_000_000_000i64..2_000_000_000, 0u32..1_000_000).prop_map(|(s, micros)| {
            let t = DateTime::from_timestamp(s, micros * 1000).unwrap();
            Value::from(t.format("%Y-%m-%d %H:%M:%S%.6f+00:00").to_string())
        }),
        2 => prop::sample::select(vec![
            "2024-07-03 13:59:00.653171+00:00",
            "2024-07-03T13:59:00Z",
            "2024-07-03 13:59:00",
            "2024-07-03T13:59:00.1+05:30",
            "+262143-12-31T23:59:59Z",
            "-262143-01-01T00:00:00Z",
            "9999-12-31 23:59:59.999999999+00:00",
            "0000-01-01 00:00:00+00:00",
            "2024-02-30 00:00:00+00:00",
            "2024-07-03 25:00:00+00:00",
            "2024-07-03 13:59:00+99:99",
            "",
            "now",
        ])
        .prop_map(Value::from),
        1 => (-300_000i32..300_000, 1u32..13, 1u32..29)
            .prop_map(|(y, m, d)| Value::from(format!("{y:04}-{m:02}-{d:02} 00:00:00+00:00"))),
        1 => Just(Value::Null),
        1 => any::<i64>().prop_map(Value::from),
    ]
}

fn id() -> impl Strategy<Value = Value> {
    prop_oneof![
        12 => (1i64..100_000_000_000_000).prop_map(Value::from),
        1 => any::<i64>().prop_map(Value::from),
        1 => Just(json!(9_223_372_036_854_775_808u64)),
        1 => Just(json!(1.5)),
        1 => Just(json!("12")),
        1 => Just(Value::Null),
    ]
}

fn run_object() -> impl Strategy<Value = Value> {
    (
        id(),
        prop_oneof![
            4 => prop::sample::select(vec![1i64, 2, 3, 10, 20, 30]).prop_map(Value::from),
            1 => any::<i64>().prop_map(Value::from),
            1 => Just(json!("10")),
        ],
        prop::collection::vec(timestamp(), 0..4),
        prop::option::of(id()),
        prop::option::weighted(0.3, prop::sample::select(vec![
            json!({"id": 1, "cause": "x"}),
            json!({"cause": TOKEN}),
            json!({"id": "x"}),
            json!(null),
            json!([]),
        ])),
        prop::option::weighted(0.3, prop::collection::vec(
            prop::sample::select(vec![
                json!({"id": 1, "status": 10, "name": "dbt run", "logs": "ok"}),
                json!({"status": 99}),
                json!({"started_at": "bad"}),
                json!(7),
            ]),
            0..3,
        )),
        prop::option::weighted(0.3, prop::sample::select(vec![
            json!({"id": 5, "execute_steps": ["dbt run"], "created_at": "2024-03-25T13:47:20.129690Z"}),
            json!({"id": 5, "execute_steps": null}),
            json!({"id": 5, "settings": {"threads": "many"}}),
        ])),
    )
        .prop_map(|(id, status, stamps, job_definition_id, trigger, steps, job)| {
            let mut run = json!({"id": id, "status": status});
            let keys = ["created_at", "finished_at", "started_at", "should_start_at"];
            for (key, stamp) in keys.iter().zip(stamps) {
                run[*key] = stamp;
            }
            if let Some(v) = job_definition_id {
                run["job_definition_id"] = v;
            }
            if let Some(v) = trigger {
                run["trigger"] = v;
            }
            if let Some(v) = steps {
                run["run_steps"] = Value::from(v);
            }
            if let Some(v) = job {
                run["job"] = v;
            }
            run
        })
}

fn body() -> impl Strategy<Value = Vec<u8>> {
    let data = prop_oneof![
        4 => run_object(),
        2 => prop::collection::vec(run_object(), 0..4).prop_map(Value::from),
        1 => Just(json!(["run/manifest.json", "run/run_results.json"])),
        1 => Just(Value::Null),
        1 => Just(json!({"cause": ["This field is required."], "limit": {"x": 1}})),
    ];
    let status = prop::option::of(prop::sample::select(vec![
        json!({"code": 200, "is_success": true, "user_message": "Success!", "developer_message": ""}),
        json!({"code": 429, "is_success": false, "user_message": "", "developer_message": format!("token {TOKEN}")}),
        json!({"code": "x"}),
        json!(null),
    ]));
    let extra = prop::option::of(prop::sample::select(vec![
        json!({"pagination": {"count": 1, "total_count": 1}}),
        json!({"pagination": {"count": -1, "total_count": 18446744073709551615u64}}),
        json!({"pagination": null, "filters": {}}),
        json!({"pagination": {"count": "x"}}),
    ]));
    prop_oneof![
        6 => (status, data, extra).prop_map(|(status, data, extra)| {
            let mut envelope = json!({"data": data});
            if let Some(s) = status {
                envelope["status"] = s;
            }
            if let Some(e) = extra {
                envelope["extra"] = e;
            }
            envelope.to_string().into_bytes()
        }),
        1 => Just(b"<html><body>502 Bad Gateway</body></html>".to_vec()),
        1 => Just(Vec::new()),
        1 => prop::collection::vec(any::<u8>(), 0..64),
    ]
}

fn retry_after() -> impl Strategy<Value = String> {
    prop_oneof![
        (0u64..100_000).prop_map(|s| s.to_string()),
        any::<u64>().prop_map(|s| s.to_string()),
        any::<f64>().prop_map(|s| s.to_string()),
        prop::sample::select(vec![
            "1e30",
            "1.5",
            "-1",
            "-0.0",
            "NaN",
            "inf",
            "18446744073709551616",
            "",
            " 7 ",
            "Wed, 21 Oct 2015 07:28:00 GMT",
            "Fri, 31 Dec 9999 23:59:59 GMT",
            "Thu, 01 Jan 1970 00:00:00 +2359",
            "Mon, 01 Jan 0001 00:00:00 -2359",
            "soon",
        ])
        .prop_map(str::to_string),
    ]
}

pub fn http_response() -> impl Strategy<Value = Vec<u8>> {
    (
        prop_oneof![
            6 => prop::sample::select(vec![200u16, 201, 400, 401, 403, 404, 408, 422, 429, 500, 502, 503, 504]),
            1 => 200u16..600,
        ],
        prop::option::of(retry_after()),
        body(),
        prop::sample::select(vec!["correct", "correct", "correct", "none", "short", "long"]),
    )
        .prop_map(|(status, retry_after, body, length)| {
            let mut out = format!("HTTP/1.1 {status} Reason\r\nContent-Type: application/json\r\n");
            if let Some(value) = retry_after {
                out += &format!("Retry-After: {value}\r\n");
            }
            match length {
                "correct" => out += &format!("Content-Length: {}\r\n", body.len()),
                "short" => out += &format!("Content-Length: {}\r\n", body.len() / 2),
                "long" => out += &format!("Content-Length: {}\r\n", body.len() + 10),
                _ => {}
            }
            out += "\r\n";
            let mut bytes = out.into_bytes();
            bytes.extend_from_slice(&body);
            bytes
        })
}
