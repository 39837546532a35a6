//! Parking through real HTTP: a session evicted at the cap, or idle for
//! `park_after`, gives up its live copy to a `MemorySessionStore`, and its
//! next request restores it under the same `Mcp-Session-Id`, without a new
//! `initialize`; an idle timeout and a DELETE still end it for good; the
//! store stays bounded; a refused restore loses nothing; bound sessions
//! stay their client's.

use crate::common;

use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{TestServer, eventually};
use mcp_bounded_session::{
    AtCapacity, BoundedSessionManager, BoundedSessionManagerBuilder, CloseReason,
    MemorySessionStore,
};
use reqwest::StatusCode;
use rmcp::transport::streamable_http_server::StreamableHttpServerConfig;
use serde_json::json;

/// A server of two slots whose manager (from `build`, given the store)
/// parks in a fresh store of `max_parked` entries, the same store as
/// rmcp's.
async fn parking_server(
    max_parked: usize,
    build: impl FnOnce(
        BoundedSessionManagerBuilder,
        &MemorySessionStore,
    ) -> BoundedSessionManagerBuilder,
) -> (TestServer, MemorySessionStore) {
    server_of(2, max_parked, build).await
}

/// [`parking_server`] of `cap` slots.
pub(crate) async fn server_of(
    cap: usize,
    max_parked: usize,
    build: impl FnOnce(
        BoundedSessionManagerBuilder,
        &MemorySessionStore,
    ) -> BoundedSessionManagerBuilder,
) -> (TestServer, MemorySessionStore) {
    let store = MemorySessionStore::builder().max_parked(max_parked).build();
    let manager = build(BoundedSessionManager::builder(cap), &store)
        .park_in(&store)
        .build();
    let mut config = StreamableHttpServerConfig::default();
    config.session_store = Some(Arc::new(store.clone()));
    (TestServer::start_with(manager, config).await, store)
}

pub(crate) fn loopback(n: u8) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 0, n)
}

/// An `echo` call in `session`: its status (a `200` checked to be the
/// tool's answer, not a new `initialize`'s).
pub(crate) async fn echo(client: &common::Client, session: &str, id: u64) -> StatusCode {
    let (status, answered) = racing_echo(client, session, id).await;
    assert!(status != StatusCode::OK || answered, "{id} not answered");
    status
}

/// An `echo` call in `session` whose answer may be cut short (a DELETE
/// racing it ends its stream): its status and whether the tool answered.
pub(crate) async fn racing_echo(
    client: &common::Client,
    session: &str,
    id: u64,
) -> (StatusCode, bool) {
    let (status, messages) = client
        .request(
            session,
            json!({ "jsonrpc": "2.0", "id": id, "method": "tools/call",
                    "params": { "name": "echo", "arguments": { "text": "hi" } } }),
        )
        .await;
    let answered = messages
        .iter()
        .any(|m| m["id"] == json!(id) && m["result"]["content"][0]["text"] == "hi");
    (status, answered)
}

/// A manager of two slots: the third session evicts the first, which is
/// parked (the hook hears it) and comes back on its next request, same id,
/// no new `initialize` (the hook hears that too), evicting the least
/// recently active of the others, parked in turn.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_evicted_session_comes_back_under_its_id() {
    let _timed = common::load::timed().await;
    let events: Arc<Mutex<Vec<String>>> = Arc::default();
    let (server, store) = parking_server(100, |builder, _| {
        let (parked, restored) = (events.clone(), events.clone());
        builder
            .on_park(move |id, reason| parked.lock().unwrap().push(format!("park {id} {reason}")))
            .on_restore(move |id| restored.lock().unwrap().push(format!("restore {id}")))
    })
    .await;
    let client = server.client_from(loopback(2));
    let first = client.initialize().await.unwrap();
    assert_eq!(echo(&client, &first, 1).await, StatusCode::OK);
    let second = client.initialize().await.unwrap();
    let third = client.initialize().await.unwrap();
    assert_eq!(store.parked(), 1, "the first was parked");
    assert_eq!(server.manager.session_count(), 2);

    assert_eq!(echo(&client, &first, 2).await, StatusCode::OK);
    assert_eq!(server.manager.session_count(), 2, "the cap holds");
    assert_eq!(store.parked(), 1, "the second took its place");
    assert_eq!(echo(&client, &second, 3).await, StatusCode::OK);
    assert_eq!(echo(&client, &third, 4).await, StatusCode::OK);
    let events = events.lock().unwrap().clone();
    // The restore evicted (parked) the second before it admitted the
    // first.
    assert_eq!(
        &events[..3],
        [
            format!("park {first} Evicted"),
            format!("park {second} Evicted"),
            format!("restore {first}"),
        ],
        "{events:?}"
    );
}

