//! [`MemoryEventStore`]: rmcp's `EventStore` for one process, bounded in
//! events and in time.
//!
//! # Invariants kept here
//!
//! Checked under one lock at the return of every call:
//! - the events kept over all streams never number more than `max_events`,
//!   and one stream never keeps more than `stream_capacity` (its most recent
//!   ones): memory stays bounded however many streams clients open;
//! - a replay after an id yields exactly the kept events of that id's stream
//!   and generation that follow it, in order, with the ids they were issued
//!   with; or an error when it could not be complete (the id's successor was
//!   trimmed) or the id names nothing kept. Never an event of another stream,
//!   never a silent gap;
//! - a stream neither written nor replayed for `ttl` is never replayed
//!   again, and its memory is freed at the store's next call (a store or a
//!   replay, of any stream): there is no timer, so a store nobody calls
//!   keeps its last streams, within `max_events`, until it is called;
//! - when room is needed, whole streams go, the stalest first: streams are
//!   listed in order of last use, so dropping from the front is both LRU
//!   eviction and ttl expiry, O(1) per stream.
//!
//! A stream started again under a name gets a new generation, so an older id
//! never points into the new events. Generations count from a random start,
//! not 1: a session restored after a restart or on another instance reuses
//! its stream names, and the ids kept from the old process must not match.

use std::collections::VecDeque;
use std::fmt;
use std::hash::{BuildHasher, RandomState};
use std::time::Duration;

use hashlink::LinkedHashMap;
use hashlink::linked_hash_map::RawEntryMut;
use parking_lot::{Mutex, MutexGuard};
use rmcp::transport::streamable_http_server::session::{
    EventId, EventStore, EventStoreError, EventStream, ServerSseMessage,
};
// tokio's clock, so that tests can pause and advance time; outside a
// runtime it is the system's monotonic clock.
use tokio::time::Instant;

use super::{StoreError, StoredEventId, check_stream_name};

/// A bounded in-memory rmcp `EventStore`: the streams of one process made
/// resumable without Redis.
///
/// With protocol 2026-07-28 (no session), rmcp stores every event of a
/// request stream under a fresh stream id and, on a `GET` with
/// `Last-Event-ID`, replays what followed; this store keeps those events
/// (sessions' streams too), each under the id `<stream>#<generation>-<sequence>`.
///
/// Bounds ([`MemoryEventStoreBuilder`]): `max_events` in all, dropping the
/// least recently used streams whole; `stream_capacity` per stream (its most
/// recent events); a stream neither written nor replayed for `ttl` is
/// dropped. They count events, not bytes: an event holds one JSON-RPC
/// message. Both trait methods work when called, under a lock held for a few
/// map operations, and return a future already complete.
///
/// # Example
///
/// ```
/// use futures::StreamExt;
/// use rmcp::transport::streamable_http_server::session::{EventStore, ServerSseMessage};
///
/// let store = mcp_bounded_session::MemoryEventStore::builder().stream_capacity(16).build();
/// futures::executor::block_on(async {
///     let event = ServerSseMessage::default();
///     let first = store.store_event("request-1", &event).await.unwrap();
///     let second = store.store_event("request-1", &event).await.unwrap();
///     let replayed: Vec<_> = store.replay_events_after(&first).await.unwrap().collect().await;
///     assert_eq!(replayed.len(), 1);
///     assert_eq!(replayed[0].event_id.as_deref(), Some(second.as_str()));
/// });
/// assert_eq!(store.event_count(), 2);
/// ```
pub struct MemoryEventStore {
    limits: Limits,
    state: Mutex<State>,
}

/// Configures a [`MemoryEventStore`]; made by [`MemoryEventStore::builder`].
///
/// # Example
///
/// ```
/// let store = mcp_bounded_session::MemoryEventStore::builder()
///     .max_events(10_000)
///     .stream_capacity(32)
///     .ttl(std::time::Duration::from_secs(120))
///     .build();
/// ```
#[derive(Debug, Clone)]
#[must_use]
pub struct MemoryEventStoreBuilder {
    limits: Limits,
}

#[derive(Debug, Clone, Copy)]
struct Limits {
    max_events: usize,
    stream_capacity: usize,
    ttl: Duration,
}

struct State {
    /// In order of last use: the front is the stalest stream.
    streams: LinkedHashMap<Box<str>, Stream>,
    /// The events kept over all streams.
    events: usize,
    /// The generation the next new stream gets.
    next_generation: u64,
}

struct Stream {
    generation: u64,
    /// The sequence number the next event gets; the last issued is one less.
    next_sequence: u64,
    /// The most recent events, contiguous in sequence, never empty.
    events: VecDeque<ServerSseMessage>,
    last_use: Instant,
}

