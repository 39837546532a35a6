//! [`MemorySessionStore`]: rmcp's `SessionStore` in this process's memory,
//! where a manager parks the sessions it lets go of (see
//! [`guide::parking`](crate::guide::parking)).
//!
//! An entry holds what rmcp needs to restore a session (its `initialize`
//! parameters, as the JSON rmcp's `SessionState` serializes to), the client
//! that created it, and where it is in its life:
//!
//! - *live*: a copy of the session runs in the manager (generation `g`);
//!   created when its handshake succeeds, filled when rmcp stores its
//!   state right after;
//! - *parked*: its copy ended by eviction or `park_after`; restorable
//!   until its idle deadline (its last activity plus the idle timeout) or
//!   the store's TTL, whichever comes first;
//! - *restoring*: a restore took it (`pin`) and has not admitted the new
//!   copy yet.
//!
//! # Invariants kept here
//!
//! - At most `max_parked` entries are parked, at every instant: parking
//!   one over the bound drops the least recently parked in the same
//!   critical section (the park order's lock). Live entries are bounded by
//!   the manager's cap (one per live copy), restoring ones by the restores
//!   under way.
//! - Only the copy an entry names can park or end it: a late close of an
//!   earlier copy (evicted, then restored under the same id) finds another
//!   generation and changes nothing, and a restoring entry is the
//!   restore's.
//! - An entry past its deadline is never restored (`load` and `pin` check
//!   it); it leaves memory when found, or when it reaches the front of the
//!   park order (a park drops expired entries from the front).
//! - Nothing is allocated per entry (`entries` says why): ids are kept as
//!   their UUID's 128 bits, identical states share one allocation, the
//!   park order is one ring.
//! - Locks: the park order's mutex is taken before a map shard, never
//!   after; `load` takes neither the mutex nor a write lock (a shard's
//!   read lock, as the registry's lookups), but to drop an entry it found
//!   expired.

use std::sync::Arc;
use std::time::Duration;

use rmcp::transport::streamable_http_server::session::SessionId;
use rmcp::transport::streamable_http_server::session::store::{
    SessionState, SessionStore, SessionStoreError,
};

mod entries;
#[cfg(test)]
pub(crate) mod tests;

use entries::Inner;
pub(crate) use entries::{NotParked, Parked, Pin};

/// Parked entries a store keeps by default.
const DEFAULT_MAX_PARKED: usize = 100_000;
/// How long a parked entry lives by default, at most (its session's idle
/// deadline comes first if sooner).
const DEFAULT_PARKED_TTL: Duration = Duration::from_secs(24 * 60 * 60);
/// The longest TTL: a deadline is computed as now plus the TTL, which must
/// not overflow the clock.
const MAX_TTL: Duration = Duration::from_secs(365 * 24 * 60 * 60);

/// Where a [`BoundedSessionManager`](crate::BoundedSessionManager) parks the
/// sessions it evicts or finds idle, in memory: give it to the manager's
/// builder ([`park_in`](crate::BoundedSessionManagerBuilder::park_in)) and
/// to rmcp's `StreamableHttpServerConfig::session_store`, and an evicted
/// session's next request restores it instead of answering `404`.
///
/// Bounded in parked entries (the least recently parked dropped first)
/// and in age; a parked session costs its `initialize` parameters (a
/// few hundred bytes) instead of its live copy's 22.6 KB. Cloning shares
/// the store.
///
/// # Example
///
/// ```
/// use std::sync::Arc;
/// use std::time::Duration;
/// use mcp_bounded_session::{BoundedSessionManager, MemorySessionStore};
/// use rmcp::transport::streamable_http_server::StreamableHttpServerConfig;
///
/// let parked = MemorySessionStore::builder().max_parked(50_000).build();
/// let manager = BoundedSessionManager::builder(1_000)
///     .idle_timeout(Duration::from_secs(30 * 60))
///     .park_in(&parked)
///     .park_after(Duration::from_secs(60))
///     .build();
/// let mut config = StreamableHttpServerConfig::default();
/// config.session_store = Some(Arc::new(parked));
/// # drop((manager, config));
/// ```
#[derive(Debug, Clone)]
pub struct MemorySessionStore {
    pub(crate) inner: Arc<Inner>,
}

/// Settings of a [`MemorySessionStore`].
///
/// ```
/// use std::time::Duration;
/// use mcp_bounded_session::MemorySessionStore;
///
/// let store = MemorySessionStore::builder()
///     .max_parked(10_000)
///     .ttl(Duration::from_secs(3600))
///     .build();
/// assert_eq!(store.max_parked(), 10_000);
/// ```
#[derive(Debug, Clone)]
#[must_use = "a builder does nothing until build() is called"]
pub struct MemorySessionStoreBuilder {
    max_parked: usize,
    ttl: Duration,
}

