use std::sync::atomic::Ordering;

use futures::StreamExt;
use rmcp::model::{
    ClientJsonRpcMessage, GetExtensions, JsonRpcMessage, RequestId, ServerJsonRpcMessage,
};
use rmcp::service::OriginatingRequestId;
use rmcp::transport::Transport;
use rmcp::transport::streamable_http_server::session::ServerSseMessage;
use serde_json::json;

use super::connection::SseResponse;
use super::standalone::MAX_SHADOW_STREAMS;
use super::*;
use crate::close_reason::CloseReason;
use crate::error::BoundedSessionError;
use crate::event_id::EventId;
use crate::replay_buffer::ReplayError;

const WAIT: Duration = Duration::from_secs(5);

fn client(value: serde_json::Value) -> ClientJsonRpcMessage {
    serde_json::from_value(value).expect("a client message")
}

fn server(value: serde_json::Value) -> ServerJsonRpcMessage {
    serde_json::from_value(value).expect("a server message")
}

fn call(id: i64, progress_token: Option<&str>) -> ClientJsonRpcMessage {
    let mut params = json!({ "name": "work", "arguments": {} });
    if let Some(token) = progress_token {
        params["_meta"] = json!({ "progressToken": token });
    }
    client(json!({ "jsonrpc": "2.0", "id": id, "method": "tools/call", "params": params }))
}

fn answer(id: i64) -> ServerJsonRpcMessage {
    server(json!({ "jsonrpc": "2.0", "id": id, "result": {} }))
}

fn progress(token: &str, progress: u32) -> ServerJsonRpcMessage {
    server(json!({
        "jsonrpc": "2.0", "method": "notifications/progress",
        "params": { "progressToken": token, "progress": progress }
    }))
}

fn log_line(n: u32) -> ServerJsonRpcMessage {
    server(json!({
        "jsonrpc": "2.0", "method": "notifications/message",
        "params": { "level": "info", "data": n }
    }))
}

/// A session, initialized; the test plays both the HTTP side (`handle`)
/// and the MCP handler (`handler`, the session's transport).
struct Session {
    handle: SessionHandle,
    handler: SessionTransport,
}

fn settings(config: impl FnOnce(&mut SessionSettings)) -> Arc<SessionSettings> {
    let mut settings = SessionSettings {
        session: SessionConfig::default(),
        replay_capacity: 16,
        max_request_streams: 8,
        event_store: None,
    };
    config(&mut settings);
    Arc::new(settings)
}

/// A session and its transport, as the manager makes them (without a
/// registry).
fn new_session(
    id: &str,
    settings: Arc<SessionSettings>,
    origin: Origin,
) -> (SessionHandle, SessionTransport) {
    let handle = create(id.into(), settings, origin);
    let handler = handle.transport(None, None);
    (handle, handler)
}

async fn session(settings: Arc<SessionSettings>) -> Session {
    session_from(settings, Origin::Created).await
}

async fn session_from(settings: Arc<SessionSettings>, origin: Origin) -> Session {
    let (handle, mut handler) = new_session("test", settings, origin);
    let initialize = client(json!({
        "jsonrpc": "2.0", "id": 0, "method": "initialize",
        "params": {
            "protocolVersion": "2025-06-18", "capabilities": {},
            "clientInfo": { "name": "test", "version": "0" }
        }
    }));
    let answered = {
        let handle = handle.clone();
        tokio::spawn(async move { handle.initialize(initialize).await })
    };
    let received = handler
        .receive()
        .await
        .expect("initialize reaches the handler");
    assert!(matches!(received, JsonRpcMessage::Request(_)));
    handler.send(answer(0)).await.unwrap();
    answered.await.unwrap().expect("initialize answered");
    Session { handle, handler }
}