impl State {
    /// Drops the streams unused for `ttl`. The list is in order of last use,
    /// so they are all at its front: O(streams dropped).
    fn drop_expired(&mut self, now: Instant, ttl: Duration) {
        while let Some(entry) = self.streams.front_entry()
            && now.saturating_duration_since(entry.get().last_use) >= ttl
        {
            self.events -= entry.remove().events.len();
        }
    }
}

impl MemoryEventStoreBuilder {
    /// The most events kept over all streams (default 100,000). When a new
    /// event would exceed it, the least recently used streams are dropped
    /// whole.
    ///
    /// # Panics
    ///
    /// If `max_events` is 0.
    ///
    /// # Example
    ///
    /// ```
    /// let store = mcp_bounded_session::MemoryEventStore::builder().max_events(1_000).build();
    /// ```
    pub fn max_events(mut self, max_events: usize) -> Self {
        assert!(max_events > 0, "max_events must be at least 1");
        self.limits.max_events = max_events;
        self
    }

    /// The most events kept per stream, the most recent ones (default 64;
    /// lowered to `max_events` if above). A client reconnecting after more
    /// events than this were sent gets
    /// [`StoreError::EventTrimmed`](crate::StoreError::EventTrimmed).
    ///
    /// # Panics
    ///
    /// If `stream_capacity` is 0.
    ///
    /// # Example
    ///
    /// ```
    /// let store = mcp_bounded_session::MemoryEventStore::builder().stream_capacity(8).build();
    /// ```
    pub fn stream_capacity(mut self, stream_capacity: usize) -> Self {
        assert!(stream_capacity > 0, "stream_capacity must be at least 1");
        self.limits.stream_capacity = stream_capacity;
        self
    }

    /// How long a stream neither written nor replayed is kept (default 10
    /// minutes). Expired streams are dropped at the next call on the store.
    ///
    /// # Panics
    ///
    /// If `ttl` is zero.
    ///
    /// # Example
    ///
    /// ```
    /// let ttl = std::time::Duration::from_secs(60);
    /// let store = mcp_bounded_session::MemoryEventStore::builder().ttl(ttl).build();
    /// ```
    pub fn ttl(mut self, ttl: Duration) -> Self {
        assert!(!ttl.is_zero(), "ttl must not be zero");
        self.limits.ttl = ttl;
        self
    }

    /// Builds the store; share it as an `Arc<MemoryEventStore>`.
    ///
    /// # Example
    ///
    /// ```
    /// let store = std::sync::Arc::new(mcp_bounded_session::MemoryEventStore::builder().build());
    /// ```
    #[must_use]
    pub fn build(self) -> MemoryEventStore {
        let mut limits = self.limits;
        // One stream alone then never exceeds the total, so making room
        // never has to drop the stream just written.
        limits.stream_capacity = limits.stream_capacity.min(limits.max_events);
        MemoryEventStore {
            limits,
            state: Mutex::new(State {
                streams: LinkedHashMap::new(),
                events: 0,
                // A random start below 2^62, so counting never overflows:
                // `RandomState` is std's randomly keyed hasher.
                next_generation: (RandomState::new().hash_one(std::process::id()) >> 2) + 1,
            }),
        }
    }
}

impl Default for MemoryEventStoreBuilder {
    /// The defaults: 100,000 events, 64 per stream, a 10-minute ttl.
    fn default() -> Self {
        Self {
            limits: Limits {
                max_events: 100_000,
                stream_capacity: 64,
                ttl: Duration::from_secs(10 * 60),
            },
        }
    }
}

impl MemoryEventStore {
    /// A builder with the defaults: 100,000 events, 64 per stream, a
    /// 10-minute ttl.
    ///
    /// # Example
    ///
    /// ```
    /// let store = mcp_bounded_session::MemoryEventStore::builder().build();
    /// ```
    pub fn builder() -> MemoryEventStoreBuilder {
        MemoryEventStoreBuilder::default()
    }

    /// The events kept over all streams, once the expired streams are
    /// dropped. Never more than `max_events`.
    ///
    /// # Example
    ///
    /// ```
    /// let store = mcp_bounded_session::MemoryEventStore::default();
    /// assert_eq!(store.event_count(), 0);
    /// ```
    pub fn event_count(&self) -> usize {
        self.lock(Instant::now()).events
    }

    /// The streams kept, once the expired ones are dropped.
    ///
    /// # Example
    ///
    /// ```
    /// let store = mcp_bounded_session::MemoryEventStore::default();
    /// assert_eq!(store.stream_count(), 0);
    /// ```
    pub fn stream_count(&self) -> usize {
        self.lock(Instant::now()).streams.len()
    }

