//! How a session hands its events to its event store: to any rmcp
//! `EventStore`, one event per call; to the Redis stores, the events it
//! queued for one stream in one call (a tool call's priming event and its
//! answer in one round trip), recording which request each request
//! stream answers until its answer is stored (so another instance can
//! tell a resuming client the request was lost with its instance).

use std::sync::Arc;

use rmcp::model::RequestId;
use rmcp::transport::streamable_http_server::session::store::EventStoreError;
use rmcp::transport::streamable_http_server::session::{EventStore, ServerSseMessage};

/// A session's event store.
#[derive(Debug, Clone)]
pub(crate) struct Appender {
    store: Arc<dyn EventStore>,
    #[cfg(feature = "redis")]
    redis: Option<super::RedisEventStore>,
}

impl Appender {
    /// Any store: one event per call.
    pub(crate) fn any(store: Arc<dyn EventStore>) -> Self {
        Self {
            store,
            #[cfg(feature = "redis")]
            redis: None,
        }
    }

    /// The Redis stores' own.
    #[cfg(feature = "redis")]
    pub(crate) fn redis(store: super::RedisEventStore) -> Self {
        Self {
            store: Arc::new(store.clone()),
            redis: Some(store),
        }
    }

    /// The store, as rmcp's trait.
    pub(crate) fn store(&self) -> &Arc<dyn EventStore> {
        &self.store
    }

    /// The most events [`Self::append`] takes at once.
    pub(crate) fn max_events(&self) -> usize {
        #[cfg(feature = "redis")]
        if self.redis.is_some() {
            return super::redis::MAX_EVENTS_PER_APPEND;
        }
        1
    }

    /// Stores `events` (at most [`Self::max_events`]) of `stream`, in
    /// order: their ids, or the error that cost them all theirs. With
    /// `request`, `stream` is that request's.
    ///
    /// # Cancel safety
    ///
    /// As the store's `store_event`.
    pub(crate) async fn append(
        &self,
        stream: &str,
        events: &[ServerSseMessage],
        request: Option<&RequestId>,
    ) -> Result<Vec<String>, EventStoreError> {
        debug_assert!(events.len() <= self.max_events());
        #[cfg(feature = "redis")]
        if let Some(redis) = &self.redis {
            return Ok(redis.append_for_session(stream, events, request).await?);
        }
        let _ = request;
        let mut ids = Vec::with_capacity(events.len());
        for event in events {
            ids.push(self.store.store_event(stream, event).await?);
        }
        Ok(ids)
    }
}