impl Session {
    /// Sends a request and has the handler take it.
    async fn request(&mut self, request: ClientJsonRpcMessage) -> SseResponse {
        let stream = self.handle.request(request).await.unwrap();
        self.handler
            .receive()
            .await
            .expect("the request reaches the handler");
        stream
    }
}

/// The next event's id and JSON-RPC id / method, or None at the end.
async fn next(stream: &mut SseResponse) -> Option<(String, String)> {
    let event = tokio::time::timeout(WAIT, stream.next())
        .await
        .expect("the stream neither sent nor ended")?;
    let what = match event.message.as_deref() {
        None => "priming".to_owned(),
        Some(JsonRpcMessage::Response(response)) => format!("answer {}", response.id),
        Some(JsonRpcMessage::Notification(notification)) => {
            let value = serde_json::to_value(notification).unwrap();
            match value["params"]["progress"].as_f64() {
                Some(progress) => format!("progress {progress}"),
                None => format!("log {}", value["params"]["data"]),
            }
        }
        Some(JsonRpcMessage::Request(request)) => format!("request {}", request.id),
        Some(JsonRpcMessage::Error(error)) => format!("error {:?}", error.id),
    };
    Some((event.event_id.unwrap_or_default(), what))
}

async fn assert_pending(stream: &mut SseResponse) {
    let next = tokio::time::timeout(Duration::from_millis(50), stream.next()).await;
    assert!(next.is_err(), "expected nothing, got {next:?}");
}

fn ids(events: &[(String, String)]) -> Vec<&str> {
    events.iter().map(|(id, _)| id.as_str()).collect()
}

async fn drain(stream: &mut SseResponse) -> Vec<(String, String)> {
    let mut events = Vec::new();
    while let Some(event) = next(stream).await {
        events.push(event);
    }
    events
}

#[tokio::test]
async fn answers_and_progress_ride_their_request_stream_which_then_ends() {
    let mut session = session(settings(|_| {})).await;
    let mut stream = session.request(call(1, Some("tok"))).await;
    let mut standalone = session.handle.standalone().await.unwrap();
    session.handler.send(progress("tok", 1)).await.unwrap();
    session.handler.send(log_line(7)).await.unwrap();
    session.handler.send(answer(1)).await.unwrap();
    let events = drain(&mut stream).await;
    assert_eq!(
        events,
        [
            ("0/0".into(), "priming".into()),
            ("1/0".into(), "progress 1".into()),
            ("2/0".into(), "answer 1".into()),
        ]
    );
    assert_eq!(
        next(&mut standalone).await,
        Some(("1".into(), "log 7".into()))
    );
    // The progress token is forgotten with the request.
    session.handler.send(progress("tok", 2)).await.unwrap();
    assert_eq!(
        next(&mut standalone).await,
        Some(("2".into(), "progress 2".into()))
    );
}

#[tokio::test]
async fn server_requests_ride_their_originating_request_stream_while_it_lasts() {
    let mut session = session(settings(|_| {})).await;
    let mut stream = session.request(call(1, None)).await;
    let mut standalone = session.handle.standalone().await.unwrap();
    let associated = |id: i64| {
        let mut request = server(json!({ "jsonrpc": "2.0", "id": id, "method": "ping" }));
        if let JsonRpcMessage::Request(request) = &mut request {
            request
                .request
                .extensions_mut()
                .insert(OriginatingRequestId(RequestId::Number(1)));
        }
        request
    };
    session.handler.send(associated(100)).await.unwrap();
    let unassociated = server(json!({ "jsonrpc": "2.0", "id": 101, "method": "ping" }));
    session.handler.send(unassociated).await.unwrap();
    session.handler.send(answer(1)).await.unwrap();
    // Its request answered, an associated request falls back.
    session.handler.send(associated(102)).await.unwrap();
    let events = drain(&mut stream).await;
    let what: Vec<_> = events.iter().map(|(_, what)| what.as_str()).collect();
    assert_eq!(what, ["priming", "request 100", "answer 1"]);
    assert_eq!(next(&mut standalone).await.unwrap().1, "request 101");
    assert_eq!(next(&mut standalone).await.unwrap().1, "request 102");
}