    /// The state, once the streams expired at `now` are dropped.
    fn lock(&self, now: Instant) -> MutexGuard<'_, State> {
        let mut state = self.state.lock();
        state.drop_expired(now, self.limits.ttl);
        state
    }

    fn store(&self, name: &str, event: &ServerSseMessage) -> Result<EventId, StoreError> {
        check_stream_name(name)?;
        // Cloned before locking: the lock covers only the bookkeeping.
        let mut kept = event.clone();
        let now = Instant::now();
        let mut guard = self.lock(now);
        let state = &mut *guard;
        let stream = match state.streams.raw_entry_mut().from_key(name) {
            RawEntryMut::Occupied(mut entry) => {
                entry.to_back();
                entry.into_mut()
            }
            RawEntryMut::Vacant(entry) => {
                let generation = state.next_generation;
                state.next_generation += 1;
                let stream = Stream {
                    generation,
                    next_sequence: 1,
                    events: VecDeque::new(),
                    last_use: now,
                };
                entry.insert(name.into(), stream).1
            }
        };
        let id = StoredEventId {
            stream: name,
            generation: stream.generation,
            sequence: stream.next_sequence,
        }
        .to_string();
        kept.event_id = Some(id.clone());
        stream.next_sequence += 1;
        stream.last_use = now;
        stream.events.push_back(kept);
        state.events += 1;
        if stream.events.len() > self.limits.stream_capacity {
            stream.events.pop_front();
            state.events -= 1;
        }
        // Make room from the stalest end. The stream just written is at the
        // back and alone fits (its capacity is at most `max_events`), so the
        // loop stops before reaching it.
        while state.events > self.limits.max_events
            && let Some((_, dropped)) = state.streams.pop_front()
        {
            state.events -= dropped.events.len();
        }
        debug_assert!(state.streams.back().is_some_and(|(key, _)| **key == *name));
        Ok(id)
    }

    fn replay(&self, id: &str) -> Result<Vec<ServerSseMessage>, StoreError> {
        let wanted = StoredEventId::parse(id)?;
        let unknown = || StoreError::UnknownEvent(id.to_owned());
        let now = Instant::now();
        let mut state = self.lock(now);
        let RawEntryMut::Occupied(mut entry) =
            state.streams.raw_entry_mut().from_key(wanted.stream)
        else {
            return Err(unknown());
        };
        let stream = entry.get();
        // Another generation's id, or one never issued yet.
        if stream.generation != wanted.generation || wanted.sequence >= stream.next_sequence {
            return Err(unknown());
        }
        let oldest_kept = stream.next_sequence - stream.events.len() as u64;
        // The event right after the id is gone: a replay would have a gap.
        if wanted.sequence + 1 < oldest_kept {
            return Err(StoreError::EventTrimmed {
                id: id.to_owned(),
                oldest_kept,
            });
        }
        // Only a replay that succeeds counts as a use.
        entry.to_back();
        let stream = entry.into_mut();
        stream.last_use = now;
        // At most the events kept, so it fits a usize.
        let skip = (wanted.sequence + 1 - oldest_kept) as usize;
        Ok(stream.events.iter().skip(skip).cloned().collect())
    }
}

impl Default for MemoryEventStore {
    /// A store with the builder's defaults.
    fn default() -> Self {
        Self::builder().build()
    }
}

impl fmt::Debug for MemoryEventStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.state.lock();
        f.debug_struct("MemoryEventStore")
            .field("limits", &self.limits)
            .field("streams", &state.streams.len())
            .field("events", &state.events)
            .finish()
    }
}

// The trait is declared with `#[async_trait]`, and implemented with it.
#[async_trait::async_trait]
impl EventStore for MemoryEventStore {
    /// # Cancel safety
    ///
    /// Cancel safe: the event is stored at the first poll, which completes
    /// at once.
    async fn store_event(
        &self,
        stream_id: &str,
        event: &ServerSseMessage,
    ) -> Result<EventId, EventStoreError> {
        self.store(stream_id, event).map_err(EventStoreError::from)
    }

    /// # Cancel safety
    ///
    /// Cancel safe: the replay is read at the first poll, which completes
    /// at once.
    async fn replay_events_after(
        &self,
        last_event_id: &str,
    ) -> Result<EventStream, EventStoreError> {
        self.replay(last_event_id)
            .map(|events| -> EventStream { Box::pin(futures::stream::iter(events)) })
            .map_err(EventStoreError::from)
    }
}

#[cfg(test)]
mod tests;
