//! Event and session stores: where events are kept for a replay, and where
//! a session's `initialize` parameters are kept so that any instance can
//! restore it.
//!
//! rmcp 3.11 defines the two traits, `EventStore` and `SessionStore`; this
//! module implements them:
//! - [`MemoryEventStore`]: one process, bounded in events and time. It makes
//!   the streams of protocol 2026-07-28 (stateless, no session) resumable on
//!   a single instance; sessions keep their own in-memory rings unless a
//!   store is configured for them too (see
//!   [`BoundedSessionManagerBuilder`](crate::BoundedSessionManagerBuilder)).
//! - `RedisEventStore` and `RedisSessionStore` (feature `redis`): several
//!   instances share sessions and replays through one Redis or one Redis
//!   Cluster.
//!
//! Both event stores issue ids of one format, `<stream>#<generation>-<sequence>`
//! (`stored_id`): the id alone finds its stream, so a replay reads that
//! stream and nothing else.
//!
//! # Which events a session may replay
//!
//! The manager names a session's streams `<session id>:<suffix>` and, on a
//! `Last-Event-ID` reconnection through a store, passes on only ids whose
//! stream carries the requesting session's id: an id of another session
//! replays nothing (rmcp answers an empty stream). A stateless
//! resumption, which has no session, replays only stateless streams
//! (`stateless`). An external store of one's own may issue any ids: those
//! that do not begin with their stream's name are bound to it
//! (`bound_ids`).

mod appender;
mod bound_ids;
mod memory;
pub(crate) mod memory_sessions;
#[cfg(feature = "redis")]
mod redis;
#[cfg(feature = "redis")]
mod session_id;
mod stateless;
mod stored_id;

#[cfg(feature = "redis")]
pub(crate) use self::redis::{Inner as RedisInner, SessionHost, refuses_restore};
#[cfg(feature = "redis")]
pub use self::redis::{RedisEventStore, RedisSessionStore, RedisStores, RedisStoresBuilder};
pub(crate) use appender::Appender;
pub(crate) use bound_ids::{BoundIds, IdKey, bound_stream};
pub use memory::{MemoryEventStore, MemoryEventStoreBuilder};
pub use memory_sessions::{MemorySessionStore, MemorySessionStoreBuilder};
#[cfg(feature = "redis")]
pub(crate) use session_id::is_session_id;
pub(crate) use stateless::StatelessStreams;
pub(crate) use stored_id::{StoredEventId, check_stream_name};

/// Why a store could not keep or replay an event.
///
/// rmcp's service logs these and answers a failed replay with an empty
/// stream; a session whose store failed to keep an event reports it to its
/// handler as [`TransportError::EventStore`](crate::TransportError).
///
/// # Example
///
/// ```
/// use mcp_bounded_session::StoreError;
///
/// assert!(StoreError::MalformedEventId.to_string().contains("Last-Event-ID"));
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The `Last-Event-ID` is not an id a store of this crate issued.
    #[error(
        "malformed Last-Event-ID: expected `<stream>#<generation>-<sequence>`, \
         as sent in an event's `id:` field"
    )]
    MalformedEventId,
    /// The id's stream is not kept (it expired, was dropped to make room,
    /// or never existed), or the id is ahead of it: there is nothing to
    /// replay after it. The client has to start its stream over.
    #[error(
        "no kept stream holds event {0}: its stream expired or was dropped, \
         or the id was never issued; nothing can be replayed after it"
    )]
    UnknownEvent(String),
    /// The stream is kept, but trimmed past the id: events after it were
    /// already dropped, so a replay could not be complete.
    #[error(
        "event {id} was trimmed from its stream (the oldest kept is number {oldest_kept}); \
         raise the replay capacity if clients reconnect this late"
    )]
    EventTrimmed {
        /// The id asked for.
        id: String,
        /// The sequence number of the oldest event still kept.
        oldest_kept: u64,
    },
    /// Between the id and the stream's newest event, an event went to the
    /// client without an id (the store failed on it, though it may have
    /// kept it anyway): a replay could repeat or skip it, so none is made.
    #[error(
        "events after {0} cannot be replayed exactly once: the store failed on one of them, \
         which was sent without an id; the client has to start its stream over"
    )]
    ReplayGap(String),
    /// A stream name that no id could carry (empty, or longer than 128
    /// bytes).
    #[error("invalid stream name of {length} bytes: expected 1 to 128")]
    InvalidStreamName {
        /// The name's length in bytes.
        length: usize,
    },
    /// A session id no session of this crate can have (rmcp's are
    /// lowercase hyphenated UUIDs): the session store keeps nothing of it.
    #[cfg(feature = "redis")]
    #[error(
        "session id of {length} bytes is not one this server issues (a lowercase hyphenated UUID)"
    )]
    InvalidSessionId {
        /// The id's length in bytes.
        length: usize,
    },
    /// A setting of the Redis stores' builder that cannot work: no node of
    /// a cluster, a key prefix with `{` or `}` (it would change the keys'
    /// hash tags), a TTL under a millisecond, a zero upkeep interval.
    #[cfg(feature = "redis")]
    #[error("invalid Redis store settings: {0}")]
    InvalidConfig(String),
    /// Redis failed or could not be reached; the operation may not have
    /// happened.
    #[cfg(feature = "redis")]
    #[error("redis: {0} (the store reconnects by itself; check that the Redis URL answers)")]
    Redis(#[from] ::redis::RedisError),
    /// Redis failed less than a second ago, so the call did not try it
    /// (calls try again each second, and the upkeep all the time).
    #[cfg(feature = "redis")]
    #[error(
        "redis failed less than a second ago; not tried again yet (check that the Redis URL answers)"
    )]
    RedisUnavailable,
    /// A kept value could not be encoded or decoded: written by another
    /// version of this crate, or by something else under the same prefix.
    #[cfg(feature = "redis")]
    #[error(
        "a stored value could not be encoded or decoded: {0} (is another program or version \
         writing under the same key prefix?)"
    )]
    Encoding(#[from] serde_json::Error),
}
