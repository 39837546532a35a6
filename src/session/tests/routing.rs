//! Which stream each message rides, and the bounds on request and shadow
//! streams.

use super::*;

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
async fn a_cancelled_requests_late_answer_never_reaches_a_request_reusing_its_id() {
    let mut session = session(settings(|_| {})).await;
    let mut standalone = session.handle.standalone().await.unwrap();
    let mut cancelled = session.request(call(1, None)).await;
    let cancel = client(json!({
        "jsonrpc": "2.0", "method": "notifications/cancelled",
        "params": { "requestId": 1, "reason": "user" }
    }));
    session.handle.accept(cancel).await.unwrap();
    assert!(
        session.handler.receive().await.is_some(),
        "the cancellation"
    );
    assert_eq!(
        labels_of(&drain(&mut cancelled).await),
        ["priming"],
        "the cancelled request's stream ends"
    );
    // Reusing the id now would let the late answer below reach the new
    // request: refused until that answer came.
    assert!(matches!(
        session.handle.request(call(1, None)).await,
        Err(BoundedSessionError::DuplicateRequestId(_))
    ));
    // The handler answered before it saw the cancellation.
    session.handler.send(answer(1)).await.unwrap();
    let mut reused = session.request(call(1, None)).await;
    session.handler.send(answer(1)).await.unwrap();
    let events = drain(&mut reused).await;
    assert_eq!(
        labels_of(&events)
            .iter()
            .filter(|what| what.starts_with("answer"))
            .count(),
        1,
        "{events:?}"
    );
    // The late answer went to the cancelled request's stream, kept for a
    // resume there, not to the standalone stream.
    assert_pending(&mut standalone).await;
}

fn labels_of(events: &[(String, String)]) -> Vec<String> {
    events.iter().map(|(_, what)| what.clone()).collect()
}
