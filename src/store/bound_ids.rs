//! Any rmcp `EventStore`'s ids, bound to their stream.
//!
//! # Invariant kept here
//!
//! A resume replays events of one stream only: the one its id was issued
//! for. rmcp's `EventStore` trait lets a store pick any id (`event-1`,
//! `event-2`, ...), and the manager learns a resumed id's stream only from
//! the id itself: it replays a session's streams to that session alone
//! (their names begin with the session id), and no session's stream to a
//! stateless resume. An id that does not begin with its stream's name is
//! therefore sent to the client bound to it: `<stream>#@<tag>.<store's
//! id>`, the tag a keyed digest (HMAC-SHA-256, 128 bits) of the stream's
//! name and the store's id. On a resume the tag is checked before the
//! store's own id, and only that, is handed back to the store; a client
//! cannot put another stream's id under its own stream's name without the
//! key. The replayed events' ids are bound the same way.
//!
//! An id that begins with `<stream>#` (and not `<stream>#@`), as this
//! crate's stores' ids do, already names its stream: it goes out and comes
//! back unchanged, and the store is trusted to resolve it by that name (a
//! store that ignored the name and read, say, only a trailing number could
//! be made to replay another stream's events by an id of that shape: such
//! a store must return ids that do not begin with the stream's name).
//!
//! The key is random per process unless the builder is given one
//! ([`event_id_key`](crate::BoundedSessionManagerBuilder::event_id_key)):
//! instances that share a store must share the key, or a resume on another
//! instance is refused as unknown.

use std::sync::Arc;

use futures::StreamExt;
use hmac::{Hmac, KeyInit, Mac};
use rmcp::transport::streamable_http_server::session::store::{EventStoreError, EventStream};
use rmcp::transport::streamable_http_server::session::{EventStore, ServerSseMessage};
use sha2::Sha256;

use super::StoreError;

/// Between a stream's name and the tag of a bound id.
const MARK: &str = "#@";
/// Hex digits of a tag (128 bits).
const TAG_HEX: usize = 32;

/// The key tags are made with.
#[derive(Clone)]
pub(crate) struct IdKey(Hmac<Sha256>);

impl std::fmt::Debug for IdKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("IdKey(..)")
    }
}

impl IdKey {
    /// A key from `bytes` (the builder checked the length).
    pub(crate) fn new(bytes: &[u8]) -> Self {
        // HMAC takes keys of any length.
        Self(Hmac::new_from_slice(bytes).unwrap_or_else(|_| unreachable!("any length")))
    }

    /// A key drawn at random: two version-4 UUIDs from rmcp's session
    /// ids (244 bits from the operating system's generator).
    pub(crate) fn random() -> Self {
        use rmcp::transport::common::server_side_http::session_id;
        Self::new(format!("{}{}", session_id(), session_id()).as_bytes())
    }

    fn tag(&self, stream: &str, id: &str) -> String {
        let mut mac = self.0.clone();
        // The length first: `("ab", "c")` and `("a", "bc")` differ.
        mac.update(&(stream.len() as u64).to_le_bytes());
        mac.update(stream.as_bytes());
        mac.update(id.as_bytes());
        let digest = mac.finalize().into_bytes();
        digest[..TAG_HEX / 2]
            .iter()
            .map(|byte| format!("{byte:02x}"))
            .collect()
    }
}

/// Whether `id`, issued for `stream`, names it (see the module docs).
fn names_its_stream(stream: &str, id: &str) -> bool {
    id.strip_prefix(stream)
        .and_then(|rest| rest.strip_prefix('#'))
        .is_some_and(|rest| !rest.starts_with('@'))
}

/// A bound id's stream, tag and store id, if `id` has that shape.
fn split_bound(id: &str) -> Option<(&str, &str, &str)> {
    let (stream, rest) = id.split_once(MARK)?;
    let (tag, store_id) = rest.split_at_checked(TAG_HEX)?;
    let store_id = store_id.strip_prefix('.')?;
    Some((stream, tag, store_id))
}

/// The stream a bound id names, if `id` is one.
pub(crate) fn bound_stream(id: &str) -> Option<&str> {
    split_bound(id).map(|(stream, _, _)| stream)
}

/// `store` with its ids bound to their streams (see the module docs).
pub(crate) struct BoundIds {
    store: Arc<dyn EventStore>,
    key: IdKey,
}

impl BoundIds {
    pub(crate) fn new(store: Arc<dyn EventStore>, key: IdKey) -> Self {
        Self { store, key }
    }

    fn bind(&self, stream: &str, id: String) -> String {
        if names_its_stream(stream, &id) {
            return id;
        }
        format!("{stream}{MARK}{}.{id}", self.key.tag(stream, &id))
    }
}

#[async_trait::async_trait]
impl EventStore for BoundIds {
    async fn store_event(
        &self,
        stream_id: &str,
        event: &ServerSseMessage,
    ) -> Result<String, EventStoreError> {
        let id = self.store.store_event(stream_id, event).await?;
        Ok(self.bind(stream_id, id))
    }

    async fn replay_events_after(
        &self,
        last_event_id: &str,
    ) -> Result<EventStream, EventStoreError> {
        let Some((stream, tag, store_id)) = split_bound(last_event_id) else {
            return self.store.replay_events_after(last_event_id).await;
        };
        // Not compared in constant time: a tag guessed byte by byte from
        // timings would still need its store id's stream's name and the
        // key's digest to match, and the comparison's time varies by
        // nanoseconds over a network's milliseconds.
        if self.key.tag(stream, store_id) != tag {
            return Err(Box::new(StoreError::UnknownEvent(last_event_id.to_owned())));
        }
        let events = self.store.replay_events_after(store_id).await?;
        let (stream, key) = (stream.to_owned(), self.key.clone());
        let bound = Self {
            store: self.store.clone(),
            key,
        };
        Ok(Box::pin(events.map(move |mut event| {
            event.event_id = event.event_id.map(|id| bound.bind(&stream, id));
            event
        })))
    }
}

#[cfg(test)]
mod tests;
