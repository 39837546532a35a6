#![cfg(feature = "redis")]
//! The Redis stores against a real Redis: the event store's ids, replays,
//! trimming and TTLs through rmcp's traits; the session store's DELETE; and,
//! through in-process servers, isolation between sessions, a Redis outage
//! and a DELETE the pub/sub missed.
//!
//! Every test uses a key prefix of its own on the shared Redis
//! (`common::redis_server::SHARED_URL`), except the outage test, which
//! stops and restarts a private `redis-server`.

mod common;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::redis_server::{PrivateRedis, SHARED_URL, clean, connection, keys, unique_prefix};
use common::{Client, SseReader, TestServer};
use futures::StreamExt;
use mcp_bounded_session::{BoundedSessionManager, RedisStores, StoreError};
use reqwest::StatusCode;
use rmcp::model::{InitializeRequestParams, ServerJsonRpcMessage};
use rmcp::transport::streamable_http_server::StreamableHttpServerConfig;
use rmcp::transport::streamable_http_server::session::store::{EventStoreError, SessionState};
use rmcp::transport::streamable_http_server::session::{EventStore, ServerSseMessage};
use serde_json::{Value, json};

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

async fn stores(url: &str, prefix: &str, ttl: Option<Duration>) -> RedisStores {
    let mut builder = RedisStores::builder(url).prefix(prefix);
    if let Some(ttl) = ttl {
        builder = builder.ttl(ttl);
    }
    builder.connect().await.expect("a Redis URL")
}

fn init_params() -> InitializeRequestParams {
    serde_json::from_value(common::initialize_body()["params"].clone()).unwrap()
}

fn session_state() -> SessionState {
    SessionState::new(init_params())
}

fn notification_json(n: usize) -> Value {
    json!({
        "jsonrpc": "2.0",
        "method": "notifications/resources/updated",
        "params": { "uri": format!("demo://test/{n}") }
    })
}

/// An event carrying notification `n`.
fn message(n: usize) -> ServerSseMessage {
    let mut event = ServerSseMessage::default();
    let message: ServerJsonRpcMessage = serde_json::from_value(notification_json(n)).unwrap();
    event.message = Some(Arc::new(message));
    event
}

fn retry(ms: u64) -> ServerSseMessage {
    let mut event = ServerSseMessage::default();
    event.retry = Some(Duration::from_millis(ms));
    event
}

/// The JSON of an event's message, if any.
fn json_of(event: &ServerSseMessage) -> Option<Value> {
    event
        .message
        .as_ref()
        .map(|message| serde_json::to_value(&**message).unwrap())
}

async fn store(store: &Arc<dyn EventStore>, stream: &str, event: &ServerSseMessage) -> String {
    store
        .store_event(stream, event)
        .await
        .unwrap_or_else(|error| panic!("store_event({stream:?}) failed: {error}"))
}

async fn replay(
    store: &Arc<dyn EventStore>,
    id: &str,
) -> Result<Vec<ServerSseMessage>, EventStoreError> {
    let stream = store.replay_events_after(id).await?;
    Ok(stream.collect().await)
}

fn store_error(error: &EventStoreError) -> &StoreError {
    error
        .downcast_ref::<StoreError>()
        .unwrap_or_else(|| panic!("not a StoreError: {error:?}"))
}

