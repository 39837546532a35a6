//! A graceful drain through real HTTP, for both protocols: what it refuses,
//! what it lets finish, what it ends at once and what it cuts at the
//! deadline.

use crate::common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::mcp::{
    loopback, post_stateless_call, progress_of, result_text, tool_call_with_progress,
};
use common::{Client, TestServer, body_within, handler, sse_messages};
use mcp_bounded_session::{BoundedSessionManager, CloseReason, SessionId};
use reqwest::StatusCode;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use tower_layer::Layer;

type Closes = Arc<Mutex<Vec<(SessionId, CloseReason)>>>;

/// A server whose handlers count their `count` calls running in `running`,
/// and whose manager records every close.
async fn server(running: Arc<AtomicUsize>) -> (TestServer, Closes) {
    let closes = Closes::default();
    let manager = BoundedSessionManager::builder(10)
        .on_close({
            let closes = closes.clone();
            move |id, reason, _| closes.lock().unwrap().push((id.clone(), reason))
        })
        .build();
    let shutdown = CancellationToken::new();
    let service = StreamableHttpService::new(
        move || Ok(handler::DemoServer::counting_calls(running.clone())),
        manager.clone(),
        StreamableHttpServerConfig::default().with_cancellation_token(shutdown.child_token()),
    );
    let app = axum::Router::new().nest_service("/mcp", manager.layer().layer(service));
    (TestServer::serve(manager, app, shutdown).await, closes)
}

/// A `count` call of `steps` steps of 100 ms in `session`, sent.
async fn session_count(client: &Client, session: &str, id: u64, steps: u64) -> reqwest::Response {
    let call = tool_call_with_progress(
        id,
        "count",
        json!({ "steps": steps, "delay_ms": 100 }),
        &format!("t{id}"),
    );
    let response = client
        .post(Some(common::mcp::session_header(session)))
        .json(&call)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    response
}

/// The progress steps and the result text in an SSE body.
fn progress_and_result(body: &str) -> (Vec<u64>, Option<String>) {
    let messages = sse_messages(body);
    let progress = messages
        .iter()
        .filter(|m| m["method"] == "notifications/progress")
        .map(progress_of)
        .collect();
    let result = messages
        .iter()
        .find_map(|m| result_text(m).map(str::to_owned));
    (progress, result)
}

async fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    assert!(
        common::eventually(Duration::from_secs(5), &mut done).await,
        "timed out waiting until {what}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_lets_calls_in_flight_finish_refuses_new_work_and_ends_streams_at_once() {
    let _timed = common::load::timed().await;
    let running = Arc::new(AtomicUsize::new(0));
    let (server, closes) = server(running.clone()).await;
    let client = server.client_from(loopback(1));
    let session = client.initialize().await.unwrap();
    let standalone = client.open_standalone(&session).await;
    assert_eq!(standalone.status(), StatusCode::OK);
    // Two calls of 1 s in flight: one of a session, one of 2026-07-28.
    let session_call = session_count(&client, &session, 7, 10).await;
    let stateless_call = post_stateless_call(
        &client,
        8,
        "count",
        json!({ "steps": 10, "delay_ms": 100 }),
        "s8",
    )
    .await;
    assert_eq!(stateless_call.status(), StatusCode::OK);
    wait_until("both calls run", || running.load(Ordering::SeqCst) == 2).await;

    let manager = server.manager.clone();
    let drain = tokio::spawn(async move { manager.drain(Duration::from_secs(10)).await });
    wait_until("the drain starts", || server.manager.is_draining()).await;

    // The open stream ends at once, telling its client when to reconnect.
    let (body, ended) = body_within(standalone, Duration::from_secs(2)).await;
    assert!(ended, "the GET stream did not end: {body:?}");
    assert!(body.contains("retry: 1000"), "{body:?}");

    // New work goes elsewhere: 503 with Retry-After.
    let newcomer = server.client_from(loopback(2));
    let (status, _) = newcomer.initialize().await.unwrap_err();
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    let refused = post_stateless_call(&newcomer, 1, "echo", json!({ "text": "x" }), "n1").await;
    assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(refused.headers()["retry-after"], "1");
    let error: Value = refused.json().await.unwrap();
    assert_eq!(error["error"]["data"]["reason"], "draining", "{error}");
    let get = client
        .get_stream(Some(&session), common::PROTOCOL_VERSION)
        .send()
        .await
        .unwrap();
    assert_eq!(get.status(), StatusCode::SERVICE_UNAVAILABLE);
    // The session held here is still served.
    let (status, _) = client.request(&session, common::tools_list_body(9)).await;
    assert_eq!(status, StatusCode::OK);

    // Both calls finish, every step once and in order.
    for (call, id) in [(session_call, 7), (stateless_call, 8)] {
        let (body, ended) = body_within(call, Duration::from_secs(10)).await;
        assert!(ended, "call {id} did not end");
        let (progress, result) = progress_and_result(&body);
        assert_eq!(progress, (1..=10).collect::<Vec<_>>(), "call {id}");
        assert_eq!(result.as_deref(), Some("counted to 10"), "call {id}");
    }

    let summary = drain.await.unwrap();
    assert_eq!(summary.requests_cancelled, 0, "{summary:?}");
    // The two calls, the session's `tools/list` and the `initialize` the
    // manager refused (the layer let it through: it may have been for a
    // session held here); not the 2026-07-28 request the layer refused.
    assert_eq!(summary.requests_finished, 4, "{summary:?}");
    assert_eq!(summary.streams_ended, 1, "{summary:?}");
    assert_eq!(summary.sessions_closed, 1, "{summary:?}");
    assert_eq!(summary.sessions_busy_at_close, 0, "{summary:?}");
    assert!(summary.elapsed < Duration::from_secs(10), "{summary:?}");
    assert_eq!(
        closes.lock().unwrap().as_slice(),
        [(SessionId::from(session.as_str()), CloseReason::Drained)]
    );
    assert_eq!(server.manager.session_count(), 0);
    assert_eq!(running.load(Ordering::SeqCst), 0);
    // Still draining: there is no way back.
    let (status, _) = newcomer.initialize().await.unwrap_err();
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_that_outlive_the_deadline_are_cancelled_at_it() {
    let _timed = common::load::timed().await;
    let running = Arc::new(AtomicUsize::new(0));
    let (server, closes) = server(running.clone()).await;
    let client = server.client_from(loopback(3));
    let session = client.initialize().await.unwrap();
    // 100 s each: far past the deadline.
    let session_call = session_count(&client, &session, 1, 1_000).await;
    let stateless_call = post_stateless_call(
        &client,
        2,
        "count",
        json!({ "steps": 1_000, "delay_ms": 100 }),
        "s2",
    )
    .await;
    wait_until("both calls run", || running.load(Ordering::SeqCst) == 2).await;

    let started = std::time::Instant::now();
    let summary = server.manager.drain(Duration::from_millis(500)).await;
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(500), "{took:?}");
    assert!(took < Duration::from_secs(3), "{took:?}");
    assert_eq!(summary.requests_cancelled, 2, "{summary:?}");
    assert_eq!(summary.requests_finished, 0, "{summary:?}");
    assert_eq!(summary.sessions_closed, 1, "{summary:?}");
    assert_eq!(summary.sessions_busy_at_close, 1, "{summary:?}");
    for (call, id) in [(session_call, 1), (stateless_call, 2)] {
        let (body, ended) = body_within(call, Duration::from_secs(2)).await;
        assert!(ended, "call {id} was not cut");
        assert!(body.contains("retry: 1000"), "call {id}: {body:?}");
        let (progress, result) = progress_and_result(&body);
        assert!(
            !progress.is_empty() && result.is_none(),
            "call {id}: {body:?}"
        );
    }
    // Both handlers saw the cancellation: nothing runs on.
    wait_until("both handlers stop", || running.load(Ordering::SeqCst) == 0).await;
    assert_eq!(
        closes.lock().unwrap().as_slice(),
        [(SessionId::from(session.as_str()), CloseReason::Drained)]
    );
    assert_eq!(server.manager.session_count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_with_nothing_in_flight_returns_at_once() {
    let _timed = common::load::timed().await;
    let (server, _) = server(Arc::new(AtomicUsize::new(0))).await;
    let client = server.client_from(loopback(4));
    let session = client.initialize().await.unwrap();
    assert!(client.works(&session).await);
    let summary = server.manager.drain(Duration::from_secs(30)).await;
    assert!(summary.elapsed < Duration::from_secs(2), "{summary:?}");
    assert_eq!(summary.sessions_closed, 1, "{summary:?}");
    assert_eq!(summary.requests_cancelled, 0, "{summary:?}");
    assert_eq!(client.status_of(&session).await, StatusCode::NOT_FOUND);
}
