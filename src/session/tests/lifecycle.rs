//! Slow clients, closes from either side, and timeouts.

use super::*;

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

fn initialize_request() -> ClientJsonRpcMessage {
    client(json!({
        "jsonrpc": "2.0", "id": 0, "method": "initialize",
        "params": {
            "protocolVersion": "2025-06-18", "capabilities": {},
            "clientInfo": { "name": "test", "version": "0" }
        }
    }))
}

#[tokio::test(start_paused = true)]
async fn a_handler_that_never_answers_initialize_times_out_like_a_silent_client() {
    let init = Duration::from_secs(10);
    let (handle, mut handler) = new_session(
        "h",
        settings(|s| s.session.init_timeout = Some(init)),
        Origin::Created,
    );
    let asking = {
        let handle = handle.clone();
        tokio::spawn(async move { handle.initialize(initialize_request()).await })
    };
    // The handler takes the request and never answers (nor polls again,
    // as rmcp's service while its handler runs `initialize`).
    assert!(handler.receive().await.is_some());
    let refused = asking.await.unwrap().unwrap_err();
    assert!(refused.is_session_not_found(), "{refused}");
    assert_eq!(handle.shared().ended(), Some(CloseReason::InitTimeout));
}

#[tokio::test(start_paused = true)]
async fn deadlines_hold_even_for_a_client_that_keeps_the_inbox_full() {
    let lifetime = Duration::from_secs(60);
    let handle = create(
        "l".into(),
        settings(|_| {}),
        Origin::Created,
        Some(Instant::now() + lifetime),
    );
    let mut handler = handle.transport(None);
    let asking = {
        let handle = handle.clone();
        tokio::spawn(async move { handle.initialize(initialize_request()).await })
    };
    assert!(handler.receive().await.is_some());
    handler.send(answer(0)).await.unwrap();
    asking.await.unwrap().unwrap();
    tokio::time::advance(lifetime).await;
    let initialized = client(json!({ "jsonrpc": "2.0", "method": "notifications/initialized" }));
    handle.accept(initialized).await.unwrap();
    assert!(
        handler.receive().await.is_none(),
        "a queued message does not outlive the lifetime"
    );
    assert_eq!(handle.shared().ended(), Some(CloseReason::MaxLifetime));

    // A deadline already past when the transport is made ends the session
    // at its first `receive`.
    let (handle, mut handler) = new_session(
        "z",
        settings(|s| s.session.init_timeout = Some(Duration::ZERO)),
        Origin::Created,
    );
    assert!(handler.receive().await.is_none());
    assert_eq!(handle.shared().ended(), Some(CloseReason::InitTimeout));
}

#[tokio::test(start_paused = true)]
async fn a_stalled_standalone_stream_hands_over_to_its_shadow_at_once() {
    let mut session = session(settings(|s| s.session.channel_capacity = 1)).await;
    let _unread = session.handle.standalone().await.unwrap();
    let mut shadow = session.handle.standalone().await.unwrap();
    session.handler.send(log_line(1)).await.unwrap();
    // Over capacity: this send waits, then disconnects the unread stream.
    session.handler.send(log_line(2)).await.unwrap();
    // No further notification needed: the shadow got what was missed.
    assert_eq!(
        ids(&[
            next(&mut shadow).await.unwrap(),
            next(&mut shadow).await.unwrap()
        ]),
        ["1", "2"]
    );
}

#[tokio::test]
async fn a_full_inbox_makes_the_next_client_message_wait_for_the_handler() {
    fn initialized() -> ClientJsonRpcMessage {
        client(json!({ "jsonrpc": "2.0", "method": "notifications/initialized" }))
    }
    let mut session = session(settings(|s| s.session.channel_capacity = 2)).await;
    session.handle.accept(initialized()).await.unwrap();
    session.handle.accept(initialized()).await.unwrap();
    let third = {
        let handle = session.handle.clone();
        tokio::spawn(async move { handle.accept(initialized()).await })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(
        !third.is_finished(),
        "the inbox holds channel_capacity messages"
    );
    assert!(session.handler.receive().await.is_some());
    tokio::time::timeout(WAIT, third)
        .await
        .expect("room made by the handler")
        .unwrap()
        .unwrap();
}

/// `park_after` counts from the last message, and a restored copy's is
/// `RESTORED_STAYS` at least (rmcp may still send a request straight to
/// it, see there); a created one's has no such floor.
#[tokio::test(start_paused = true)]
async fn a_restored_copy_is_not_parked_at_once() {
    use super::super::shared::Deadline;
    use tokio::time::Instant;

    let parking = |s: &mut SessionSettings| {
        s.parking = Some(Arc::new(crate::manager::parking::Parking::new(
            None,
            Some(Duration::from_millis(1)),
            None,
            None,
        )));
    };
    let due = |session: &Session| {
        matches!(
            session.handle.shared().timeout_check(Instant::now()),
            Deadline::Park
        )
    };
    let created = session_from(settings(parking), Origin::Created).await;
    let restored = session_from(settings(parking), Origin::Restored).await;
    tokio::time::advance(Duration::from_millis(2)).await;
    assert!(due(&created));
    assert!(
        !due(&restored),
        "parked before rmcp is done with its restore"
    );
    tokio::time::advance(Duration::from_millis(100)).await;
    assert!(due(&restored));
}