/// `park_after` parks an idle session (not a busy one) and its next
/// request brings it back; the idle timeout, counted from its last
/// activity, ends it for good, parked or not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn park_after_parks_idle_sessions_and_the_idle_timeout_still_ends_them() {
    let _timed = common::load::timed().await;
    let closes: Arc<Mutex<Vec<CloseReason>>> = Arc::default();
    let (server, store) = parking_server(100, |builder, _| {
        let closes = closes.clone();
        builder
            .idle_timeout(Duration::from_millis(1_500))
            .park_after(Duration::from_millis(200))
            .on_close(move |_, reason, _| closes.lock().unwrap().push(reason))
    })
    .await;
    let client = server.client_from(loopback(3));
    let session = client.initialize().await.unwrap();
    // Busy for 600 ms: not parked while its call runs.
    let (status, _) = client
        .request(
            &session,
            json!({ "jsonrpc": "2.0", "id": 1, "method": "tools/call",
                    "params": { "name": "count", "arguments": { "steps": 6, "delay_ms": 100 } } }),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(store.parked(), 0, "parked while its call ran");
    assert!(
        eventually(Duration::from_secs(3), || store.parked() == 1).await,
        "not parked once idle"
    );
    assert_eq!(server.manager.session_count(), 0, "its slot is free");
    assert_eq!(closes.lock().unwrap().as_slice(), [CloseReason::Parked]);
    assert_eq!(echo(&client, &session, 2).await, StatusCode::OK);
    assert_eq!(store.parked(), 0);

    // Idle 1.5 s from here: parked at 200 ms, gone at 1.5 s.
    assert!(eventually(Duration::from_secs(3), || store.parked() == 1).await);
    tokio::time::sleep(Duration::from_millis(1_600)).await;
    assert_eq!(client.status_of(&session).await, StatusCode::NOT_FOUND);
    assert_eq!(store.parked(), 0, "the expired entry is gone");
}

/// Twice `max_parked` sessions parked: the least recently parked are
/// dropped (their ids answer 404), the store never holds more than
/// `max_parked`, the newest come back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_keeps_at_most_max_parked_sessions() {
    let _timed = common::load::timed().await;
    let (server, store) = parking_server(3, |builder, _| builder).await;
    let client = server.client_from(loopback(4));
    let mut sessions = Vec::new();
    for _ in 0..8 {
        sessions.push(client.initialize().await.unwrap());
        assert!(store.parked() <= 3, "{} parked", store.parked());
    }
    // Two live (the newest), three parked, three dropped.
    assert_eq!(store.parked(), 3);
    for dropped in &sessions[..3] {
        assert_eq!(client.status_of(dropped).await, StatusCode::NOT_FOUND);
    }
    for parked in &sessions[3..6] {
        assert_eq!(echo(&client, parked, 1).await, StatusCode::OK);
    }
}

/// A DELETE of a parked session removes it: 404 afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_parked_session_is_gone() {
    let _timed = common::load::timed().await;
    let (server, store) = parking_server(10, |builder, _| builder).await;
    let client = server.client_from(loopback(5));
    let first = client.initialize().await.unwrap();
    client.initialize().await.unwrap();
    client.initialize().await.unwrap();
    assert_eq!(store.parked(), 1);
    assert!(client.delete(&first).await.is_success());
    assert_eq!(store.parked(), 0);
    assert_eq!(client.status_of(&first).await, StatusCode::NOT_FOUND);
}

/// With sessions bound to their client, a parked session is its creator's:
/// another client's request or DELETE with its id answers 404 and leaves
/// it parked; its creator brings it back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parked_session_stays_bound_to_its_client() {
    let _timed = common::load::timed().await;
    let (server, store) =
        parking_server(10, |builder, _| builder.bind_sessions_to_client(true)).await;
    let owner = server.client_from(loopback(6));
    let other = server.client_from(loopback(7));
    let first = owner.initialize().await.unwrap();
    other.initialize().await.unwrap();
    other.initialize().await.unwrap();
    assert_eq!(store.parked(), 1);
    assert_eq!(other.status_of(&first).await, StatusCode::NOT_FOUND);
    assert_eq!(other.delete(&first).await, StatusCode::NOT_FOUND);
    assert_eq!(store.parked(), 1, "still parked");
    assert_eq!(echo(&owner, &first, 1).await, StatusCode::OK);
}

