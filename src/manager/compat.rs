//! Building a manager the way `mcp-session` 0.2 does: `new` and the
//! `with_*` methods, kept so that migrating is renaming the crate. The
//! builder ([`BoundedSessionManager::builder`]) is the one way to set every
//! option; these check their arguments with the same functions
//! (`config::validate`).

use std::sync::Arc;
use std::time::Duration;

use rmcp::transport::streamable_http_server::session::EventStore;

use super::BoundedSessionManager;
use crate::clients::key::KeyDerivation;
use crate::config::{SessionConfig, validate};
use crate::rate_limiter::RateLimiter;
use crate::registry::Registry;
use crate::session::{LateCloseMarkers, LiveSession, SessionSettings};

impl BoundedSessionManager {
    /// A manager that keeps at most `max_sessions` sessions, each run with
    /// `session_config` (idle timeout = `session_config.keep_alive`); kept
    /// for `mcp-session` compatibility, the same as
    /// `BoundedSessionManager::builder(max_sessions).session_config(session_config)`
    /// without the `Arc` (prefer [`Self::builder`]).
    ///
    /// Each stream keeps as many events for replay as
    /// `session_config.channel_capacity` (rmcp's default, 16), unless
    /// [`Self::with_replay_capacity`] says otherwise.
    ///
    /// # Panics
    ///
    /// Panics if `max_sessions` is 0 (or beyond 2^61, tokio's semaphore
    /// limit), or if `session_config.channel_capacity` is 0.
    ///
    /// # Example
    ///
    /// ```
    /// use mcp_bounded_session::{BoundedSessionManager, SessionConfig};
    ///
    /// let manager = BoundedSessionManager::new(SessionConfig::default(), 100);
    /// assert_eq!(manager.max_sessions(), 100);
    /// assert_eq!(manager.session_count(), 0);
    /// ```
    pub fn new(session_config: SessionConfig, max_sessions: usize) -> Self {
        validate::session_config(&session_config);
        Registry::<LiveSession>::validate(max_sessions);
        Self {
            registry: Arc::new(Registry::new(max_sessions)),
            late_close_markers: Arc::new(LateCloseMarkers::new(max_sessions)),
            settings: Arc::new(SessionSettings {
                replay_capacity: session_config.channel_capacity,
                max_request_streams: Self::DEFAULT_MAX_REQUEST_STREAMS,
                event_store: None,
                session: session_config,
            }),
            rate_limiter: None,
            max_lifetime: None,
            keys: Arc::new(KeyDerivation::new()),
            clients: None,
            bind_to_client: false,
            stateless_event_store: None,
            restoring: dashmap::DashSet::new(),
            requests: None,
            #[cfg(feature = "redis")]
            redis_stores: std::sync::OnceLock::new(),
        }
    }

    /// Allows at most `max_creates` session creations in any rolling `window`
    /// (exact, see the rate limiter's docs). A refused creation returns
    /// [`BoundedSessionError::RateLimited`](crate::BoundedSessionError::RateLimited) and evicts nothing. Restores from
    /// a `SessionStore` count as creations.
    ///
    /// Kept for `mcp-session` compatibility; the builder's
    /// [`rate_limit`](crate::BoundedSessionManagerBuilder::rate_limit) is the same.
    ///
    /// # Panics
    ///
    /// Panics if `max_creates` is 0 or `window` is zero.
    ///
    /// # Example
    ///
    /// ```
    /// use std::time::Duration;
    /// use mcp_bounded_session::{BoundedSessionManager, SessionConfig};
    ///
    /// let manager = BoundedSessionManager::new(SessionConfig::default(), 100)
    ///     .with_rate_limit(10, Duration::from_secs(60));
    /// assert_eq!(manager.rate_limit_retry_after(), Some(Duration::ZERO));
    /// ```
    #[must_use]
    pub fn with_rate_limit(mut self, max_creates: usize, window: Duration) -> Self {
        self.rate_limiter = Some(RateLimiter::new(max_creates, window));
        self
    }

