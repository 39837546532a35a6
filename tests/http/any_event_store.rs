//! An `EventStore` written to rmcp's trait alone, whose ids (`event-1`,
//! `event-2`, ...) do not name their stream, shared by two instances: a
//! session restored on B replays what A stored, and no session replays
//! another's events.

use crate::common;

use std::sync::{Arc, Mutex};

use common::mcp::{session_header, tool_call_with_progress};
use common::{TestServer, TestSessionStore, parse_events};
use mcp_bounded_session::BoundedSessionManager;
use reqwest::StatusCode;
use rmcp::transport::streamable_http_server::StreamableHttpServerConfig;
use rmcp::transport::streamable_http_server::session::store::{EventStoreError, EventStream};
use rmcp::transport::streamable_http_server::session::{EventStore, ServerSseMessage};
use serde_json::{Value, json};

/// Events in one list for every stream, named by their position.
#[derive(Default)]
struct Numbered(Mutex<Vec<(String, ServerSseMessage)>>);

#[async_trait::async_trait]
impl EventStore for Numbered {
    async fn store_event(
        &self,
        stream_id: &str,
        event: &ServerSseMessage,
    ) -> Result<String, EventStoreError> {
        let mut events = self.0.lock().unwrap();
        events.push((stream_id.to_owned(), event.clone()));
        Ok(format!("event-{}", events.len()))
    }

    async fn replay_events_after(
        &self,
        last_event_id: &str,
    ) -> Result<EventStream, EventStoreError> {
        let events = self.0.lock().unwrap();
        let n = last_event_id
            .strip_prefix("event-")
            .and_then(|n| n.parse::<usize>().ok())
            .filter(|n| (1..=events.len()).contains(n))
            .ok_or_else(|| format!("no event {last_event_id}"))?;
        let stream = events[n - 1].0.clone();
        let after: Vec<ServerSseMessage> = (n..events.len())
            .filter(|&i| events[i].0 == stream)
            .map(|i| {
                let mut event = events[i].1.clone();
                event.event_id = Some(format!("event-{}", i + 1));
                event
            })
            .collect();
        Ok(Box::pin(futures::stream::iter(after)))
    }
}

const KEY: &str = "the fleet's event id key, shared";

async fn instance(events: &Arc<Numbered>, sessions: &Arc<TestSessionStore>) -> TestServer {
    let manager = BoundedSessionManager::builder(10)
        .event_store(events.clone())
        .event_id_key(KEY)
        .build();
    let mut config = StreamableHttpServerConfig::default();
    config.session_store = Some(sessions.clone());
    TestServer::start_with(manager, config).await
}

/// The ids and messages of a `count` call's stream in `session`.
async fn count(client: &common::Client, session: &str, id: u64) -> Vec<(String, Value)> {
    let response = client
        .post(Some(session_header(session)))
        .json(&tool_call_with_progress(
            id,
            "count",
            json!({ "steps": 4, "delay_ms": 1 }),
            "t",
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    parse_events(&response.text().await.unwrap())
        .into_iter()
        .filter_map(|event| Some((event.id?, event.message?)))
        .collect()
}

/// The messages a resume of `session` from `last` replays on `client`'s
/// instance (none when it is refused).
async fn replayed(client: &common::Client, session: &str, last: &str) -> Vec<Value> {
    let response = client
        .resume(Some(session), common::PROTOCOL_VERSION, last)
        .await;
    if response.status() != StatusCode::OK {
        return Vec::new();
    }
    let body = tokio::time::timeout(std::time::Duration::from_secs(5), response.text())
        .await
        .expect("a finished stream's replay ends")
        .unwrap();
    parse_events(&body)
        .into_iter()
        .filter_map(|event| event.message)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_with_ids_of_its_own_replays_across_instances_and_never_across_sessions() {
    let (events, sessions) = (
        Arc::new(Numbered::default()),
        Arc::new(TestSessionStore::default()),
    );
    let a = instance(&events, &sessions).await;
    let b = instance(&events, &sessions).await;
    let on_a = a.client();
    let mine = on_a.initialize().await.unwrap();
    let theirs = on_a.initialize().await.unwrap();
    let my_events = count(&on_a, &mine, 1).await;
    let their_events = count(&on_a, &theirs, 2).await;
    assert_eq!(my_events.len(), 5, "{my_events:?}");
    // Sent bound to their stream: `<stream>#@<tag>.event-N`.
    for (id, _) in &my_events {
        assert!(id.starts_with(&format!("{mine}:")), "{id}");
        assert!(id.contains("#@") && id.contains(".event-"), "{id}");
    }

    // Restored on B, the session replays A's events after the second.
    let on_b = b.client();
    let replay = replayed(&on_b, &mine, &my_events[1].0).await;
    let expected: Vec<Value> = my_events[2..].iter().map(|(_, m)| m.clone()).collect();
    assert_eq!(replay, expected);

    // Another session's id, as it was sent or put under my stream's name,
    // replays nothing.
    let (their_id, _) = &their_events[0];
    assert!(replayed(&on_b, &mine, their_id).await.is_empty());
    let (_, bound) = their_id.split_once("#@").unwrap();
    let my_stream = my_events[0].0.split_once("#@").unwrap().0;
    let forged = format!("{my_stream}#@{bound}");
    assert!(replayed(&on_b, &mine, &forged).await.is_empty());
    let store_id = bound.split_once('.').unwrap().1;
    assert!(
        replayed(&on_b, &mine, &format!("{my_stream}#{store_id}"))
            .await
            .is_empty()
    );
    assert!(replayed(&on_b, &mine, store_id).await.is_empty());
    // Its own session still replays it.
    assert_eq!(replayed(&on_b, &theirs, their_id).await.len(), 4);
}