/// `<stream>#<generation>-<sequence>`, strictly.
fn parse_id(id: &str) -> (String, u64, u64) {
    let (stream, position) = id.rsplit_once('#').expect("an id has a '#'");
    let (generation, sequence) = position.split_once('-').expect("and a '-'");
    (
        stream.to_owned(),
        generation.parse().expect("a numeric generation"),
        sequence.parse().expect("a numeric sequence"),
    )
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

async fn pttl(url: &str, key: &str) -> i64 {
    redis::cmd("PTTL")
        .arg(key)
        .query_async(&mut connection(url).await)
        .await
        .unwrap()
}

async fn exists(url: &str, key: &str) -> bool {
    let n: i64 = redis::cmd("EXISTS")
        .arg(key)
        .query_async(&mut connection(url).await)
        .await
        .unwrap();
    n == 1
}

async fn xlen(url: &str, key: &str) -> i64 {
    redis::cmd("XLEN")
        .arg(key)
        .query_async(&mut connection(url).await)
        .await
        .unwrap()
}

/// Polls the async `condition` every 20 ms until it holds or `timeout`
/// passes.
async fn eventually<F, Fut>(timeout: Duration, mut condition: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if condition().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A server on a Redis-backed manager (one "instance").
async fn instance(stores: &RedisStores, max_sessions: usize) -> TestServer {
    let manager = BoundedSessionManager::builder(max_sessions)
        .redis(stores)
        .build();
    let mut config = StreamableHttpServerConfig::default();
    config.session_store = Some(stores.session_store());
    TestServer::start_with(manager, config).await
}

/// The whole SSE body of a GET, or of whatever was sent within `timeout`
/// if it did not end.
async fn body_within(response: reqwest::Response, timeout: Duration) -> (String, bool) {
    let mut body = response.bytes_stream();
    let mut text = String::new();
    let ended = tokio::time::timeout(timeout, async {
        while let Some(Ok(chunk)) = body.next().await {
            text.push_str(&String::from_utf8_lossy(&chunk));
        }
    })
    .await
    .is_ok();
    (text, ended)
}

async fn get_with_last_event_id(client: &Client, session: &str, last: &str) -> reqwest::Response {
    client
        .http
        .get(&client.url)
        .header("accept", "text/event-stream")
        .header("mcp-session-id", session)
        .header("mcp-protocol-version", common::PROTOCOL_VERSION)
        .header("last-event-id", last)
        .send()
        .await
        .unwrap()
}

/// Panics seen on tokio worker threads (tasks of a multi-thread runtime;
/// only the outage test uses one, so they are its panics).
static WORKER_PANICS: AtomicUsize = AtomicUsize::new(0);

fn count_worker_panics() {
    static INSTALLED: std::sync::Once = std::sync::Once::new();
    INSTALLED.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if std::thread::current().name() == Some("tokio-runtime-worker") {
                WORKER_PANICS.fetch_add(1, Ordering::SeqCst);
            }
            previous(info);
        }));
    });
}

// ---------------------------------------------------------------------------
// 1. Store and replay
// ---------------------------------------------------------------------------

/// Ids are `<stream>#<generation>-<sequence>` numbered 1, 2, 3, ... in one
/// generation; a replay after event k gives exactly k+1.. in order, with
/// their ids, messages and retries; streams do not mix.
#[tokio::test]
async fn events_round_trip_with_their_ids_in_order() {
    let prefix = unique_prefix("round_trip");
    let stores = stores(SHARED_URL, &prefix, None).await;
    let events = stores.event_store();

    let mut message_and_retry = message(3);
    message_and_retry.retry = Some(Duration::from_millis(1500));
    let sent: Vec<ServerSseMessage> = vec![
        message(1),
        retry(3000),
        message_and_retry,
        ServerSseMessage::default(), // neither message nor retry
        message(5),
        message(6),
    ];
    for stream in [
        "sess-a:common",
        "0b7e1c2a-5f7e-4c1b-9d7e-1c2a5f7e4c1b",
        "odd#name-1:x",
    ] {
        let before = now_ms();
        let mut ids = Vec::new();
        for event in &sent {
            ids.push(store(&events, stream, event).await);
            // Another stream's events in between must not show up.
            store(&events, "sess-other:common", &message(99)).await;
        }
        let generation = parse_id(&ids[0]).1;
        let generation_ms = generation / 1_000;
        assert!(
            generation_ms + 60_000 > before && generation_ms < now_ms() + 60_000,
            "the generation is the Redis time of the first event (µs): {generation}"
        );
        for (k, id) in ids.iter().enumerate() {
            assert_eq!(
                parse_id(id),
                (stream.to_owned(), generation, k as u64 + 1),
                "id {id}"
            );
            assert_eq!(id, &format!("{stream}#{generation}-{}", k + 1));
        }
        for k in 0..ids.len() {
            let replayed = replay(&events, &ids[k])
                .await
                .unwrap_or_else(|error| panic!("replay after {} failed: {error}", ids[k]));
            let got: Vec<_> = replayed
                .iter()
                .map(|e| (e.event_id.clone(), json_of(e), e.retry))
                .collect();
            let expected: Vec<_> = (k + 1..sent.len())
                .map(|j| (Some(ids[j].clone()), json_of(&sent[j]), sent[j].retry))
                .collect();
            assert_eq!(got, expected, "replay after event {} of {stream}", k + 1);
        }
    }

    // Stream names no id could carry are refused.
    for name in [String::new(), "x".repeat(129)] {
        let error = events
            .store_event(&name, &message(1))
            .await
            .expect_err("an invalid stream name");
        assert!(
            matches!(store_error(&error), StoreError::InvalidStreamName { length } if *length == name.len()),
            "{error:?}"
        );
    }
    drop(stores);
    clean(SHARED_URL, &prefix).await;
}