#[tokio::test]
async fn a_cancelled_request_ends_its_stream_and_a_late_answer_goes_standalone() {
    let mut session = session(settings(|_| {})).await;
    let mut stream = session.request(call(1, None)).await;
    let mut standalone = session.handle.standalone().await.unwrap();
    let cancel = client(json!({
        "jsonrpc": "2.0", "method": "notifications/cancelled",
        "params": { "requestId": 1 }
    }));
    session.handle.accept(cancel).await.unwrap();
    session
        .handler
        .receive()
        .await
        .expect("the handler hears of it");
    assert_eq!(
        drain(&mut stream).await.len(),
        1,
        "priming only, then the end"
    );
    session.handler.send(answer(1)).await.unwrap();
    assert_eq!(next(&mut standalone).await.unwrap().1, "answer 1");
    // The id is free again.
    let _again = session.request(call(1, None)).await;
}

#[tokio::test]
async fn in_flight_ids_are_unique_and_bounded() {
    let mut session = session(settings(|s| s.max_request_streams = 2)).await;
    let _first = session.request(call(1, None)).await;
    assert!(matches!(
        session.handle.request(call(1, None)).await,
        Err(BoundedSessionError::DuplicateRequestId(RequestId::Number(
            1
        )))
    ));
    let _second = session.request(call(2, None)).await;
    assert!(matches!(
        session.handle.request(call(3, None)).await,
        Err(BoundedSessionError::TooManyStreams { limit: 2 })
    ));
    session.handler.send(answer(1)).await.unwrap();
    let _third = session.request(call(3, None)).await;
}

#[tokio::test]
async fn answered_streams_kept_for_resumes_are_bounded_like_open_ones() {
    let mut session = session(settings(|s| s.max_request_streams = 2)).await;
    for id in 1..=3 {
        let _stream = session.request(call(id, None)).await;
        session.handler.send(answer(id)).await.unwrap();
    }
    let resume = |stream| EventId {
        index: 0,
        stream: Some(stream),
    };
    // The oldest answered stream made room for the third.
    assert!(matches!(
        session.handle.resume(resume(0)).await,
        Err(BoundedSessionError::Replay(ReplayError::UnknownStream(0)))
    ));
    assert!(session.handle.resume(resume(1)).await.is_ok());
    assert!(session.handle.resume(resume(2)).await.is_ok());
}

#[tokio::test]
async fn shadow_streams_are_bounded_and_the_oldest_goes_first() {
    let session = session(settings(|_| {})).await;
    let _primary = session.handle.standalone().await.unwrap();
    let mut oldest = session.handle.standalone().await.unwrap();
    let mut kept = Vec::new();
    for _ in 0..MAX_SHADOW_STREAMS {
        kept.push(session.handle.standalone().await.unwrap());
    }
    assert_eq!(next(&mut oldest).await, None, "dropped to make room");
    for shadow in &mut kept {
        assert_pending(shadow).await;
    }
}