    /// Closes every session `lifetime` after its creation, whatever its
    /// activity, with [`CloseReason::MaxLifetime`](crate::CloseReason).
    ///
    /// Kept for `mcp-session` compatibility; the builder's
    /// [`max_lifetime`](crate::BoundedSessionManagerBuilder::max_lifetime) is the same.
    ///
    /// # Example
    ///
    /// ```
    /// use std::time::Duration;
    /// use mcp_bounded_session::{BoundedSessionManager, SessionConfig};
    ///
    /// let manager = BoundedSessionManager::new(SessionConfig::default(), 100)
    ///     .with_max_lifetime(Duration::from_secs(24 * 60 * 60));
    /// # drop(manager);
    /// ```
    #[must_use]
    pub fn with_max_lifetime(mut self, lifetime: Duration) -> Self {
        self.max_lifetime = Some(lifetime);
        self
    }

    /// How many events each SSE stream keeps for replay after a reconnection
    /// (`Last-Event-ID`); older ones are overwritten, and a client that comes
    /// back later than that gets the kept ones, the jump in their ids showing
    /// what it lost.
    ///
    /// Kept for `mcp-session` compatibility; the builder's
    /// [`replay_capacity`](crate::BoundedSessionManagerBuilder::replay_capacity) is the same.
    ///
    /// # Panics
    ///
    /// Panics if `capacity` is 0.
    ///
    /// # Example
    ///
    /// ```
    /// use mcp_bounded_session::{BoundedSessionManager, SessionConfig};
    ///
    /// let manager = BoundedSessionManager::new(SessionConfig::default(), 100)
    ///     .with_replay_capacity(64);
    /// assert_eq!(manager.replay_capacity(), 64);
    /// ```
    #[must_use]
    pub fn with_replay_capacity(mut self, capacity: usize) -> Self {
        validate::replay_capacity(capacity);
        Arc::make_mut(&mut self.settings).replay_capacity = capacity;
        self
    }

    /// At most `limit` requests in flight per session (each has its own SSE
    /// stream); one more is refused (`429` behind [`BoundedSessionLayer`]).
    /// As many completed request streams are kept for late resumes, for at
    /// most `SessionConfig::completed_cache_ttl`.
    ///
    /// Kept for `mcp-session` compatibility; the builder's
    /// [`max_request_streams`](crate::BoundedSessionManagerBuilder::max_request_streams) is the same.
    ///
    /// # Panics
    ///
    /// Panics if `limit` is 0.
    ///
    /// # Example
    ///
    /// ```
    /// use mcp_bounded_session::{BoundedSessionManager, SessionConfig};
    ///
    /// let manager = BoundedSessionManager::new(SessionConfig::default(), 100)
    ///     .with_max_request_streams(32);
    /// # drop(manager);
    /// ```
    ///
    /// [`BoundedSessionLayer`]: crate::BoundedSessionLayer
    #[must_use]
    pub fn with_max_request_streams(mut self, limit: usize) -> Self {
        validate::max_request_streams(limit);
        Arc::make_mut(&mut self.settings).max_request_streams = limit;
        self
    }

    /// Keeps sent events in an external rmcp `EventStore` (which assigns
    /// their ids and replays them, possibly on another instance) instead of
    /// each stream's in-memory ring, as `LocalSessionManager::with_event_store`.
    ///
    /// Kept for `mcp-session` compatibility; the builder's
    /// [`event_store`](crate::BoundedSessionManagerBuilder::event_store) is the same.
    ///
    /// # Example
    ///
    /// ```no_run
    /// use std::sync::Arc;
    /// use mcp_bounded_session::{BoundedSessionManager, SessionConfig};
    /// use rmcp::transport::streamable_http_server::session::EventStore;
    ///
    /// # fn demo(store: Arc<dyn EventStore>) {
    /// let manager = BoundedSessionManager::new(SessionConfig::default(), 100)
    ///     .with_event_store(store);
    /// # }
    /// ```
    #[must_use]
    pub fn with_event_store(mut self, store: Arc<dyn EventStore>) -> Self {
        Arc::make_mut(&mut self.settings).event_store = Some(store.clone());
        self.with_stateless_event_store(store)
    }
}
