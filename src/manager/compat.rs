//! Building a manager the way `mcp-session` 0.2 does, `new` and
//! `with_rate_limit`, kept so that migrating is renaming the crate. `new`
//! is the builder with a session configuration and ends in the same
//! constructor (`construct`); the builder
//! ([`BoundedSessionManager::builder`]) is the way to set every other
//! option.

use std::time::Duration;

use super::BoundedSessionManager;
use crate::config::{BoundedSessionManagerBuilder, SessionConfig};
use crate::rate_limiter::RateLimiter;

impl BoundedSessionManager {
    /// A manager that keeps at most `max_sessions` sessions, each run with
    /// `session_config` (idle timeout = `session_config.keep_alive`); kept
    /// for `mcp-session` compatibility, the same as
    /// `BoundedSessionManager::builder(max_sessions).session_config(session_config)`
    /// without the `Arc` (prefer [`Self::builder`]).
    ///
    /// Each stream keeps as many events for replay as
    /// `session_config.channel_capacity` (rmcp's default, 16); the builder's
    /// [`replay_capacity`](crate::BoundedSessionManagerBuilder::replay_capacity)
    /// sets another.
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
        Self::from_parts(
            BoundedSessionManagerBuilder::new(max_sessions)
                .session_config(session_config)
                .into_parts(),
        )
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
}
