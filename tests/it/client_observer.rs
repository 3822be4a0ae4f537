//! The client tells an observer (the metrics) of every request by route and status, never by URL.

#![allow(clippy::unwrap_used)]

use crate::support::dbt::{cause, Dbt, JOB};
use baton::ids::RunId;
use std::sync::{Arc, Mutex};

#[tokio::test]
async fn every_request_reaches_the_observer_by_route_and_status() {
    let dbt = Dbt::start().await;
    let client = dbt.client();
    let seen: Arc<Mutex<Vec<(String, u16)>>> = Arc::default();
    {
        let seen = seen.clone();
        client.set_api_observer(Arc::new(move |endpoint, status| {
            seen.lock().unwrap().push((endpoint.to_string(), status))
        }));
    }
    // A clone shares the observer, as the daemon's clone of the client does.
    let clone = client.clone();
    let run = clone.trigger(JOB, &cause("observer")).await.unwrap();
    clone.get_run(run.id, &[]).await.unwrap();
    let missing = clone.get_run(RunId(1), &[]).await;
    assert!(missing.is_err());
    let seen = seen.lock().unwrap().clone();
    assert_eq!(
        seen,
        vec![
            ("jobs/{id}/run".to_string(), 200),
            ("runs/{id}".to_string(), 200),
            ("runs/{id}".to_string(), 404),
        ]
    );
}
