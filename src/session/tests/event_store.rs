//! Sessions whose events an external event store names and keeps.

use super::*;

/// An in-memory `EventStore` that names the events of its `n`-th call
/// `en`, keeps them, and on request fails one call (like a store losing its
/// connection once) or holds one until `release` is notified (like a slow
/// store).
#[derive(Default)]
struct TestStore {
    events: parking_lot::Mutex<Vec<(String, ServerSseMessage)>>,
    calls: std::sync::atomic::AtomicUsize,
    fail_at: Option<usize>,
    hold_at: Option<usize>,
    release: tokio::sync::Notify,
}

#[async_trait::async_trait]
impl rmcp::transport::streamable_http_server::session::EventStore for TestStore {
    async fn store_event(
        &self,
        stream_id: &str,
        event: &ServerSseMessage,
    ) -> Result<String, rmcp::transport::streamable_http_server::session::EventStoreError> {
        let call = self.calls.fetch_add(1, Ordering::Relaxed) + 1;
        if self.hold_at == Some(call) {
            self.release.notified().await;
        }
        if self.fail_at == Some(call) {
            return Err("store unavailable".into());
        }
        self.events
            .lock()
            .push((stream_id.to_owned(), event.clone()));
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

/// A session keeping its events in `store`, with one request in flight at
/// most (so a test sees that a request's place was freed).
async fn one_request_at_a_time(store: Arc<TestStore>) -> Session {
    session(settings(|s| {
        s.event_store = Some(crate::store::Appender::any(store));
        s.max_request_streams = 1;
    }))
    .await
}

#[tokio::test]
async fn with_an_event_store_the_store_names_and_keeps_the_events() {
    let store = Arc::new(TestStore::default());
    let mut session = session(settings(|s| {
        s.event_store = Some(crate::store::Appender::any(store.clone()))
    }))
    .await;
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

#[tokio::test]
async fn an_answer_the_store_failed_on_still_reaches_the_client_without_an_id() {
    let store = Arc::new(TestStore {
        fail_at: Some(2),
        ..TestStore::default()
    });
    let mut session = one_request_at_a_time(store.clone()).await;
    let mut stream = session.request(call(1, None)).await;
    assert_eq!(next(&mut stream).await.unwrap().1, "priming");
    session.handler.send(answer(1)).await.unwrap();
    let (id, what) = next(&mut stream).await.unwrap();
    assert_eq!(
        (id.as_str(), what.as_str()),
        ("", "answer 1"),
        "delivered, with no id"
    );
    assert_eq!(next(&mut stream).await, None, "the stream ends");
    // Its slot among the requests in flight and its id are free again.
    let _again = session.request(call(1, None)).await;
}

#[tokio::test]
async fn a_priming_event_the_store_failed_on_goes_out_without_an_id() {
    let store = Arc::new(TestStore {
        fail_at: Some(1),
        ..TestStore::default()
    });
    let mut session = session(settings(|s| {
        s.event_store = Some(crate::store::Appender::any(store.clone()))
    }))
    .await;
    let mut stream = session.request(call(1, None)).await;
    assert_eq!(
        next(&mut stream).await.unwrap(),
        (String::new(), "priming".to_owned())
    );
    session.handler.send(answer(1)).await.unwrap();
    let (id, what) = next(&mut stream).await.unwrap();
    assert_eq!((id.as_str(), what.as_str()), ("e2", "answer 1"));
}

#[test]
fn the_standalone_stream_keeps_rmcps_name_in_an_event_store() {
    let store = Arc::new(TestStore::default());
    let settings = settings(|s| s.event_store = Some(crate::store::Appender::any(store.clone())));
    let first = create("sid".into(), settings.clone(), Origin::Created, None);
    let restored = create("sid".into(), settings, Origin::Restored, None);
    let name = |handle: &SessionHandle| {
        let state = handle.shared().lock();
        state.standalone.events.store_name().map(str::to_owned)
    };
    assert_eq!(name(&first).as_deref(), Some("sid:common"));
    assert_eq!(name(&first), name(&restored));
}

#[tokio::test]
async fn a_send_dropped_while_the_store_works_loses_no_event() {
    // Call 1 stores the priming event; call 2, the answer, hangs.
    let store = Arc::new(TestStore {
        hold_at: Some(2),
        ..TestStore::default()
    });
    let mut session = one_request_at_a_time(store.clone()).await;
    let mut stream = session.request(call(1, None)).await;
    assert_eq!(next(&mut stream).await.unwrap().1, "priming");
    let answering = tokio::spawn(session.handler.send(answer(1)));
    while store.calls.load(Ordering::Relaxed) < 2 {
        tokio::task::yield_now().await;
    }
    answering.abort();
    let _ = answering.await;
    // The next send stores the answer again, then its own event.
    session.handler.send(log_line(1)).await.unwrap();
    let (id, what) = next(&mut stream).await.unwrap();
    assert_eq!((id.as_str(), what.as_str()), ("e3", "answer 1"));
    assert_eq!(next(&mut stream).await, None, "the answered stream ends");
    // Its place among the requests in flight is free again.
    let _again = session.request(call(2, None)).await;
}