#[tokio::test]
async fn a_resumed_request_stream_gets_exactly_what_followed() {
    let mut session = session(settings(|_| {})).await;
    let mut stream = session.request(call(1, Some("tok"))).await;
    session.handler.send(progress("tok", 1)).await.unwrap();
    assert_eq!(next(&mut stream).await.unwrap().0, "0/0");
    assert_eq!(next(&mut stream).await.unwrap().0, "1/0");
    // The connection drops; more progress and the answer arrive meanwhile.
    drop(stream);
    session.handler.send(progress("tok", 2)).await.unwrap();
    session.handler.send(progress("tok", 3)).await.unwrap();
    let resume = |index| EventId {
        index,
        stream: Some(0),
    };
    let mut resumed = session.handle.resume(resume(1)).await.unwrap();
    assert_eq!(
        next(&mut resumed).await,
        Some(("2/0".into(), "progress 2".into()))
    );
    assert_eq!(next(&mut resumed).await.unwrap().0, "3/0");
    assert_pending(&mut resumed).await;
    session.handler.send(answer(1)).await.unwrap();
    assert_eq!(next(&mut resumed).await.unwrap().1, "answer 1");
    assert_eq!(next(&mut resumed).await, None, "answered: the stream ends");

    // Completed, it can still be resumed (and ends after the replay).
    let mut late = session.handle.resume(resume(2)).await.unwrap();
    assert_eq!(ids(&drain(&mut late).await), ["3/0", "4/0"]);
    let mut nothing_missed = session.handle.resume(resume(4)).await.unwrap();
    assert_eq!(next(&mut nothing_missed).await, None);
    assert!(matches!(
        session.handle.resume(resume(5)).await,
        Err(BoundedSessionError::Replay(ReplayError::Ahead {
            last_seen: 5,
            newest: 4
        }))
    ));
    assert!(matches!(
        session
            .handle
            .resume(EventId {
                index: 0,
                stream: Some(9)
            })
            .await,
        Err(BoundedSessionError::Replay(ReplayError::UnknownStream(9)))
    ));
}

#[tokio::test]
async fn a_resume_after_overwritten_events_replays_what_is_kept_with_the_gap_visible() {
    let mut session = session(settings(|s| s.replay_capacity = 2)).await;
    let stream = session.request(call(1, Some("tok"))).await;
    drop(stream);
    for n in 1..=5 {
        session.handler.send(progress("tok", n)).await.unwrap();
    }
    let resume = |index| EventId {
        index,
        stream: Some(0),
    };
    // 3 and earlier are gone: the client gets 4 and 5, and the jump from
    // its 2 to 4 in the ids shows what it lost (a refusal would only
    // make it retry the same id forever).
    let mut resumed = session.handle.resume(resume(2)).await.unwrap();
    assert_eq!(
        next(&mut resumed).await,
        Some(("4/0".into(), "progress 4".into()))
    );
    assert_eq!(next(&mut resumed).await.unwrap().0, "5/0");
    let mut exact = session.handle.resume(resume(3)).await.unwrap();
    assert_eq!(next(&mut exact).await.unwrap().0, "4/0");
    assert_eq!(next(&mut exact).await.unwrap().0, "5/0");
    // The answer still arrives live, and ends the stream.
    session.handler.send(answer(1)).await.unwrap();
    assert_eq!(next(&mut exact).await.unwrap().1, "answer 1");
    assert_eq!(next(&mut exact).await, None);
}

#[tokio::test(start_paused = true)]
async fn completed_streams_expire_after_their_ttl() {
    let ttl = Duration::from_secs(60);
    let mut session = session(settings(|s| s.session.completed_cache_ttl = ttl)).await;
    let _stream = session.request(call(1, None)).await;
    session.handler.send(answer(1)).await.unwrap();
    let resume = EventId {
        index: 0,
        stream: Some(0),
    };
    tokio::time::advance(ttl - Duration::from_secs(1)).await;
    assert!(session.handle.resume(resume).await.is_ok(), "still kept");
    tokio::time::advance(Duration::from_secs(2)).await;
    // Expiry runs as the session handles its next event.
    let _ = session.handle.standalone().await.unwrap();
    assert!(matches!(
        session.handle.resume(resume).await,
        Err(BoundedSessionError::Replay(ReplayError::UnknownStream(0)))
    ));
}

