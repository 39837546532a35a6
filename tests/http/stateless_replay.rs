//! Protocol 2026-07-28 (no session) on one instance: its request streams
//! resume through a `MemoryEventStore` given to `stateless_event_store`,
//! and never replay a session's events.

use crate::common;

use std::sync::Arc;
use std::time::Duration;

use common::mcp::{
    STATELESS_VERSION, assert_rest_of_count, fetch_replay, first_three_progress,
    post_stateless_call,
};
use common::{TestServer, read_to_end};
use mcp_bounded_session::{BoundedSessionManager, MemoryEventStore};
use reqwest::StatusCode;
use serde_json::json;

async fn server_with_memory_store() -> TestServer {
    let store = MemoryEventStore::builder().max_events(1_000).build();
    let manager = BoundedSessionManager::builder(8)
        .stateless_event_store(Arc::new(store))
        .build();
    TestServer::start(manager).await
}

#[tokio::test]
async fn a_cut_stateless_call_resumes_with_every_remaining_event_once() {
    let _timed = common::load::timed().await;
    const STEPS: u64 = 10;
    let server = server_with_memory_store().await;
    let client = server.client();
    let response = post_stateless_call(
        &client,
        3,
        "count",
        json!({ "steps": STEPS, "delay_ms": 30 }),
        "cut",
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.headers().get("mcp-session-id").is_none());
    let last_seen = first_three_progress(response).await;
    // The tool goes on without its client; its events are kept.
    tokio::time::sleep(Duration::from_millis(30 * STEPS + 300)).await;
    let messages = fetch_replay(&client, None, STATELESS_VERSION, &last_seen).await;
    assert_rest_of_count(&messages, STEPS, 3, "cut");
}

#[tokio::test]
async fn without_a_store_a_stateless_get_is_not_allowed() {
    let server = TestServer::start(BoundedSessionManager::builder(8).build()).await;
    let client = server.client();
    let response = client.resume(None, STATELESS_VERSION, "anything#1-1").await;
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
}

#[tokio::test]
async fn a_stateless_get_never_replays_a_sessions_events() {
    // One store for every stream: sessions keep theirs in it too.
    let store: Arc<MemoryEventStore> = Arc::new(MemoryEventStore::default());
    let manager = BoundedSessionManager::builder(8).event_store(store).build();
    let server = TestServer::start(manager).await;
    let client = server.client();
    let session = client.initialize().await.unwrap();
    let mut reader = common::SseReader::new(client.open_standalone(&session).await);
    let (status, _) = client
        .request(
            &session,
            json!({ "jsonrpc": "2.0", "id": 2, "method": "tools/call",
                    "params": { "name": "announce", "arguments": { "count": 2 } } }),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let first = loop {
        let event = reader.next(Duration::from_secs(5)).await.expect("events");
        if let (Some(id), Some(_)) = (event.id, event.message) {
            break id;
        }
    };
    drop(reader);
    assert!(first.starts_with(&format!("{session}:")), "{first}");
    // The session itself replays it...
    let own = fetch_replay(&client, Some(&session), common::PROTOCOL_VERSION, &first).await;
    assert_eq!(own.len(), 1, "{own:?}");
    // ...a sessionless GET does not.
    let response = client.resume(None, STATELESS_VERSION, &first).await;
    assert_eq!(response.status(), StatusCode::OK);
    let (events, _) = read_to_end(response, Duration::from_secs(3)).await;
    assert!(events.iter().all(|e| e.message.is_none()), "{events:#?}");
}