// ---------------------------------------------------------------------------
// 2. Trimming
// ---------------------------------------------------------------------------

/// With the manager's replay capacity 4 (attach sets it), a stream never
/// holds more than 4 entries; a replay whose following events are all kept
/// is complete; one whose following events were trimmed is
/// `EventTrimmed`, never a stream with a hole.
#[tokio::test]
async fn streams_are_trimmed_to_the_replay_capacity() {
    let prefix = unique_prefix("trim");
    let stores = stores(SHARED_URL, &prefix, None).await;
    let _manager = BoundedSessionManager::builder(8)
        .replay_capacity(4)
        .redis(&stores)
        .build();
    let events = stores.event_store();
    let stream = "sess-trim:common";
    let key = format!("{prefix}stream:{stream}");

    let mut ids = Vec::new();
    for n in 1..=10 {
        ids.push(store(&events, stream, &message(n)).await);
        assert_eq!(
            xlen(SHARED_URL, &key).await,
            n.min(4) as i64,
            "XLEN after event {n}"
        );
    }
    let numbers = |replayed: &[ServerSseMessage]| -> Vec<String> {
        replayed
            .iter()
            .map(|e| {
                json_of(e).unwrap()["params"]["uri"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
            .collect()
    };
    let uris = |range: std::ops::RangeInclusive<usize>| -> Vec<String> {
        range.map(|n| format!("demo://test/{n}")).collect()
    };

    // After the 7th (the oldest kept): 8..10.
    let replayed = replay(&events, &ids[6])
        .await
        .expect("replay after the 7th");
    assert_eq!(numbers(&replayed), uris(8..=10));
    assert_eq!(
        replayed
            .iter()
            .map(|e| e.event_id.clone().unwrap())
            .collect::<Vec<_>>(),
        ids[7..].to_vec()
    );

    // After the 2nd: 3..6 are gone, so nothing but an error.
    let error = replay(&events, &ids[1])
        .await
        .expect_err("3..6 are trimmed");
    assert!(
        matches!(
            store_error(&error),
            StoreError::EventTrimmed { oldest_kept: 7, .. }
        ),
        "{error:?}"
    );

    // After the 6th: 7..10 are all kept, so the replay is complete (as
    // MemoryEventStore does: "the id right before the oldest kept: nothing
    // is missing after it").
    let after_sixth = replay(&events, &ids[5]).await;
    drop(stores);
    clean(SHARED_URL, &prefix).await;
    match &after_sixth {
        Ok(replayed) => assert_eq!(numbers(replayed), uris(7..=10)),
        Err(error) => panic!(
            "replay after the 6th event failed although events 7..10 are all kept: {:?}",
            store_error(error)
        ),
    }
}

/// Without a manager, a stream keeps 64 events.
#[tokio::test]
async fn streams_keep_64_events_by_default() {
    let prefix = unique_prefix("trim_default");
    let stores = stores(SHARED_URL, &prefix, None).await;
    let events = stores.event_store();
    let stream = "sess-default:common";
    let key = format!("{prefix}stream:{stream}");
    let mut ids = Vec::new();
    for n in 1..=70 {
        ids.push(store(&events, stream, &message(n)).await);
        assert_eq!(
            xlen(SHARED_URL, &key).await,
            n.min(64) as i64,
            "XLEN after {n}"
        );
    }
    // 7..70 kept: a replay after the 7th gives 8..70, after the 5th fails.
    assert_eq!(replay(&events, &ids[6]).await.unwrap().len(), 63);
    let error = replay(&events, &ids[4]).await.expect_err("6 is trimmed");
    assert!(
        matches!(
            store_error(&error),
            StoreError::EventTrimmed { oldest_kept: 7, .. }
        ),
        "{error:?}"
    );
    drop(stores);
    clean(SHARED_URL, &prefix).await;
}

// ---------------------------------------------------------------------------
// 3. TTLs
// ---------------------------------------------------------------------------

/// Every key gets the TTL; unused keys vanish after it; a replay refreshes
/// its stream's TTL.
#[tokio::test]
async fn every_key_has_the_ttl_and_unused_keys_expire() {
    let prefix = unique_prefix("ttl");
    let ttl = Duration::from_millis(500);
    let stores = stores(SHARED_URL, &prefix, Some(ttl)).await;
    assert_eq!(stores.ttl(), ttl);
    let sessions = stores.session_store();
    let events = stores.event_store();
    let id = "sess-ttl";
    sessions.store(id, &session_state()).await.unwrap();
    let first = store(&events, &format!("{id}:common"), &message(1)).await;
    store(&events, "stateless-stream", &message(1)).await;

    let written = keys(SHARED_URL, &prefix).await;
    let mut expected = vec![
        format!("{prefix}session:{id}"),
        format!("{prefix}stream:stateless-stream"),
        format!("{prefix}stream:{id}:common"),
        format!("{prefix}streams:{id}"),
    ];
    expected.sort();
    assert_eq!(written, expected);
    for key in &written {
        let left = pttl(SHARED_URL, key).await;
        assert!(left > 0 && left <= 500, "PTTL of {key}: {left}");
    }

    // A replay 300 ms later gives the stream its whole TTL again; the
    // session key, unused, keeps counting down.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(replay(&events, &first).await.unwrap().is_empty());
    let stream_left = pttl(SHARED_URL, &format!("{prefix}stream:{id}:common")).await;
    let session_left = pttl(SHARED_URL, &format!("{prefix}session:{id}")).await;
    assert!(
        stream_left > 350 && stream_left <= 500,
        "the replay refreshed the stream: {stream_left}"
    );
    assert!(
        session_left <= 200,
        "the session key was not refreshed: {session_left}"
    );

    // Half a second after its last use, the session key is gone; the
    // replayed stream is still there for a while, then everything is.
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert!(!exists(SHARED_URL, &format!("{prefix}session:{id}")).await);
    assert!(exists(SHARED_URL, &format!("{prefix}stream:{id}:common")).await);
    tokio::time::sleep(Duration::from_millis(450)).await;
    assert_eq!(keys(SHARED_URL, &prefix).await, Vec::<String>::new());
    drop(stores);
    clean(SHARED_URL, &prefix).await;
}

// ---------------------------------------------------------------------------
// 4. Malformed, foreign and expired ids
// ---------------------------------------------------------------------------

/// Any id that is not exactly one of a kept stream's is an error: never a
/// panic, never events of another stream or generation.
#[tokio::test]
async fn bad_ids_replay_nothing() {
    let prefix = unique_prefix("bad_ids");
    let stores = stores(SHARED_URL, &prefix, None).await;
    let events = stores.event_store();
    let stream = "sess-bad:common";
    let mut ids = Vec::new();
    for n in 1..=3 {
        ids.push(store(&events, stream, &message(n)).await);
    }
    // Another stream with events, whose ids are close to these.
    let other = store(&events, "sess-other:common", &message(100)).await;
    let (_, generation, _) = parse_id(&ids[0]);
    let (_, other_generation, _) = parse_id(&other);

    let malformed = [
        String::new(),
        "garbage".to_owned(),
        "s#1-0".to_owned(),
        "s#01-1".to_owned(),
        "s#1-01".to_owned(),
        format!("{stream}#{generation}-0"),
        format!("{stream}#{generation}-1-2"),
        format!("{stream}#{generation}"),
        format!("{stream}#-{generation}-1"),
        format!("{stream}#{generation}-18446744073709551616"),
        format!("#{generation}-1"),
        "a".repeat(10 * 1024),
        format!("{}#1-1", "a".repeat(10 * 1024)),
        format!("{stream}#{generation}-1").repeat(300),
    ];
    for id in &malformed {
        let error = replay(&events, id).await.expect_err("malformed");
        assert!(
            matches!(store_error(&error), StoreError::MalformedEventId),
            "{:.60}: {error:?}",
            id
        );
    }

    let unknown = [
        // A stream that never existed.
        "s#1-1".to_owned(),
        format!("sess-never:common#{generation}-1"),
        // Ahead of the last event.
        format!("{stream}#{generation}-4"),
        format!("{stream}#{generation}-18446744073709551615"),
        // Another generation of this stream.
        format!("{stream}#{}-1", generation - 1),
        format!("{stream}#{}-2", generation + 1),
        format!("{stream}#0-1"),
        // Another stream's generation on this stream's name.
        format!("{stream}#{other_generation}-1"),
    ];
    for id in &unknown {
        let result = replay(&events, id).await;
        match &result {
            Err(error) => assert!(
                matches!(
                    store_error(error),
                    StoreError::UnknownEvent(_) | StoreError::EventTrimmed { .. }
                ),
                "{id}: {error:?}"
            ),
            Ok(replayed) => panic!(
                "{id} replayed {} events: {:?}",
                replayed.len(),
                replayed
                    .iter()
                    .map(|e| e.event_id.clone())
                    .collect::<Vec<_>>()
            ),
        }
    }

    // An earlier generation: the stream is dropped (as an expiry or a
    // DELETE does) and started again; its old ids must not point into the
    // new events.
    let key = format!("{prefix}stream:{stream}");
    let _: () = redis::cmd("DEL")
        .arg(&key)
        .query_async(&mut connection(SHARED_URL).await)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(3)).await;
    let mut new_ids = Vec::new();
    for n in 11..=15 {
        new_ids.push(store(&events, stream, &message(n)).await);
    }
    let (_, new_generation, first_sequence) = parse_id(&new_ids[0]);
    assert!(new_generation > generation, "a new generation");
    assert_eq!(first_sequence, 1);
    for old in &ids {
        match replay(&events, old).await {
            Err(error) => assert!(
                matches!(store_error(&error), StoreError::UnknownEvent(_)),
                "{old}: {error:?}"
            ),
            Ok(replayed) => panic!("old id {old} replayed {} new events", replayed.len()),
        }
    }
    // The new ids work (the errors above are not a broken stream).
    assert_eq!(replay(&events, &new_ids[0]).await.unwrap().len(), 4);
    drop(stores);
    clean(SHARED_URL, &prefix).await;
}

/// A stream dropped (as the DELETE script drops a session's streams) and
/// started again at once gets a new generation too: an id of the dropped
/// stream never replays the new one's events. The generation is the Redis
/// time in ms of the first event, so a restart within the same millisecond
/// reuses it; this tries up to 300 times.
#[tokio::test]
async fn a_stream_restarted_within_a_millisecond_does_not_reuse_old_ids() {
    let prefix = unique_prefix("same_ms");
    let stores = stores(SHARED_URL, &prefix, None).await;
    let events = stores.event_store();
    let mut redis = connection(SHARED_URL).await;
    let mut leaked = None;
    for round in 0..300 {
        let stream = format!("sess-{round}:common");
        let old = store(&events, &stream, &message(1)).await;
        store(&events, &stream, &message(2)).await;
        let _: () = redis::cmd("DEL")
            .arg(format!("{prefix}stream:{stream}"))
            .query_async(&mut redis)
            .await
            .unwrap();
        let new = store(&events, &stream, &message(3)).await;
        store(&events, &stream, &message(4)).await;
        if let Ok(replayed) = replay(&events, &old).await {
            leaked = Some((round, old, new, replayed.len()));
            break;
        }
    }
    drop(stores);
    clean(SHARED_URL, &prefix).await;
    if let Some((round, old, new, count)) = leaked {
        panic!(
            "round {round}: the dropped stream's id {old} replayed {count} event(s) of the \
             restarted stream (whose first id is {new})"
        );
    }
}

// ---------------------------------------------------------------------------
// 5. DELETE
// ---------------------------------------------------------------------------

/// `SessionStore::delete` removes the session's value, streams and stream
/// index, leaves a tombstone with a TTL, publishes the id, and touches no
/// other session.
#[tokio::test]
async fn delete_removes_every_key_of_the_session() {
    let prefix = unique_prefix("delete");
    let stores = stores(SHARED_URL, &prefix, None).await;
    let sessions = stores.session_store();
    let events = stores.event_store();
    let (id, other) = ("sess-del", "sess-keep");
    // `sess-del` is a prefix of `sess-delx`, another session.
    let lookalike = "sess-delx";
    for session in [id, other, lookalike] {
        sessions.store(session, &session_state()).await.unwrap();
        store(&events, &format!("{session}:common"), &message(1)).await;
        store(&events, &format!("{session}:req-7"), &message(2)).await;
    }
    let kept_id = store(&events, &format!("{other}:common"), &message(3)).await;
    let before = keys(SHARED_URL, &prefix).await;
    assert_eq!(before.len(), 12, "{before:?}");

    let client = redis::Client::open(SHARED_URL).unwrap();
    let mut pubsub = client.get_async_pubsub().await.unwrap();
    pubsub.subscribe(format!("{prefix}deleted")).await.unwrap();
    let mut published = pubsub.into_on_message();

    sessions.delete(id).await.unwrap();

    let tombstone = format!("{prefix}deleted:{id}");
    let after = keys(SHARED_URL, &prefix).await;
    let expected: Vec<String> = before
        .iter()
        .filter(|key| !key.ends_with(&format!(":{id}")) && !key.contains(&format!(":{id}:")))
        .cloned()
        .chain([tombstone.clone()])
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    assert_eq!(after, expected);
    let left = pttl(SHARED_URL, &tombstone).await;
    assert!(left > 0, "the tombstone has a TTL: {left}");
    assert!(sessions.load(id).await.unwrap().is_none());

    let message = tokio::time::timeout(Duration::from_secs(2), published.next())
        .await
        .expect("the DELETE was published")
        .unwrap();
    assert_eq!(message.get_payload::<String>().unwrap(), id);

    // The other sessions are intact.
    assert!(sessions.load(other).await.unwrap().is_some());
    assert!(sessions.load(lookalike).await.unwrap().is_some());
    let first_of_other = format!("{}1", &kept_id[..kept_id.len() - 1]);
    assert_eq!(replay(&events, &first_of_other).await.unwrap().len(), 1);
    drop(stores);
    clean(SHARED_URL, &prefix).await;
}

/// A session that lives longer than the TTL keeps writing to a stream
/// created at its start, and opens another stream later: a DELETE must
/// still remove both streams (the index must not lose a live stream).
#[tokio::test]
async fn delete_removes_streams_older_than_the_ttl() {
    let prefix = unique_prefix("delete_old");
    let stores = stores(SHARED_URL, &prefix, Some(Duration::from_millis(400))).await;
    let sessions = stores.session_store();
    let events = stores.event_store();
    let id = "sess-long";
    let (early, late) = (format!("{id}:common"), format!("{id}:req-9"));
    sessions.store(id, &session_state()).await.unwrap();
    for n in 0..10 {
        // Writes (and the session's own upkeep, here by hand) keep the
        // early stream and the session alive for 1 s, over twice the TTL.
        store(&events, &early, &message(n)).await;
        sessions.store(id, &session_state()).await.unwrap();
        if n == 7 {
            store(&events, &late, &message(n)).await;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let index: Vec<String> = redis::cmd("ZRANGE")
        .arg(format!("{prefix}streams:{id}"))
        .arg(0)
        .arg(-1)
        .query_async(&mut connection(SHARED_URL).await)
        .await
        .unwrap();
    let live = keys(SHARED_URL, &prefix).await;
    assert!(
        live.contains(&format!("{prefix}stream:{early}"))
            && live.contains(&format!("{prefix}stream:{late}")),
        "{live:?}"
    );

    sessions.delete(id).await.unwrap();
    let after = keys(SHARED_URL, &prefix).await;
    drop(stores);
    clean(SHARED_URL, &prefix).await;
    assert_eq!(
        after,
        vec![format!("{prefix}deleted:{id}")],
        "keys left after the DELETE (the stream index held {index:?} before it)"
    );
}

// ---------------------------------------------------------------------------
// 6. Isolation through the manager
// ---------------------------------------------------------------------------

/// Session S2 presenting S1's `Last-Event-ID` gets an empty stream, never
/// S1's notifications; S1 itself gets them replayed.
#[tokio::test]
async fn a_session_never_replays_another_sessions_events() {
    let prefix = unique_prefix("isolation");
    let stores = stores(SHARED_URL, &prefix, None).await;
    let server = instance(&stores, 16).await;
    let client = server.client();
    let s1 = client.initialize().await.unwrap();
    let s2 = client.initialize().await.unwrap();

    let standalone = client.open_standalone(&s1).await;
    assert_eq!(standalone.status(), StatusCode::OK);
    let mut reader = SseReader::new(standalone);
    let (status, answer) = client
        .request(
            &s1,
            json!({ "jsonrpc": "2.0", "id": 2, "method": "tools/call",
                    "params": { "name": "announce", "arguments": { "count": 3 } } }),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(answer.iter().any(|m| m["result"].is_object()), "{answer:?}");
    let mut announced = Vec::new();
    while announced.len() < 3 {
        let event = reader
            .next(Duration::from_secs(5))
            .await
            .expect("the standalone stream stays open");
        if let (Some(id), Some(message)) = (event.id, event.message) {
            announced.push((id, message));
        }
    }
    drop(reader);
    for (n, (id, message)) in announced.iter().enumerate() {
        assert!(id.starts_with(&format!("{s1}:")), "{id}");
        assert_eq!(
            message["params"]["uri"],
            format!("demo://announce/{}", n + 1),
            "{message}"
        );
    }

    // S2 with S1's ids: 200 and an empty stream.
    for (id, _) in &announced {
        let response = get_with_last_event_id(&client, &s2, id).await;
        assert_eq!(response.status(), StatusCode::OK);
        let (body, ended) = body_within(response, Duration::from_secs(3)).await;
        assert!(ended, "the empty stream ends");
        assert!(
            common::sse_messages(&body).is_empty() && !body.contains(&*s1),
            "S2 got S1's events: {body}"
        );
    }

    // S1 with its own first id: notifications 2 and 3 (the control).
    let response = get_with_last_event_id(&client, &s1, &announced[0].0).await;
    assert_eq!(response.status(), StatusCode::OK);
    let (body, _) = body_within(response, Duration::from_secs(3)).await;
    let replayed = common::sse_messages(&body);
    assert_eq!(
        replayed
            .iter()
            .map(|m| m["params"]["uri"].clone())
            .collect::<Vec<_>>(),
        vec![json!("demo://announce/2"), json!("demo://announce/3")],
        "{body}"
    );
    drop(server);
    drop(stores);
    clean(SHARED_URL, &prefix).await;
}

// ---------------------------------------------------------------------------
// 7. Redis stopped and restarted
// ---------------------------------------------------------------------------

/// Two instances A and B on a private Redis that is killed and restarted
/// empty. Every check is recorded and all failures are reported together.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_survive_a_redis_outage_and_are_written_again() {
    count_worker_panics();
    let panics_before = WORKER_PANICS.load(Ordering::SeqCst);
    let mut redis = PrivateRedis::start();
    let url = redis.url();
    let prefix = unique_prefix("outage");
    let connect = || async {
        RedisStores::builder(url.as_str())
            .prefix(prefix.as_str())
            .ttl(Duration::from_secs(3))
            .upkeep_interval(Duration::from_millis(100))
            .connect()
            .await
            .unwrap()
    };
    let (stores_a, stores_b) = (connect().await, connect().await);
    let (a, b) = (instance(&stores_a, 16).await, instance(&stores_b, 16).await);
    let (client_a, client_b) = (a.client(), b.client());
    let session_key = |id: &str| format!("{prefix}session:{id}");
    let mut failures: Vec<String> = Vec::new();
    let mut check = |ok: bool, what: String| {
        eprintln!("[outage] {} {what}", if ok { "ok  " } else { "FAIL" });
        if !ok {
            failures.push(what);
        }
    };

    let s_a = client_a.initialize().await.expect("initialize on A");
    let s_del = client_a.initialize().await.expect("initialize on A");
    assert!(client_a.works(&s_a).await);
    assert!(exists(&url, &session_key(&s_a)).await);
    // B restores a session of A while Redis is up (the control).
    assert!(client_b.works(&s_del).await, "B restores a session of A");

    redis.stop();

    let (status, messages) = client_a.request(&s_a, common::tools_list_body(5)).await;
    check(
        status == StatusCode::OK && messages.iter().any(|m| m["result"]["tools"].is_array()),
        format!("a request on A for its session while Redis is down: {status}, {messages:?}"),
    );
    let s_new = client_a.initialize().await;
    check(
        s_new.is_ok(),
        format!("initialize on A while Redis is down: {s_new:?}"),
    );
    let s_new = s_new.ok();
    if let Some(s_new) = &s_new {
        let (status, messages) = client_a.request(s_new, common::tools_list_body(6)).await;
        check(
            status == StatusCode::OK && messages.iter().any(|m| m["result"]["tools"].is_array()),
            format!("the new session on A while Redis is down: {status}, {messages:?}"),
        );
    }
    let unknown_on_b = s_new
        .clone()
        .unwrap_or_else(|| "no-such-session".to_owned());
    let response = client_b
        .post(Some(unknown_on_b.parse().unwrap()))
        .json(&common::tools_list_body(7))
        .send()
        .await
        .unwrap();
    let (status, retry_after) = (
        response.status(),
        response.headers().get("retry-after").cloned(),
    );
    check(
        status == StatusCode::SERVICE_UNAVAILABLE && retry_after.is_some(),
        format!(
            "a session unknown to B while Redis is down: {status}, Retry-After {retry_after:?}"
        ),
    );
    let deleted = client_a.delete(&s_del).await;
    check(
        deleted.is_success(),
        format!("DELETE on A while Redis is down: {deleted}"),
    );

    redis.restart();

    let mut written_again = vec![session_key(&s_a)];
    written_again.extend(s_new.iter().map(|id| session_key(id)));
    let back = eventually(Duration::from_secs(3), || async {
        let present = keys(&url, &prefix).await;
        written_again.iter().all(|key| present.contains(key))
    })
    .await;
    check(
        back,
        format!(
            "A's sessions written again after the restart: {:?}",
            keys(&url, &prefix).await
        ),
    );
    let tombstone = format!("{prefix}deleted:{s_del}");
    let tombstoned = eventually(Duration::from_secs(3), || exists(&url, &tombstone)).await;
    check(
        tombstoned,
        "the DELETE issued during the outage left its tombstone".to_owned(),
    );
    if let Some(s_new) = &s_new {
        check(
            client_b.works(s_new).await,
            "B restores the session created on A during the outage".to_owned(),
        );
    }
    check(
        client_a.works(&s_a).await,
        "A's session works after the restart".to_owned(),
    );
    // A few upkeep rounds later, the DELETEd session is still gone.
    tokio::time::sleep(Duration::from_millis(500)).await;
    check(
        !exists(&url, &session_key(&s_del)).await,
        "the DELETEd session's key is not written again".to_owned(),
    );
    let status = client_b.status_of(&s_del).await;
    check(
        status == StatusCode::NOT_FOUND,
        format!("the DELETEd session on B: {status}"),
    );
    let panics = WORKER_PANICS.load(Ordering::SeqCst) - panics_before;
    check(
        panics == 0,
        format!("{panics} panics in the servers' tasks"),
    );

    drop((a, b));
    drop((stores_a, stores_b));
    drop(redis);
    assert!(failures.is_empty(), "failed checks: {failures:#?}");
}

// ---------------------------------------------------------------------------
// 8. A DELETE the pub/sub did not carry
// ---------------------------------------------------------------------------

/// A session whose key is gone and whose tombstone is there (a DELETE
/// published while this instance was not subscribed) is closed by the
/// upkeep; one whose key is gone without a tombstone (Redis lost it) is
/// written again and goes on.
#[tokio::test]
async fn the_upkeep_ends_sessions_deleted_elsewhere_and_rewrites_lost_ones() {
    let prefix = unique_prefix("upkeep");
    let stores = RedisStores::builder(SHARED_URL)
        .prefix(prefix.as_str())
        .ttl(Duration::from_secs(5))
        .upkeep_interval(Duration::from_millis(100))
        .connect()
        .await
        .unwrap();
    let server = instance(&stores, 16).await;
    let client = server.client();
    let deleted = client.initialize().await.unwrap();
    let lost = client.initialize().await.unwrap();
    let session_key = |id: &str| format!("{prefix}session:{id}");
    assert!(exists(SHARED_URL, &session_key(&deleted)).await);
    assert!(client.works(&deleted).await && client.works(&lost).await);

    let mut redis = connection(SHARED_URL).await;
    let _: () = redis::pipe()
        .cmd("DEL")
        .arg(session_key(&deleted))
        .arg(session_key(&lost))
        .cmd("SET")
        .arg(format!("{prefix}deleted:{deleted}"))
        .arg("1")
        .arg("PX")
        .arg(5000)
        .query_async(&mut redis)
        .await
        .unwrap();

    let closed = eventually(Duration::from_secs(2), || async {
        client.status_of(&deleted).await == StatusCode::NOT_FOUND
    })
    .await;
    assert!(closed, "the session with a tombstone was not closed");
    let lost_key = session_key(&lost);
    let rewritten = eventually(Duration::from_secs(2), || exists(SHARED_URL, &lost_key)).await;
    assert!(rewritten, "the lost session's key was not written again");
    assert!(client.works(&lost).await);
    assert!(!exists(SHARED_URL, &session_key(&deleted)).await);
    drop(server);
    drop(stores);
    clean(SHARED_URL, &prefix).await;
}