impl MemorySessionStore {
    /// Settings, starting from the defaults: 100,000 parked sessions at
    /// most, each for a day at most.
    ///
    /// ```
    /// let store = mcp_bounded_session::MemorySessionStore::builder().build();
    /// assert_eq!(store.parked(), 0);
    /// ```
    pub fn builder() -> MemorySessionStoreBuilder {
        MemorySessionStoreBuilder {
            max_parked: DEFAULT_MAX_PARKED,
            ttl: DEFAULT_PARKED_TTL,
        }
    }

    /// Sessions parked now.
    ///
    /// ```
    /// let store = mcp_bounded_session::MemorySessionStore::builder().build();
    /// assert_eq!(store.parked(), 0);
    /// ```
    pub fn parked(&self) -> usize {
        self.inner.parked_count()
    }

    /// The most sessions parked at once.
    ///
    /// ```
    /// let store = mcp_bounded_session::MemorySessionStore::builder().max_parked(3).build();
    /// assert_eq!(store.max_parked(), 3);
    /// ```
    pub fn max_parked(&self) -> usize {
        self.inner.max_parked
    }
}

impl Default for MemorySessionStore {
    fn default() -> Self {
        Self::builder().build()
    }
}

impl MemorySessionStoreBuilder {
    /// The most sessions parked at once; parking one more drops the least
    /// recently parked (its client then gets `404` and starts over).
    ///
    /// # Panics
    ///
    /// Panics if `max_parked` is 0.
    ///
    /// ```
    /// let store = mcp_bounded_session::MemorySessionStore::builder().max_parked(1).build();
    /// # drop(store);
    /// ```
    pub fn max_parked(mut self, max_parked: usize) -> Self {
        assert!(max_parked > 0, "max_parked must be at least 1");
        self.max_parked = max_parked;
        self
    }

    /// How long a parked session stays restorable at most; its idle
    /// deadline (last activity plus the manager's idle timeout) ends it
    /// sooner.
    ///
    /// # Panics
    ///
    /// Panics if `ttl` is zero or longer than a year.
    ///
    /// ```
    /// # use std::time::Duration;
    /// let store = mcp_bounded_session::MemorySessionStore::builder()
    ///     .ttl(Duration::from_secs(600))
    ///     .build();
    /// # drop(store);
    /// ```
    pub fn ttl(mut self, ttl: Duration) -> Self {
        assert!(
            !ttl.is_zero() && ttl <= MAX_TTL,
            "the parked sessions' TTL must be between 1 ns and a year, not {ttl:?}"
        );
        self.ttl = ttl;
        self
    }

    /// The store.
    ///
    /// ```
    /// let store = mcp_bounded_session::MemorySessionStore::builder().build();
    /// # drop(store);
    /// ```
    pub fn build(self) -> MemorySessionStore {
        MemorySessionStore {
            inner: Arc::new(Inner::new(self.max_parked, self.ttl)),
        }
    }
}

#[async_trait::async_trait]
impl SessionStore for MemorySessionStore {
    /// The state of a session this store keeps (parked, or whose copy is
    /// ending); `None` for an unknown or expired one.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it never suspends.
    async fn load(&self, session_id: &str) -> Result<Option<SessionState>, SessionStoreError> {
        let Some(json) = self.inner.state_of(session_id) else {
            return Ok(None);
        };
        Ok(Some(serde_json::from_slice(&json)?))
    }

    /// Keeps the state of a session the attached manager runs (rmcp calls
    /// this right after the handshake); ignored for any other id (one that
    /// ended meanwhile, or with no manager attached).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it never suspends.
    async fn store(&self, session_id: &str, state: &SessionState) -> Result<(), SessionStoreError> {
        let json = serde_json::to_vec(state)?;
        self.inner.fill(session_id, &json);
        Ok(())
    }

    /// Forgets the session (a DELETE).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it never suspends.
    async fn delete(&self, session_id: &str) -> Result<(), SessionStoreError> {
        self.inner.remove(session_id);
        Ok(())
    }
}

impl MemorySessionStore {
    /// For the manager: session `id`'s copy `generation`, of `owner`,
    /// completed its handshake; its state comes next, from rmcp.
    pub(crate) fn expect(
        &self,
        id: &SessionId,
        generation: u64,
        owner: crate::clients::ClientKey,
        lifetime_end: Option<tokio::time::Instant>,
    ) {
        self.inner.expect(id, generation, owner, lifetime_end);
    }
}
