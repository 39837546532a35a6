//! A snapshot of the registry's counters.

/// A snapshot of the manager's internal counters, for metrics and checks.
///
/// Each field is read separately, so the snapshot is only consistent while no
/// session is being created or closed. At rest, `session_count == mapped` and
/// `session_count + free_slots == max_sessions`; `queued - stale` entries are
/// current, one per idle session (a busy one may have none).
///
/// # Example
///
/// ```
/// use mcp_bounded_session::{BoundedSessionManager, SessionConfig};
///
/// let manager = BoundedSessionManager::new(SessionConfig::default(), 10);
/// let stats = manager.stats();
/// assert_eq!(stats.session_count, 0);
/// assert_eq!(stats.free_slots, 10);
/// assert_eq!(stats.queued, 0);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct SessionStats {
    /// The cap.
    pub max_sessions: usize,
    /// Live sessions (what `session_count()` returns).
    pub session_count: usize,
    /// Entries in the session map.
    pub mapped: usize,
    /// Slots not owned by any session.
    pub free_slots: usize,
    /// Entries in the eviction queues, current and stale.
    pub queued: usize,
    /// Entries in the eviction queues that no longer stand for their
    /// session's place (it ended, or moved to the tail).
    pub stale: usize,
    /// Entries pushed since the manager was made: one per creation, plus
    /// one per activity that moved a session to the tail (see the README's
    /// "Eviction and fairness" for when activity does not move it).
    pub queue_pushes: u64,
}

impl SessionStats {
    /// Whether the counters agree: every slot is free or owned by exactly one
    /// mapped session, and the queues hold at most one current entry per
    /// live session plus the stale entries counted. Meaningful only while
    /// nothing is in flight.
    ///
    /// ```
    /// use mcp_bounded_session::{BoundedSessionManager, SessionConfig};
    ///
    /// let manager = BoundedSessionManager::new(SessionConfig::default(), 10);
    /// assert!(manager.stats().is_consistent());
    /// ```
    pub fn is_consistent(&self) -> bool {
        self.session_count == self.mapped
            && self.session_count + self.free_slots == self.max_sessions
            && self.stale <= self.queued
            && self.queued <= self.session_count + self.stale
    }

    /// Whether every live session has exactly one current queue entry, as
    /// when no request is in flight: [`Self::is_consistent`], and
    /// `queued == session_count + stale`.
    ///
    /// ```
    /// use mcp_bounded_session::{BoundedSessionManager, SessionConfig};
    ///
    /// let manager = BoundedSessionManager::new(SessionConfig::default(), 10);
    /// assert!(manager.stats().is_at_rest());
    /// ```
    pub fn is_at_rest(&self) -> bool {
        self.is_consistent() && self.queued == self.session_count + self.stale
    }
}
