//! The event store as rmcp's stateless path sees it.
//!
//! # Invariant kept here
//!
//! A stateless resumption (a `GET` with `Last-Event-ID` and protocol
//! 2026-07-28, which carries no session) never replays a session's events.
//! rmcp asks the manager's `event_store()` directly, with no session to
//! check against; when sessions keep their streams in the same store, an id
//! of a session's stream (named `<session id>:<suffix>`, and ids begin with
//! their stream's name) would otherwise replay that session's events to
//! anyone holding the id, bypassing the owner check and outliving the
//! session. rmcp names stateless streams with UUIDs, which hold no colon:
//! an id with a colon is refused here.
//!
//! It also keeps a store outage from failing stateless requests: rmcp ends
//! a stateless stream whose event could not be stored, so an event the
//! store failed on gets an id that no store issues, which resumes nothing.

use std::sync::Arc;

use rmcp::transport::streamable_http_server::session::store::{EventStoreError, EventStream};
use rmcp::transport::streamable_http_server::session::{EventStore, ServerSseMessage};

use super::StoreError;

/// `store` with replays limited to stateless streams.
pub(crate) struct StatelessStreams(pub(crate) Arc<dyn EventStore>);

impl std::fmt::Debug for StatelessStreams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StatelessStreams(..)")
    }
}

/// The id of an event the store failed to keep: never issued by a store
/// (sequences start at 1), so a resumption from it is refused.
fn unstored_id(stream: &str) -> String {
    format!("{stream}#0-0")
}

/// Whether `event_id` may name an event of a session's stream (a bound
/// id's stream is before its tag; a store's own id may hold anything
/// after it).
fn names_a_session_stream(event_id: &str) -> bool {
    super::bound_stream(event_id)
        .unwrap_or(event_id)
        .contains(':')
}

#[async_trait::async_trait]
impl EventStore for StatelessStreams {
    async fn store_event(
        &self,
        stream_id: &str,
        event: &ServerSseMessage,
    ) -> Result<String, EventStoreError> {
        match self.0.store_event(stream_id, event).await {
            Ok(id) => Ok(id),
            // rmcp ends a stateless request whose event could not be
            // stored; a store outage must not fail requests. The event goes
            // out with an id no store issued (sequence 0 is never one),
            // whose resumption is refused like an expired one's.
            Err(error) => {
                tracing::debug!(%error, "event store failed; stateless event sent with an id that cannot be resumed");
                Ok(unstored_id(stream_id))
            }
        }
    }

    async fn replay_events_after(
        &self,
        last_event_id: &str,
    ) -> Result<EventStream, EventStoreError> {
        if names_a_session_stream(last_event_id) {
            return Err(Box::new(StoreError::UnknownEvent(last_event_id.to_owned())));
        }
        self.0.replay_events_after(last_event_id).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MemoryEventStore;
    use futures::StreamExt;

    #[tokio::test]
    async fn a_stateless_replay_reads_stateless_streams_only() {
        let store = StatelessStreams(Arc::new(MemoryEventStore::default()));
        let mut event = ServerSseMessage::default();
        event.retry = Some(std::time::Duration::from_millis(5));
        let stateless = "0b7e1c2a-5f7e-4c1b-9d7e-1c2a5f7e4c1b";
        let session = "9f1d2e3c-5f7e-4c1b-9d7e-1c2a5f7e4c1b:common";
        let first = store.store_event(stateless, &event).await.unwrap();
        store.store_event(stateless, &event).await.unwrap();
        let own = store.0.store_event(session, &event).await.unwrap();
        store.0.store_event(session, &event).await.unwrap();
        let replayed = store.replay_events_after(&first).await.unwrap();
        assert_eq!(replayed.count().await, 1);
        assert!(store.replay_events_after(&own).await.is_err());
        // The store itself still replays it (as the session's own resume does).
        assert_eq!(
            store
                .0
                .replay_events_after(&own)
                .await
                .unwrap()
                .count()
                .await,
            1
        );
    }

    #[tokio::test]
    async fn an_event_the_store_refused_gets_an_id_that_resumes_nothing() {
        let store = StatelessStreams(Arc::new(MemoryEventStore::default()));
        // The memory store refuses a name longer than 128 bytes.
        let stream = "x".repeat(200);
        let id = store
            .store_event(&stream, &ServerSseMessage::default())
            .await
            .unwrap();
        assert!(store.replay_events_after(&id).await.is_err());
    }
}
