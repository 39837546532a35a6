//! What a drain did.

use std::fmt;
use std::time::Duration;

/// What [`BoundedSessionManager::drain`](crate::BoundedSessionManager::drain)
/// did, for the log line a server prints before it exits.
///
/// # Example
///
/// ```
/// # async fn demo() {
/// use std::time::Duration;
/// use mcp_bounded_session::BoundedSessionManager;
///
/// let manager = BoundedSessionManager::builder(100).build();
/// let summary = manager.drain(Duration::from_secs(25)).await;
/// assert_eq!(summary.requests_cancelled, 0);
/// println!("{summary}");
/// # }
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct DrainSummary {
    /// Requests in flight under the layer when the drain started, or let
    /// through during it (the layer refuses 2026-07-28 requests and new
    /// streams at once; those are not counted), whose response ended before
    /// the deadline.
    pub requests_finished: usize,
    /// Requests whose response the deadline cut.
    pub requests_cancelled: usize,
    /// `GET` and `subscriptions/listen` streams ended when the drain
    /// started (each told its client to reconnect).
    pub streams_ended: usize,
    /// Sessions this instance still held at the end, closed with
    /// [`CloseReason::Drained`](crate::CloseReason::Drained).
    pub sessions_closed: usize,
    /// Of those, sessions that had a request in flight at the deadline
    /// (its handler was cancelled with the session).
    pub sessions_busy_at_close: usize,
    /// Writes the session store held back (DELETEs, session values, event
    /// appends of unknown outcome) that reached it during the drain.
    pub store_writes_flushed: usize,
    /// Writes still held back when the drain returned (the store was
    /// unreachable): lost when the process exits.
    pub store_writes_left: usize,
    /// How long the drain took.
    pub elapsed: Duration,
}

impl fmt::Display for DrainSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "drained in {:.1} s: requests: {} finished, {} cancelled at the deadline; \
             streams ended: {}; sessions closed: {} ({} busy); store writes: {} flushed, \
             {} left",
            self.elapsed.as_secs_f64(),
            self.requests_finished,
            self.requests_cancelled,
            self.streams_ended,
            self.sessions_closed,
            self.sessions_busy_at_close,
            self.store_writes_flushed,
            self.store_writes_left,
        )
    }
}
