//! Sessions restored from rmcp's `SessionStore` count against the cap and
//! the rate limit, and rmcp's late closing call for an evicted session's
//! handler does not close the restored session.

use crate::common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{TestServer, assert_conserved, eventually};
use mcp_bounded_session::{BoundedSessionManagerBuilder, CloseReason};
use reqwest::StatusCode;
use reqwest::header::HeaderValue;
use rmcp::transport::streamable_http_server::StreamableHttpServerConfig;
use rmcp::transport::streamable_http_server::session::SessionManager;
use serde_json::json;

fn config_with_store() -> StreamableHttpServerConfig {
    let mut config = StreamableHttpServerConfig::default();
    config.session_store = Some(Arc::new(common::TestSessionStore::default()));
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restored_session_survives_the_evicted_handlers_late_close() {
    let _timed = common::load::timed().await;
    let closes: Arc<Mutex<Vec<(String, CloseReason)>>> = Arc::default();
    let manager = BoundedSessionManagerBuilder::new(2)
        .on_close({
            let closes = closes.clone();
            move |id, reason, _| closes.lock().unwrap().push((id.to_string(), reason))
        })
        .build();
    let server = TestServer::start_with(manager, config_with_store()).await;
    let client = server.client();
    let a = client.initialize().await.unwrap();
    let reasons_of = |id: &str| -> Vec<CloseReason> {
        let closes = closes.lock().unwrap();
        closes
            .iter()
            .filter(|(c, _)| c == id)
            .map(|(_, r)| *r)
            .collect()
    };

    // A tool call keeps A's handler running for 2 s; rmcp lets it finish
    // before it closes A by id. Its response is dropped once its headers
    // came, so that A is idle (evictable) while the handler runs.
    let started = tokio::time::Instant::now();
    let pushes = server.manager.stats().queue_pushes;
    let response = client
        .post(Some(HeaderValue::from_str(&a).unwrap()))
        .json(&json!({"jsonrpc": "2.0", "id": 9, "method": "tools/call",
                      "params": {"name": "count", "arguments": {"steps": 20, "delay_ms": 100}}}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    drop(response);
    // Idle again: the end of its request moved A to the tail.
    assert!(
        eventually(Duration::from_secs(2), || server
            .manager
            .stats()
            .queue_pushes
            > pushes)
        .await
    );
    client.initialize().await.unwrap();
    client.initialize().await.unwrap();
    assert_eq!(reasons_of(&a), [CloseReason::Evicted], "A was not evicted");
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "the handler ended"
    );
    assert_eq!(
        client.status_of(&a).await,
        StatusCode::OK,
        "A restored on use"
    );
    assert!(client.works(&a).await, "A was not restored");

    // The evicted handler ends (2 s), then rmcp closes A by id.
    tokio::time::sleep_until(started + Duration::from_secs(5)).await;
    // Asked of the manager directly: a request would restore A again.
    assert!(
        server.manager.has_session(&a.clone().into()).await.unwrap(),
        "the evicted handler's late close killed the restored session"
    );
    assert_eq!(reasons_of(&a), [CloseReason::Evicted]);
    assert!(client.works(&a).await);
    assert_eq!(server.manager.session_count(), 2);
    assert_conserved(&server.manager);

    // A DELETE still closes the restored session.
    assert!(client.delete(&a).await.is_success());
    assert!(
        eventually(Duration::from_secs(2), || server.manager.session_count()
            == 1)
        .await
    );
    assert_eq!(reasons_of(&a), [CloseReason::Evicted, CloseReason::Closed]);
}

#[tokio::test]
async fn restores_are_rate_limited_like_creations() {
    let server = TestServer::start_with(
        BoundedSessionManagerBuilder::new(1)
            .rate_limit(2, Duration::from_secs(60))
            .build(),
        config_with_store(),
    )
    .await;
    let client = server.client();
    let a = client.initialize().await.unwrap();
    let b = client.initialize().await.unwrap(); // evicts A
    assert_eq!(client.status_of(&a).await, StatusCode::TOO_MANY_REQUESTS);
    assert!(client.works(&b).await, "a refused restore evicted B");
    assert_eq!(server.manager.session_count(), 1);
    assert_conserved(&server.manager);
}
