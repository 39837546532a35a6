//! [`RedisEventStore`]: rmcp's `EventStore` on Redis lists, one per
//! stream.
//!
//! Each entry is `<generation>-<sequence> <server> <retry ms, - or !>
//! <message JSON>`. Appending is in `append`, replaying in `replay`, and
//! the answer a client gets for a request lost with its instance in
//! `lost`.
//! A list, rather than a Redis stream: a stream preallocates its first node
//! (4 KB), and most streams here (one per request) hold two or three
//! events; a list of small entries costs about what they hold.
//!
//! # Invariants kept here
//!
//! - Ids are `<stream>#<generation>-<sequence>` (see `store::stored_id`).
//!   A stream's generation is the Redis server time (µs) of its first
//!   event, and its entries are numbered 1, 2, 3, ... within it: a stream
//!   that expired and started again has a new generation, so an old id
//!   cannot point into it, and a replay can tell a trimmed event from a
//!   foreign one.
//! - No id is issued twice, even by a Redis that lost writes: each entry
//!   records the server that wrote it (the start of its `run_id`, new on
//!   every restart, another on a replica or another cluster node), and a
//!   stream continues only on that server. After a restart from an older
//!   snapshot, a failover to a replica, or its slot's migration to another
//!   node, the next append starts a new generation, and a replay of the
//!   old one is refused ([`StoreError::UnknownEvent`]): events after its
//!   newest kept one may have been sent and lost.
//! - Appending one event or several (a session's queued events of one
//!   stream), trimming to the capacity (`LTRIM`, exact), refreshing the
//!   TTL, indexing the stream under its session (scored by last use,
//!   bounded in count) and recording whether its request is answered
//!   (`lost`) happen in one Lua script: atomic, one round trip, and no
//!   stream ever holds more than its capacity. The script touches
//!   only the keys it declares, all of the stream's slot: the streams the
//!   index lets go are deleted by the caller right after. The same script
//!   publishes an event stored on a session's standalone stream
//!   (`relay`), so a stream's publications come in its id order, and only
//!   events that were stored are published.
//! - A replay returns the kept events after the id only if none between
//!   the id and them is missing (else [`StoreError::EventTrimmed`]), none
//!   is a gap left by a failed append (else [`StoreError::ReplayGap`], see
//!   `unsettled` for what "exactly once" means), and only in the id's
//!   generation and up to the stream's newest event (else
//!   [`StoreError::UnknownEvent`]). It only reads, unless the stream's
//!   request was lost with its instance: then it appends the error saying
//!   so, once (`lost`).

use std::sync::Arc;

use rmcp::model::RequestId;
use rmcp::transport::streamable_http_server::session::store::{EventStoreError, EventStream};
use rmcp::transport::streamable_http_server::session::{EventStore, ServerSseMessage};

use super::Inner;
use crate::store::StoreError;

mod append;
pub(super) mod lost;
mod replay;

pub(crate) use append::MAX_EVENTS_PER_APPEND;
pub(super) use lost::keep_alive;
pub(super) use replay::Entry;

/// rmcp's `EventStore` on Redis: from [`RedisStores::event_store`](super::RedisStores::event_store).
///
/// # Example
///
/// ```no_run
/// # async fn demo(redis: mcp_bounded_session::RedisStores) {
/// let store = redis.event_store();
/// // Returned by the manager's `event_store()` once given to its builder.
/// # drop(store);
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct RedisEventStore {
    pub(super) inner: Arc<Inner>,
}

impl RedisEventStore {
    /// Appends `events` (a session's, queued for `stream`) in one call:
    /// their ids, in order, or the error that cost them all theirs. With
    /// `request`, `stream` is that request's, unanswered until `events`
    /// hold its answer (`lost`).
    ///
    /// # Cancel safety
    ///
    /// As [`EventStore::store_event`]'s: dropped while Redis works, the
    /// events may or may not be stored, and count as failed.
    pub(crate) async fn append_for_session(
        &self,
        stream: &str,
        events: &[ServerSseMessage],
        request: Option<&RequestId>,
    ) -> Result<Vec<String>, StoreError> {
        let request = request.map_or(append::Request::None, append::Request::Served);
        self.append_all(stream, events, request)
            .await?
            .ok_or_else(|| StoreError::ReplayGap(format!("{stream}#?")))
    }
}

#[async_trait::async_trait]
impl EventStore for RedisEventStore {
    /// Fails on a stream name no id could carry, or when Redis fails; the
    /// event then goes to the client without an id, and a replay across it
    /// is refused ([`StoreError::ReplayGap`]) rather than repeating or
    /// skipping it.
    ///
    /// # Cancel safety
    ///
    /// Dropped while Redis works, the event may or may not be stored; it
    /// counts as failed (its id is never sent): a replay across it is
    /// refused, and should Redis run it after the gap is recorded, it is
    /// dropped.
    async fn store_event(
        &self,
        stream_id: &str,
        event: &ServerSseMessage,
    ) -> Result<String, EventStoreError> {
        let ids = self
            .append_all(
                stream_id,
                std::slice::from_ref(event),
                append::Request::None,
            )
            .await?
            .ok_or_else(|| StoreError::ReplayGap(format!("{stream_id}#?")))?;
        let id = ids.into_iter().next();
        Ok(id.ok_or_else(|| StoreError::ReplayGap(format!("{stream_id}#?")))?)
    }

    /// # Cancel safety
    ///
    /// Cancel safe: it reads (after recording, if this instance has some,
    /// the gaps of appends that failed on the stream), and writes only the
    /// answer of a request lost with its instance, conditionally: dropped
    /// while Redis works, that answer is stored or not, and the next
    /// replay finds it, or appends it.
    async fn replay_events_after(
        &self,
        last_event_id: &str,
    ) -> Result<EventStream, EventStoreError> {
        let events = self.replay(last_event_id).await?;
        Ok(Box::pin(futures::stream::iter(events)))
    }
}