/// At a full cap that refuses (every slot busy or `AtCapacity::Refuse`), a
/// restore is refused with 503 and `Retry-After`, and the session stays
/// parked: once a slot is free, it comes back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_restore_loses_nothing() {
    let _timed = common::load::timed().await;
    let (server, store) = parking_server(10, |builder, _| {
        builder
            .at_capacity(AtCapacity::Refuse)
            .idle_timeout(Duration::from_secs(60))
            .park_after(Duration::from_millis(800))
    })
    .await;
    let client = server.client_from(loopback(8));
    let parked = client.initialize().await.unwrap();
    assert!(eventually(Duration::from_secs(3), || store.parked() == 1).await);
    // Two new sessions fill the cap (for 800 ms, until they are parked).
    let a = client.initialize().await.unwrap();
    let b = client.initialize().await.unwrap();
    let response = client
        .post(Some(
            reqwest::header::HeaderValue::from_str(&parked).unwrap(),
        ))
        .json(&json!({ "jsonrpc": "2.0", "id": 1, "method": "tools/list" }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(response.headers().contains_key("retry-after"));
    assert_eq!(store.parked(), 1, "the refused restore gave the entry back");
    assert!(client.delete(&a).await.is_success());
    assert_eq!(echo(&client, &parked, 2).await, StatusCode::OK);
    assert!(client.delete(&b).await.is_success());
}

/// rmcp's own client: its session, evicted at a cap of one by another
/// client's `initialize`, is restored by its next call: the call is
/// answered, the client never initialized again (one `initialize` in the
/// restore hook's count: none from this client), and the id is the one it
/// had (the restore hook saw it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rmcp_clients_evicted_session_answers_its_next_call() -> anyhow::Result<()> {
    use rmcp::ServiceExt;
    use rmcp::model::CallToolRequestParams;
    use rmcp::transport::StreamableHttpClientTransport;

    let _timed = common::load::timed().await;
    let restored: Arc<Mutex<Vec<String>>> = Arc::default();
    let parked: Arc<Mutex<Vec<String>>> = Arc::default();
    let store = MemorySessionStore::default();
    let manager = BoundedSessionManager::builder(1)
        .park_in(&store)
        .on_park({
            let parked = parked.clone();
            move |id, _| parked.lock().unwrap().push(id.to_string())
        })
        .on_restore({
            let restored = restored.clone();
            move |id| restored.lock().unwrap().push(id.to_string())
        })
        .build();
    let mut config = StreamableHttpServerConfig::default();
    config.session_store = Some(Arc::new(store.clone()));
    let server = TestServer::start_with(manager, config).await;
    let client = ().serve(StreamableHttpClientTransport::from_uri(server.url.clone())).await?;
    let echo = || {
        CallToolRequestParams::new("echo")
            .with_arguments(json!({ "text": "hello" }).as_object().unwrap().clone())
    };
    assert_eq!(
        client.call_tool(echo()).await?.content[0]
            .as_text()
            .unwrap()
            .text,
        "hello"
    );

    // Another client's session takes the only slot.
    let other = server.client_from(loopback(9));
    other.initialize().await.unwrap();
    assert!(eventually(Duration::from_secs(3), || store.parked() == 1).await);
    let ours = parked.lock().unwrap()[0].clone();

    let answer = client.call_tool(echo()).await?;
    assert_eq!(answer.content[0].as_text().unwrap().text, "hello");
    assert_eq!(
        restored.lock().unwrap().as_slice(),
        [ours],
        "restored under its id"
    );
    client.cancel().await?;
    Ok(())
}

/// A session whose client holds its `GET` stream open is not parked by
/// `park_after`, however idle; once the `GET` is gone, it is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn park_after_leaves_a_session_with_an_open_stream_live() {
    let _timed = common::load::timed().await;
    let (server, store) = parking_server(10, |builder, _| {
        builder
            .idle_timeout(Duration::from_secs(60))
            .park_after(Duration::from_millis(200))
    })
    .await;
    let client = server.client_from(loopback(11));
    let session = client.initialize().await.unwrap();
    let get = client.open_standalone(&session).await;
    assert_eq!(get.status(), StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(store.parked(), 0, "parked under its open GET");
    assert_eq!(server.manager.session_count(), 1);
    drop(get);
    assert!(
        eventually(Duration::from_secs(3), || store.parked() == 1).await,
        "not parked once its GET closed"
    );
    assert_eq!(echo(&client, &session, 1).await, StatusCode::OK);
}

