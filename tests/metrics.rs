//! The metrics a manager records over a scripted run, read from a test
//! recorder (the target requires feature `metrics`; `.ci/run` runs it with
//! the feature on).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mcp_bounded_session::{BoundedSessionError, BoundedSessionManagerBuilder, CloseReason};
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use rmcp::transport::streamable_http_server::session::SessionManager;

/// Counters and gauges by `name{labels}`; histograms as their sample count.
fn values(snapshotter: &Snapshotter) -> BTreeMap<String, f64> {
    snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .map(|(key, _, _, value)| {
            let key = key.key();
            let labels: Vec<String> = key
                .labels()
                .map(|label| format!("{}={}", label.key(), label.value()))
                .collect();
            let name = if labels.is_empty() {
                key.name().to_owned()
            } else {
                format!("{}{{{}}}", key.name(), labels.join(","))
            };
            let value = match value {
                DebugValue::Counter(n) => n as f64,
                DebugValue::Gauge(x) => x.0,
                DebugValue::Histogram(samples) => samples.len() as f64,
            };
            (name, value)
        })
        .collect()
}

#[test]
fn a_scripted_run_records_creations_closes_refusals_and_durations() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let closes = Arc::new(Mutex::new(Vec::new()));
    metrics::with_local_recorder(&recorder, || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let seen = closes.clone();
            let manager = BoundedSessionManagerBuilder::new(2)
                .rate_limit(4, Duration::from_secs(3600))
                .on_close(move |id, reason, _lived| {
                    seen.lock().unwrap().push((id.clone(), reason));
                })
                .build();
            // Three creations at a cap of 2: the first is evicted.
            let (first, _t1) = manager.create_session().await.unwrap();
            let (second, _t2) = manager.create_session().await.unwrap();
            let (_third, _t3) = manager.create_session().await.unwrap();
            // A DELETE.
            manager.close_session(&second).await.unwrap();
            // The fourth creation is the last the rate limit allows.
            let (_fourth, _t4) = manager.create_session().await.unwrap();
            for _ in 0..2 {
                assert!(matches!(
                    manager.create_session().await,
                    Err(BoundedSessionError::RateLimited)
                ));
            }
            assert_eq!(
                *closes.lock().unwrap(),
                [(first, CloseReason::Evicted), (second, CloseReason::Closed)]
            );
            // The transports (the handlers) live until here.
        });
    });
    let values = values(&snapshotter);
    let expected: BTreeMap<String, f64> = [
        ("mcp_sessions_created_total", 4.0),
        ("mcp_sessions_closed_total{reason=evicted}", 1.0),
        ("mcp_sessions_closed_total{reason=closed}", 1.0),
        // The two left at the end: their handlers (transports) went away.
        ("mcp_sessions_closed_total{reason=handler_ended}", 2.0),
        ("mcp_sessions_refused_total{reason=rate_limited}", 2.0),
        // One duration per session that ended.
        ("mcp_session_duration_seconds", 4.0),
        ("mcp_sessions_max", 2.0),
    ]
    .into_iter()
    .map(|(name, value)| (name.to_owned(), value))
    .collect();
    for (name, value) in &expected {
        assert_eq!(values.get(name), Some(value), "{name} in {values:#?}");
    }
    // Every session ended: the gauge followed them down; and nothing else
    // was recorded.
    assert_eq!(values.get("mcp_sessions_active"), Some(&0.0), "{values:#?}");
    assert_eq!(values.len(), expected.len() + 1, "{values:#?}");
}

#[path = "common/mod.rs"]
mod common;

/// Request admission through real HTTP, on this thread's runtime (the
/// recorder is this thread's): the levels follow the requests and listen
/// streams up and down, and each refusal is counted by its reason.
#[test]
fn request_admission_records_levels_and_refusals() {
    use common::admission::{call, listen, open_listen};
    use common::{TestServer, eventually};
    use reqwest::StatusCode;
    use serde_json::json;

    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let level = |name: &str| values(&snapshotter).get(name).copied();
    metrics::with_local_recorder(&recorder, || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let (server, probe) = TestServer::start_admission(
                BoundedSessionManagerBuilder::new(10)
                    .max_requests_in_flight_per_client(1)
                    .max_listen_streams(1)
                    .build(),
            )
            .await;
            let a = server.client_from(common::mcp::loopback(2));
            let b = server.client_from(common::mcp::loopback(3));
            let held = {
                let request = call(&a, 1, "hold", json!({ "ms": 60_000 }));
                tokio::spawn(async move { request.send().await.unwrap().status() })
            };
            let manager = server.manager.clone();
            let timeout = Duration::from_secs(20);
            assert!(eventually(timeout, || manager.requests_in_flight() == 1).await);
            assert_eq!(level("mcp_requests_in_flight"), Some(1.0));
            let stream = open_listen(&a, 3).await;
            assert_eq!(level("mcp_listen_streams"), Some(1.0));

            // The refusals after the last snapshot (a snapshot drains the
            // counters).
            let refused = call(&a, 2, "echo", json!({ "text": "x" }))
                .send()
                .await
                .unwrap();
            assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
            let refused = listen(&b, 4).send().await.unwrap();
            assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);

            probe.release();
            assert_eq!(held.await.unwrap(), StatusCode::OK);
            drop(stream);
            assert!(eventually(timeout, || manager.requests_in_flight() == 0).await);
            assert!(eventually(timeout, || manager.listen_streams() == 0).await);
        });
    });
    let values = values(&snapshotter);
    for (name, value) in [
        ("mcp_requests_refused_total{reason=request_quota}", 1.0),
        ("mcp_requests_refused_total{reason=listen_at_capacity}", 1.0),
        ("mcp_requests_in_flight", 0.0),
        ("mcp_listen_streams", 0.0),
    ] {
        assert_eq!(values.get(name), Some(&value), "{name} in {values:#?}");
    }
    for reason in ["request_rate", "at_capacity", "listen_quota"] {
        let name = format!("mcp_requests_refused_total{{reason={reason}}}");
        assert_eq!(values.get(&name), None, "{name} in {values:#?}");
    }
}
