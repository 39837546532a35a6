use std::sync::Mutex;

use futures::StreamExt;
use rmcp::model::{ServerJsonRpcMessage, ServerNotification};

use super::*;
use crate::MemoryEventStore;

/// A store that names its events `event-1`, `event-2`, ... whatever their
/// stream, as a store written to rmcp's trait alone may.
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
        let n: usize = last_event_id
            .strip_prefix("event-")
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| Box::new(StoreError::UnknownEvent(last_event_id.to_owned())))?;
        let events = self.0.lock().unwrap();
        let stream = events[n - 1].0.clone();
        let after: Vec<ServerSseMessage> = events
            .iter()
            .enumerate()
            .skip(n)
            .filter(|(_, (s, _))| *s == stream)
            .map(|(i, (_, event))| {
                let mut event = event.clone();
                event.event_id = Some(format!("event-{}", i + 1));
                event
            })
            .collect();
        Ok(Box::pin(futures::stream::iter(after)))
    }
}

fn message() -> ServerSseMessage {
    ServerSseMessage::from_message(ServerJsonRpcMessage::notification(
        ServerNotification::ToolListChangedNotification(Default::default()),
    ))
}

async fn replayed_ids(store: &BoundIds, id: &str) -> Result<Vec<String>, String> {
    match store.replay_events_after(id).await {
        Ok(events) => Ok(events.map(|e| e.event_id.unwrap()).collect().await),
        Err(error) => Err(error.to_string()),
    }
}

#[tokio::test]
async fn a_stores_own_ids_go_out_bound_to_their_stream_and_replay_that_stream() {
    let store = BoundIds::new(
        Arc::new(Numbered::default()),
        IdKey::new(b"0123456789abcdef"),
    );
    let a1 = store.store_event("s1:a", &message()).await.unwrap();
    let b1 = store.store_event("s2:b", &message()).await.unwrap();
    let a2 = store.store_event("s1:a", &message()).await.unwrap();
    assert!(a1.starts_with("s1:a#@") && a1.ends_with(".event-1"), "{a1}");
    assert!(b1.starts_with("s2:b#@") && b1.ends_with(".event-2"), "{b1}");
    assert_eq!(bound_stream(&a1), Some("s1:a"));
    // Replayed with the ids the client was given.
    assert_eq!(
        replayed_ids(&store, &a1).await.unwrap(),
        std::slice::from_ref(&a2)
    );
    assert_eq!(
        replayed_ids(&store, &a2).await.unwrap(),
        Vec::<String>::new()
    );
}

#[tokio::test]
async fn another_streams_id_under_ones_own_streams_name_is_refused() {
    let store = BoundIds::new(
        Arc::new(Numbered::default()),
        IdKey::new(b"0123456789abcdef"),
    );
    let theirs = store.store_event("s2:b", &message()).await.unwrap();
    store.store_event("s2:b", &message()).await.unwrap();
    let (_, tag, store_id) = split_bound(&theirs).unwrap();
    // Their tag, or any tag, under my stream's name.
    for forged in [
        format!("s1:a#@{tag}.{store_id}"),
        format!("s1:a#@{}.{store_id}", "0".repeat(TAG_HEX)),
    ] {
        let refused = replayed_ids(&store, &forged).await.unwrap_err();
        assert!(refused.contains("never issued"), "{refused}");
    }
    // A truncated tag is no bound id at all: handed to the store as it is,
    // which does not know it.
    assert!(
        replayed_ids(&store, &format!("s1:a#@{}.{store_id}", &tag[..8]))
            .await
            .is_err()
    );
}

#[tokio::test]
async fn instances_with_one_key_resume_each_others_ids_and_with_another_key_nothing() {
    let shared: Arc<dyn EventStore> = Arc::new(Numbered::default());
    let a = BoundIds::new(shared.clone(), IdKey::new(b"the key of the fleet"));
    let b = BoundIds::new(shared.clone(), IdKey::new(b"the key of the fleet"));
    let stranger = BoundIds::new(shared, IdKey::random());
    let first = a.store_event("s1:a", &message()).await.unwrap();
    let second = a.store_event("s1:a", &message()).await.unwrap();
    assert_eq!(replayed_ids(&b, &first).await.unwrap(), [second]);
    assert!(replayed_ids(&stranger, &first).await.is_err());
}

#[tokio::test]
async fn ids_that_name_their_stream_pass_unchanged() {
    let store = BoundIds::new(Arc::new(MemoryEventStore::default()), IdKey::random());
    let first = store.store_event("s1:a", &message()).await.unwrap();
    let second = store.store_event("s1:a", &message()).await.unwrap();
    assert!(
        first.starts_with("s1:a#") && !first.starts_with("s1:a#@"),
        "{first}"
    );
    assert_eq!(bound_stream(&first), None);
    assert_eq!(replayed_ids(&store, &first).await.unwrap(), [second]);
}

#[test]
fn tags_tell_apart_where_the_stream_ends() {
    let key = IdKey::new(b"0123456789abcdef");
    assert_ne!(key.tag("ab", "c"), key.tag("a", "bc"));
    assert_eq!(key.tag("ab", "c").len(), TAG_HEX);
}