#[tokio::test]
async fn a_second_get_is_a_shadow_that_takes_over_when_the_first_dies() {
    let mut session = session(settings(|_| {})).await;
    // Sent before any GET: kept for the first one.
    session.handler.send(log_line(1)).await.unwrap();
    let mut primary = session.handle.standalone().await.unwrap();
    assert_eq!(next(&mut primary).await, Some(("1".into(), "log 1".into())));
    let mut shadow = session.handle.standalone().await.unwrap();
    session.handler.send(log_line(2)).await.unwrap();
    assert_eq!(next(&mut primary).await.unwrap().0, "2");
    assert_pending(&mut shadow).await;
    // The primary dies: the shadow takes over, from what the primary
    // did not hand out.
    drop(primary);
    session.handler.send(log_line(3)).await.unwrap();
    session.handler.send(log_line(4)).await.unwrap();
    assert_eq!(next(&mut shadow).await.unwrap().0, "3");
    assert_eq!(next(&mut shadow).await.unwrap().0, "4");
    // No stream left: kept for the next GET, which replays just that.
    drop(shadow);
    session.handler.send(log_line(5)).await.unwrap();
    let mut next_get = session.handle.standalone().await.unwrap();
    assert_eq!(next(&mut next_get).await.unwrap().0, "5");
    assert_pending(&mut next_get).await;
    // A reconnect with Last-Event-ID while that one lives waits in
    // reserve, and takes over from its own Last-Event-ID.
    let mut resumed = session
        .handle
        .resume(EventId {
            index: 3,
            stream: None,
        })
        .await
        .unwrap();
    assert_pending(&mut resumed).await;
    drop(next_get);
    session.handler.send(log_line(6)).await.unwrap();
    for expected in ["4", "5", "6"] {
        assert_eq!(next(&mut resumed).await.unwrap().0, expected);
    }
    // Closing from the server side ends the stream and its shadows.
    let mut another_shadow = session.handle.standalone().await.unwrap();
    session
        .handle
        .close_standalone_sse_stream(Some(Duration::from_millis(10)))
        .await
        .unwrap();
    let (id, what) = next(&mut resumed).await.unwrap();
    assert_eq!((id.as_str(), what.as_str()), ("7", "priming"));
    assert_eq!(next(&mut resumed).await, None);
    assert_eq!(next(&mut another_shadow).await, None);
}

#[tokio::test]
async fn a_shadow_with_the_largest_id_takes_over_without_overflow() {
    let mut session = session(settings(|_| {})).await;
    let primary = session.handle.standalone().await.unwrap();
    let mut shadow = session
        .handle
        .resume(EventId {
            index: u64::MAX,
            stream: None,
        })
        .await
        .unwrap();
    drop(primary);
    session.handler.send(log_line(1)).await.unwrap();
    assert_eq!(next(&mut shadow).await.unwrap().0, "1");
}

#[tokio::test]
async fn a_shadow_takes_over_as_soon_as_the_standalone_client_is_gone() {
    let mut session = session(settings(|_| {})).await;
    let primary = session.handle.standalone().await.unwrap();
    let mut shadow = session.handle.standalone().await.unwrap();
    // An elicitation request, say, that the primary never hands out.
    session.handler.send(log_line(1)).await.unwrap();
    drop(primary);
    // No further notification is needed for the shadow to get it.
    assert_eq!(next(&mut shadow).await.unwrap().0, "1");

    // Likewise for a reconnect with Last-Event-ID that raced a dead
    // connection the server still thought alive.
    let mut primary = shadow;
    let mut reconnected = session
        .handle
        .resume(EventId {
            index: 1,
            stream: None,
        })
        .await
        .unwrap();
    session.handler.send(log_line(2)).await.unwrap();
    assert_eq!(next(&mut primary).await.unwrap().0, "2");
    drop(primary);
    assert_eq!(next(&mut reconnected).await.unwrap().0, "2");
}

