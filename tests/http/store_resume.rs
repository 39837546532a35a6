//! Resumes of a session whose events an event store keeps: a client that
//! only resumes (`GET` with `Last-Event-ID`, the polling pattern of a long,
//! silent tool call) keeps its session alive, as it does without a store;
//! an id that is no stored id is malformed, not another session's; a
//! session that ended replays nothing.

use crate::common;

use std::sync::Arc;
use std::time::Duration;

use common::{TestServer, parse_events};
use mcp_bounded_session::{
    BoundedSessionError, BoundedSessionManager, EventIdError, MemoryEventStore,
};
use reqwest::StatusCode;
use rmcp::transport::streamable_http_server::session::SessionManager;
use serde_json::json;

const IDLE: Duration = Duration::from_millis(1_500);

#[tokio::test]
async fn resumes_through_an_event_store_keep_the_session_from_timing_out() {
    let _timed = common::load::timed().await;
    let store = Arc::new(MemoryEventStore::default());
    let manager = BoundedSessionManager::builder(8)
        .event_store(store)
        .idle_timeout(IDLE)
        .build();
    let server = TestServer::start(manager).await;
    let client = server.client();
    let session = client.initialize().await.unwrap();
    let response = client
        .post(Some(common::mcp::session_header(&session)))
        .json(&json!({ "jsonrpc": "2.0", "id": 1, "method": "tools/call",
                       "params": { "name": "echo", "arguments": { "text": "hi" } } }))
        .send()
        .await
        .unwrap();
    let events = parse_events(&response.text().await.unwrap());
    let first = events
        .iter()
        .find_map(|event| event.id.clone())
        .expect("a stored event id");
    // Resumes only, for three idle timeouts.
    let until = tokio::time::Instant::now() + IDLE * 3;
    while tokio::time::Instant::now() < until {
        tokio::time::sleep(IDLE / 3).await;
        let resumed = client
            .resume(Some(&session), common::PROTOCOL_VERSION, &first)
            .await;
        assert_eq!(resumed.status(), StatusCode::OK, "the session timed out");
        drop(resumed);
    }
    assert!(client.works(&session).await, "the session timed out");
}

#[tokio::test]
async fn a_stored_resume_tells_a_malformed_id_from_another_sessions_and_an_ended_session() {
    let manager = BoundedSessionManager::builder(8)
        .event_store(Arc::new(MemoryEventStore::default()))
        .build();
    let (id, _transport) = manager.create_session().await.unwrap();
    let (other, _other) = manager.create_session().await.unwrap();
    let error = |result: Result<_, BoundedSessionError>| match result {
        Err(BoundedSessionError::InvalidEventId(error)) => Some(error),
        Err(error) if error.is_session_not_found() => None,
        Err(error) => panic!("{error}"),
        Ok(_) => panic!("a resume of a bad id replays nothing"),
    };
    assert_eq!(
        error(manager.resume(&id, "57".into()).await),
        Some(EventIdError::Malformed)
    );
    assert_eq!(
        error(manager.resume(&id, format!("{other}:common#1-1")).await),
        Some(EventIdError::OtherSession)
    );
    manager.close_session(&id).await.unwrap();
    assert_eq!(
        error(manager.resume(&id, format!("{id}:common#1-1")).await),
        None,
        "an ended session replays nothing"
    );
}
