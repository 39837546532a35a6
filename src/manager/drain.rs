//! The manager's side of a graceful drain (see `crate::drain` for what the
//! layer refuses, waits for and ends): waiting for the sessions' requests,
//! closing what is left, and flushing the session store.

use std::time::Duration;

use tokio::time::Instant;

use super::BoundedSessionManager;
use crate::close_reason::CloseReason;
use crate::drain::DrainSummary;

/// How often a drain looks whether every request has ended.
const POLL: Duration = Duration::from_millis(10);

/// How long the cut responses get to end and be counted.
const CUT_COUNTED: Duration = Duration::from_secs(1);

/// The least time the session store gets to flush, even past the
/// deadline: what it holds back is lost when the process exits.
#[cfg(feature = "redis")]
const MIN_FLUSH: Duration = Duration::from_secs(2);

impl BoundedSessionManager {
    /// Whether [`Self::drain`] was called: from then on the instance is not
    /// ready for new clients (answer your orchestrator's readiness probe
    /// with it).
    ///
    /// ```
    /// use mcp_bounded_session::BoundedSessionManager;
    ///
    /// let manager = BoundedSessionManager::builder(100).build();
    /// assert!(!manager.is_draining());
    /// ```
    pub fn is_draining(&self) -> bool {
        self.drain.is_draining()
    }

    /// Drains this instance before it stops, for both protocols, and says
    /// what it did.
    ///
    /// From the call on:
    /// - no session is created and no session held elsewhere is restored
    ///   here (`503` with `Retry-After`, so a balancer or the client goes
    ///   to another instance); behind the [`layer`](Self::layer), new
    ///   2026-07-28 requests, `GET` streams and `subscriptions/listen`
    ///   streams are refused the same way;
    /// - `GET` and listen streams open now end at once, with an SSE
    ///   `retry:` hint: clients reconnect through the balancer and resume
    ///   from the event store (sessions) or re-open their listen
    ///   (2026-07-28);
    /// - requests in flight (and requests for sessions this instance holds,
    ///   which it still serves) run to completion until `timeout` has
    ///   passed; then their responses end and the sessions this instance
    ///   holds are closed with [`CloseReason::Drained`], which cancels the
    ///   handlers still running. A session store (Redis) keeps those
    ///   sessions for the other instances;
    /// - the Redis stores send what they held back (DELETEs that could not
    ///   reach Redis, session values, appends of unknown outcome), for at
    ///   least two seconds even past `timeout`.
    ///
    /// Requests the layer does not see (the manager used without it) are
    /// waited for only through their sessions. After it returns, cancel
    /// the `cancellation_token` of rmcp's `StreamableHttpServerConfig`:
    /// rmcp keeps running a 2026-07-28 handler whose stream goes to an
    /// event store after its response ended, and only that token stops it.
    ///
    /// Calling it again drains again (the counts are the instance's since
    /// the first call); there is no way back to serving.
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
    /// assert!(manager.is_draining());
    /// assert_eq!(summary.sessions_closed, 0);
    /// # }
    /// ```
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropped early, the instance stays draining (refusing
    /// and ending streams), with nothing held; what it had not done yet
    /// (cutting requests, closing sessions, flushing) is not done.
    pub async fn drain(&self, timeout: Duration) -> DrainSummary {
        let started = Instant::now();
        let deadline = started + timeout;
        self.drain.start();
        tracing::info!(
            timeout_secs = timeout.as_secs_f64(),
            "draining: refusing new sessions and stateless requests, ending streams"
        );
        while (self.drain.in_flight() > 0 || self.registry.any_busy()) && Instant::now() < deadline
        {
            tokio::time::sleep_until((Instant::now() + POLL).min(deadline)).await;
        }
        // Which sessions had a request in flight at the deadline: cut, its
        // stream no longer marks its session busy, though the handler runs
        // until the session closes.
        let sessions = self.registry.sessions();
        self.drain.cut_requests();
        let mut summary = DrainSummary::default();
        // While the sessions are still held here: the upkeep writes only
        // the values of sessions an instance holds.
        #[cfg(feature = "redis")]
        if let Some(stores) = self.redis_stores().and_then(|stores| stores.upgrade()) {
            let until = deadline.max(Instant::now() + MIN_FLUSH);
            (summary.store_writes_flushed, summary.store_writes_left) = stores.flush(until).await;
        }
        for (id, generation, busy) in sessions {
            if self
                .registry
                .close(&id, Some(generation), CloseReason::Drained)
            {
                summary.sessions_closed += 1;
                summary.sessions_busy_at_close += usize::from(busy);
            }
        }
        // No session is left to answer a request: those cut are lost, and a
        // client resuming one elsewhere hears so at once.
        #[cfg(feature = "redis")]
        if let Some(stores) = self.redis_stores().and_then(|stores| stores.upgrade()) {
            stores.retire().await;
        }
        // The cut responses count themselves as hyper drops them, which
        // the cut wakes it to do.
        let counted_by = Instant::now() + CUT_COUNTED;
        while self.drain.in_flight() > 0 && Instant::now() < counted_by {
            tokio::time::sleep(POLL).await;
        }
        (
            summary.requests_finished,
            summary.requests_cancelled,
            summary.streams_ended,
        ) = self.drain.counts();
        summary.elapsed = started.elapsed();
        tracing::info!(%summary, "drained");
        summary
    }
}