/// Eight requests at once for one parked session (rmcp serializes its
/// restores of one id): all answered, one restore, one live copy, the cap
/// held, the store empty.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_racing_for_one_parked_session_restore_it_once() {
    let _timed = common::load::timed().await;
    let restores = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (server, store) = parking_server(10, |builder, _| {
        let restores = restores.clone();
        builder.on_restore(move |_| {
            restores.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        })
    })
    .await;
    let client = server.client_from(loopback(12));
    let parked = client.initialize().await.unwrap();
    client.initialize().await.unwrap();
    client.initialize().await.unwrap();
    assert_eq!(store.parked(), 1);
    let calls: Vec<_> = (0..8)
        .map(|n| {
            let (client, parked) = (client.clone(), parked.clone());
            tokio::spawn(async move { echo(&client, &parked, 100 + n).await })
        })
        .collect();
    for call in calls {
        assert_eq!(call.await.unwrap(), StatusCode::OK);
    }
    assert_eq!(restores.load(std::sync::atomic::Ordering::SeqCst), 1);
    assert_eq!(server.manager.session_count(), 2);
    assert_eq!(
        store.parked(),
        1,
        "the restore parked the least recently active"
    );
}

/// A client at its quota (one session): its parked session's restore
/// replaces (parks) its own live one, never another client's; both come
/// back in turn, nothing lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restore_at_the_clients_quota_parks_its_own_other_session() {
    let _timed = common::load::timed().await;
    let (server, store) = parking_server(10, |builder, _| {
        builder
            .max_sessions_per_client(1)
            .idle_timeout(Duration::from_secs(60))
            .park_after(Duration::from_millis(200))
    })
    .await;
    let client = server.client_from(loopback(13));
    let other = server.client_from(loopback(14));
    let first = client.initialize().await.unwrap();
    assert!(eventually(Duration::from_secs(3), || store.parked() == 1).await);
    let second = client.initialize().await.unwrap();
    let others = other.initialize().await.unwrap();
    // Restoring the first replaces the second (the client's quota is one).
    assert_eq!(echo(&client, &first, 1).await, StatusCode::OK);
    assert_eq!(echo(&other, &others, 2).await, StatusCode::OK);
    assert_eq!(echo(&client, &second, 3).await, StatusCode::OK);
    assert_eq!(echo(&client, &first, 4).await, StatusCode::OK);
    assert!(server.manager.session_count() <= 2);
}

/// Sessions parked 1 ms after they go quiet (the conformance suite's
/// parking run): each round, a client's notification, call and `GET`
/// arrive at once for its parked session, as the TypeScript SDK's client
/// sends them after its handshake. One request restores the session, the
/// others find it not live and wait for that restore (rmcp runs one at a
/// time), then reach it: all are answered, never `404`, however the
/// restore, the first request's end and `park_after` interleave (the
/// interleavings that once answered `404` are pinned one by one by the
/// manager's and the session's unit tests; this checks the whole path).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_arriving_together_at_a_parked_session_are_all_answered() {
    let _timed = common::load::timed().await;
    let restores = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (server, _store) = parking_server(100, |builder, _| {
        let restores = restores.clone();
        builder
            .park_after(Duration::from_millis(1))
            .on_restore(move |_| {
                restores.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            })
    })
    .await;
    // Two sessions: the cap's two slots (a third would be refused while
    // both are busy, a `503` that is not the subject here).
    let mut clients = Vec::new();
    for n in 0..2u8 {
        let client = server.client_from(loopback(20 + n));
        let session = client.initialize().await.unwrap();
        clients.push(tokio::spawn(async move {
            let mut statuses = Vec::new();
            for round in 0..8u64 {
                // Parked by now (a restored copy stays 100 ms at least).
                tokio::time::sleep(Duration::from_millis(150)).await;
                let notified = client.request(
                    &session,
                    json!({ "jsonrpc": "2.0", "method": "notifications/roots/list_changed" }),
                );
                let called = echo(&client, &session, round);
                let listened = async { client.open_standalone(&session).await.status() };
                let (notified, called, listened) = tokio::join!(notified, called, listened);
                statuses.push((notified.0, called, listened));
            }
            statuses
        }));
    }
    for client in clients {
        let statuses = client.await.unwrap();
        assert!(
            statuses.iter().all(|(notified, called, listened)| {
                *notified == StatusCode::ACCEPTED
                    && *called == StatusCode::OK
                    && *listened == StatusCode::OK
            }),
            "{statuses:?}"
        );
    }
    let restores = restores.load(std::sync::atomic::Ordering::SeqCst);
    assert!(restores >= 16, "{restores} restores: sessions did not park");
}