#[tokio::test]
async fn a_promoted_shadow_with_an_id_ahead_leaves_nothing_unreplayed() {
    let mut session = session(settings(|_| {})).await;
    let mut primary = session.handle.standalone().await.unwrap();
    session.handler.send(log_line(1)).await.unwrap();
    assert_eq!(next(&mut primary).await.unwrap().0, "1");
    let shadow = session
        .handle
        .resume(EventId {
            index: 57,
            stream: None,
        })
        .await
        .unwrap();
    drop(primary);
    session.handler.send(log_line(2)).await.unwrap();
    drop(shadow);
    session.handler.send(log_line(3)).await.unwrap();
    // The shadow's id named nothing this stream sent, so it was owed
    // everything kept; it handed out none of it, and 2 and 3 went to no
    // response at all: the next GET gets all three.
    let mut get = session.handle.standalone().await.unwrap();
    for expected in ["1", "2", "3"] {
        assert_eq!(next(&mut get).await.unwrap().0, expected);
    }
}

#[tokio::test]
async fn ids_from_before_a_restore_name_nothing_of_the_new_life() {
    let mut session = session_from(settings(|_| {}), Origin::Restored).await;
    // Sent by the restored session before the client's GET came back.
    session.handler.send(log_line(1)).await.unwrap();
    let mut resumed = session
        .handle
        .resume(EventId {
            index: 57,
            stream: None,
        })
        .await
        .unwrap();
    let (first_id, what) = next(&mut resumed).await.unwrap();
    assert_eq!(what, "log 1", "the kept event of the new life is replayed");
    let first: u64 = first_id.parse().unwrap();
    assert!(first > 1_000_000_000_000, "numbered above any earlier life");
    // A request stream of the earlier life is unknown, not confused
    // with the new life's first request.
    let _stream = session.request(call(1, None)).await;
    assert!(matches!(
        session
            .handle
            .resume(EventId {
                index: 0,
                stream: Some(0),
            })
            .await,
        Err(BoundedSessionError::Replay(ReplayError::UnknownStream(0)))
    ));
}

#[tokio::test]
async fn a_standalone_id_from_before_a_restore_resumes_live() {
    let mut session = session(settings(|_| {})).await;
    // The fresh session never sent event 57; its client had it from the
    // session's previous life.
    let mut resumed = session
        .handle
        .resume(EventId {
            index: 57,
            stream: None,
        })
        .await
        .unwrap();
    session.handler.send(log_line(1)).await.unwrap();
    assert_eq!(next(&mut resumed).await.unwrap().0, "1");
}

#[tokio::test(start_paused = true)]
async fn a_client_that_stops_reading_is_disconnected_and_can_resume() {
    let mut session = session(settings(|s| s.session.channel_capacity = 2)).await;
    let mut unread = session.handle.standalone().await.unwrap();
    let mut stream = session.request(call(1, None)).await;
    assert_eq!(next(&mut stream).await.unwrap().1, "priming");
    let mut sends = Vec::new();
    for n in 1..=3 {
        sends.push(tokio::spawn(session.handler.send(log_line(n))));
        tokio::task::yield_now().await;
    }
    sends.push(tokio::spawn(session.handler.send(answer(1))));
    // The unread stream stalls only the send that found its queue full:
    // the answer reaches its own, read, stream at once.
    assert_eq!(next(&mut stream).await.unwrap().1, "answer 1");
    tokio::task::yield_now().await;
    assert!(!sends[2].is_finished(), "the third log line waits for room");
    // Past the stall limit the unread stream is let go.
    tokio::time::sleep(STALL_LIMIT).await;
    for send in sends {
        send.await.unwrap().unwrap();
    }
    // It ends after what it had queued; later events wait in the ring.
    session.handler.send(log_line(4)).await.unwrap();
    assert_eq!(ids(&drain(&mut unread).await), ["1", "2", "3"]);
    let mut resumed = session
        .handle
        .resume(EventId {
            index: 3,
            stream: None,
        })
        .await
        .unwrap();
    assert_eq!(next(&mut resumed).await.unwrap().0, "4");
}

#[tokio::test]
async fn the_server_closes_a_request_stream_and_the_client_resumes_it() {
    let mut session = session(settings(|_| {})).await;
    let mut stream = session.request(call(1, Some("tok"))).await;
    session
        .handle
        .close_request_sse_stream(RequestId::Number(1), Some(Duration::from_millis(100)))
        .await
        .unwrap();
    let events = drain(&mut stream).await;
    assert_eq!(ids(&events), ["0/0", "1/0"]);
    session.handler.send(progress("tok", 1)).await.unwrap();
    session.handler.send(answer(1)).await.unwrap();
    let mut resumed = session
        .handle
        .resume(EventId {
            index: 1,
            stream: Some(0),
        })
        .await
        .unwrap();
    assert_eq!(ids(&drain(&mut resumed).await), ["2/0", "3/0"]);
    assert!(matches!(
        session
            .handle
            .close_request_sse_stream(RequestId::Number(1), None)
            .await,
        Err(BoundedSessionError::UnknownRequest(RequestId::Number(1)))
    ));
}

#[tokio::test]
async fn a_client_that_stops_reading_stalls_only_until_the_session_is_closed() {
    let mut session = session(settings(|s| s.session.channel_capacity = 2)).await;
    let stream = session.request(call(1, Some("tok"))).await;
    // Priming + 1 fill the client's buffer; the next send waits.
    session.handler.send(progress("tok", 1)).await.unwrap();
    let blocked = session.handler.send(progress("tok", 2));
    let blocked = tokio::spawn(blocked);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!blocked.is_finished(), "backpressure from the client");
    session.handle.shared().end(CloseReason::Closed);
    assert!(
        tokio::time::timeout(WAIT, session.handler.receive())
            .await
            .expect("the transport ends")
            .is_none()
    );
    assert!(blocked.await.unwrap().is_err());
    drop(stream);
    assert_eq!(
        session.handle.shared().ended(),
        Some(CloseReason::Closed),
        "ended from outside, with the reason given"
    );
}

#[tokio::test(start_paused = true)]
async fn idle_and_init_timeouts_are_reported_as_such() {
    let idle = Duration::from_secs(30);
    let mut session = session(settings(|s| s.session.keep_alive = Some(idle))).await;
    tokio::time::advance(idle / 2).await;
    let _ = session.handle.standalone().await.unwrap();
    tokio::time::advance(idle / 2 + Duration::from_secs(1)).await;
    assert!(
        session.handle.shared().ended().is_none(),
        "activity pushed it back"
    );
    assert!(session.handler.receive().await.is_none());
    assert_eq!(
        session.handle.shared().ended(),
        Some(CloseReason::IdleTimeout)
    );

    let init = Duration::from_secs(10);
    let timeout = |s: &mut SessionSettings| s.session.init_timeout = Some(init);
    let (handle, mut handler) = new_session("t", settings(timeout), Origin::Created);
    // Anything but initialize is refused at once, not left waiting.
    assert!(matches!(
        handle.standalone().await,
        Err(BoundedSessionError::NotInitialized)
    ));
    assert!(handler.receive().await.is_none());
    assert_eq!(handle.shared().ended(), Some(CloseReason::InitTimeout));

    // In a restored session, a request before the replayed handshake
    // waits for it; if the session ends instead, the request learns so.
    let (handle, mut handler) = new_session("r", settings(timeout), Origin::Restored);
    let early = {
        let handle = handle.clone();
        tokio::spawn(async move { handle.standalone().await })
    };
    assert!(handler.receive().await.is_none());
    assert_eq!(handle.shared().ended(), Some(CloseReason::InitTimeout));
    assert!(early.await.unwrap().unwrap_err().is_session_not_found());
}

/// An in-memory `EventStore` that names events `e1`, `e2`, ...
#[derive(Default)]
struct CountingStore {
    events: parking_lot::Mutex<Vec<(String, ServerSseMessage)>>,
}

#[async_trait::async_trait]
impl EventStore for CountingStore {
    async fn store_event(
        &self,
        stream_id: &str,
        event: &ServerSseMessage,
    ) -> Result<String, rmcp::transport::streamable_http_server::session::EventStoreError> {
        let mut events = self.events.lock();
        events.push((stream_id.to_owned(), event.clone()));
        Ok(format!("e{}", events.len()))
    }

    async fn replay_events_after(
        &self,
        _last_event_id: &str,
    ) -> Result<
        rmcp::transport::streamable_http_server::session::EventStream,
        rmcp::transport::streamable_http_server::session::EventStoreError,
    > {
        Ok(Box::pin(futures::stream::empty()))
    }
}

#[tokio::test]
async fn with_an_event_store_the_store_names_and_keeps_the_events() {
    let store = Arc::new(CountingStore::default());
    let mut session = session(settings(|s| s.event_store = Some(store.clone()))).await;
    let mut stream = session.request(call(1, Some("tok"))).await;
    session.handler.send(progress("tok", 1)).await.unwrap();
    session.handler.send(answer(1)).await.unwrap();
    let events = drain(&mut stream).await;
    assert_eq!(ids(&events), ["e1", "e2", "e3"]);
    let stored = store.events.lock();
    assert_eq!(stored.len(), 3);
    assert!(
        stored.iter().all(|(stream, _)| *stream == stored[0].0),
        "one stream id"
    );
    assert!(
        stored[0].1.message.is_none(),
        "the priming event is stored too"
    );
}

/// Fails its `fail_at`-th `store_event`, like a store losing its
/// connection once.
struct FlakyStore {
    calls: std::sync::atomic::AtomicUsize,
    fail_at: usize,
}

#[async_trait::async_trait]
impl EventStore for FlakyStore {
    async fn store_event(
        &self,
        _stream_id: &str,
        _event: &ServerSseMessage,
    ) -> Result<String, rmcp::transport::streamable_http_server::session::EventStoreError> {
        let call = self.calls.fetch_add(1, Ordering::Relaxed) + 1;
        if call == self.fail_at {
            return Err("store unavailable".into());
        }
        Ok(format!("e{call}"))
    }

    async fn replay_events_after(
        &self,
        _last_event_id: &str,
    ) -> Result<
        rmcp::transport::streamable_http_server::session::EventStream,
        rmcp::transport::streamable_http_server::session::EventStoreError,
    > {
        Ok(Box::pin(futures::stream::empty()))
    }
}

#[tokio::test]
async fn an_answer_the_store_failed_on_still_ends_its_request() {
    let store = Arc::new(FlakyStore {
        calls: Default::default(),
        fail_at: 2,
    });
    let mut session = session(settings(|s| {
        s.event_store = Some(store.clone());
        s.max_request_streams = 1;
    }))
    .await;
    let mut stream = session.request(call(1, None)).await;
    assert_eq!(next(&mut stream).await.unwrap().1, "priming");
    assert!(
        session.handler.send(answer(1)).await.is_err(),
        "the handler hears of it"
    );
    assert_eq!(next(&mut stream).await, None, "the stream ends");
    // Its slot among the requests in flight and its id are free again.
    let _again = session.request(call(1, None)).await;
}

#[test]
fn the_standalone_stream_keeps_rmcps_name_in_an_event_store() {
    let store: Arc<dyn EventStore> = Arc::new(CountingStore::default());
    let settings = settings(|s| s.event_store = Some(store));
    let first = create("sid".into(), settings.clone(), Origin::Created);
    let restored = create("sid".into(), settings, Origin::Restored);
    let name = |handle: &SessionHandle| {
        let state = handle.shared().lock();
        state.standalone.events.store_name().map(str::to_owned)
    };
    assert_eq!(name(&first).as_deref(), Some("sid:common"));
    assert_eq!(name(&first), name(&restored));
}
