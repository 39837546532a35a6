//! [`BoundedSessionManager`]: rmcp's `SessionManager` on top of the registry.
//!
//! This module only wires the pieces together; each invariant is kept in the
//! module named after it: the cap and eviction in [`crate::registry`], the
//! creation order in [`crate::eviction_queue`], the rate limit in
//! [`crate::rate_limiter`], and cleanup when a session ends in
//! [`crate::session`].
//!
//! Every request-path method (`has_session`, `create_stream`,
//! `accept_message`, `create_standalone_stream`, `resume`) does one `DashMap`
//! lookup and clones the session's handle out of it, so no map lock is held
//! while it talks to the session worker.

use std::sync::Arc;
use std::time::Duration;

use futures::Stream;
use rmcp::model::{ClientJsonRpcMessage, ServerJsonRpcMessage};
use rmcp::transport::WorkerTransport;
use rmcp::transport::common::server_side_http::session_id;
use rmcp::transport::streamable_http_server::session::local::{
    EventId, LocalSessionHandle, LocalSessionManagerError, SessionConfig, SessionError,
    create_local_session,
};
use rmcp::transport::streamable_http_server::session::{
    EventStore, RestoreOutcome, ServerSseMessage, SessionId, SessionManager,
};
use tokio_stream::wrappers::ReceiverStream;

use crate::close_reason::CloseReason;
use crate::error::BoundedSessionError;
use crate::http::{self, Refusal};
use crate::rate_limiter::{Grant, RateLimiter};
use crate::registry::{Registry, SessionStats, Slot};
use crate::session::{EndedHandlers, Lease, LiveSession, SessionRegistry, SessionTransport};

/// An rmcp `SessionManager` that keeps at most `max_sessions` sessions in
/// memory, evicting the oldest when full, with optional rate limiting of
/// session creation and a maximum session lifetime.
///
/// It is a drop-in replacement for `mcp-session` 0.2's manager of the same
/// name and for rmcp's `LocalSessionManager`: pass it (in an [`Arc`]) to
/// `StreamableHttpService::new`.
///
/// Guarantees, under any concurrency:
/// - live sessions never exceed `max_sessions`; when full, a creation evicts
///   the oldest live session and takes its slot;
/// - at most `max_creates` creations in any rolling window, when configured;
/// - a session whose worker or handler ended (DELETE, eviction, idle or init
///   timeout, maximum lifetime, handler exit, shutdown) leaves the map and
///   frees its slot at once; its id answers 404 afterwards;
/// - lookups never wait behind a creation or an eviction, and no lock is
///   held across an `.await`.
///
/// # Example
///
/// ```no_run
/// use std::sync::Arc;
/// use std::time::Duration;
/// use mcp_bounded_session::{BoundedSessionManager, SessionConfig};
///
/// let mut session_config = SessionConfig::default();
/// session_config.keep_alive = Some(Duration::from_secs(15 * 60));
/// let manager = Arc::new(
///     BoundedSessionManager::new(session_config, 1_000)
///         .with_rate_limit(100, Duration::from_secs(60)),
/// );
/// // StreamableHttpService::new(factory, manager, StreamableHttpServerConfig::default())
/// # drop(manager);
/// ```
#[derive(Debug)]
pub struct BoundedSessionManager {
    registry: Arc<SessionRegistry>,
    ended_handlers: Arc<EndedHandlers>,
    session_config: SessionConfig,
    rate_limiter: Option<RateLimiter>,
    max_lifetime: Option<Duration>,
}

impl BoundedSessionManager {
    /// A manager that keeps at most `max_sessions` sessions, each run with
    /// `session_config` (idle timeout = `session_config.keep_alive`).
    ///
    /// # Panics
    ///
    /// Panics if `max_sessions` is 0 (or beyond 2^61, tokio's semaphore limit).
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
        Self {
            registry: Arc::new(Registry::new(max_sessions)),
            ended_handlers: Arc::new(EndedHandlers::new(max_sessions)),
            session_config,
            rate_limiter: None,
            max_lifetime: None,
        }
    }

    /// Allows at most `max_creates` session creations in any rolling `window`
    /// (exact, see the rate limiter's docs). A refused creation returns
    /// [`BoundedSessionError::RateLimited`] and evicts nothing. Restores from
    /// a `SessionStore` count as creations.
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

    /// The number of live sessions. Same value as [`Self::session_count`];
    /// async for compatibility with `mcp-session`.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it never suspends.
    ///
    /// # Example
    ///
    /// ```
    /// # use mcp_bounded_session::{BoundedSessionManager, SessionConfig};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let manager = BoundedSessionManager::new(SessionConfig::default(), 10);
    /// assert_eq!(manager.active_session_count().await, 0);
    /// # }
    /// ```
    pub async fn active_session_count(&self) -> usize {
        self.session_count()
    }

    /// The number of live sessions: one atomic load, no lock.
    ///
    /// ```
    /// # use mcp_bounded_session::{BoundedSessionManager, SessionConfig};
    /// let manager = BoundedSessionManager::new(SessionConfig::default(), 10);
    /// assert_eq!(manager.session_count(), 0);
    /// ```
    pub fn session_count(&self) -> usize {
        self.registry.live()
    }

    /// The configured cap.
    ///
    /// ```
    /// # use mcp_bounded_session::{BoundedSessionManager, SessionConfig};
    /// let manager = BoundedSessionManager::new(SessionConfig::default(), 10);
    /// assert_eq!(manager.max_sessions(), 10);
    /// ```
    pub fn max_sessions(&self) -> usize {
        self.registry.max_sessions()
    }

    /// The configuration each session's worker runs with.
    ///
    /// ```
    /// # use mcp_bounded_session::{BoundedSessionManager, SessionConfig};
    /// let manager = BoundedSessionManager::new(SessionConfig::default(), 10);
    /// assert_eq!(manager.session_config().channel_capacity, 16);
    /// ```
    pub fn session_config(&self) -> &SessionConfig {
        &self.session_config
    }

    /// How long until the rate limiter would grant a creation (zero if now),
    /// or `None` without a rate limit. Suitable for a `Retry-After` header.
    ///
    /// ```
    /// # use mcp_bounded_session::{BoundedSessionManager, SessionConfig};
    /// let manager = BoundedSessionManager::new(SessionConfig::default(), 10);
    /// assert_eq!(manager.rate_limit_retry_after(), None);
    /// ```
    pub fn rate_limit_retry_after(&self) -> Option<Duration> {
        self.rate_limiter.as_ref().map(RateLimiter::retry_after)
    }

    /// A snapshot of the internal counters (cap, live sessions, free slots,
    /// eviction-queue length); see [`SessionStats`].
    ///
    /// ```
    /// # use mcp_bounded_session::{BoundedSessionManager, SessionConfig};
    /// let manager = BoundedSessionManager::new(SessionConfig::default(), 10);
    /// assert_eq!(manager.stats().free_slots, 10);
    /// ```
    pub fn stats(&self) -> SessionStats {
        self.registry.census()
    }

    /// The session's handle. If it is gone, records `gone` for the HTTP
    /// layer: the request raced the end of its session.
    fn handle(
        &self,
        id: &SessionId,
        gone: Refusal,
    ) -> Result<LocalSessionHandle, BoundedSessionError> {
        let handle = self
            .registry
            .with_session(id, |session| session.handle.clone());
        handle.ok_or_else(|| {
            http::record(gone);
            LocalSessionManagerError::SessionNotFound(id.clone()).into()
        })
    }

    /// A grant from the rate limiter, if one is configured; a refusal is
    /// recorded for the HTTP layer.
    fn rate_grant(&self) -> Result<Option<Grant<'_>>, BoundedSessionError> {
        let Some(limiter) = &self.rate_limiter else {
            return Ok(None);
        };
        let grant = limiter.try_acquire().map_err(|retry_after| {
            http::record(Refusal::RateLimited { retry_after });
            tracing::debug!(
                retry_after_secs = retry_after.as_secs_f64(),
                "session admission refused by the rate limit"
            );
            BoundedSessionError::RateLimited
        })?;
        Ok(Some(grant))
    }

    /// Starts a worker for `id` and admits it with `slot`; gives the slot
    /// back (and stops the worker) if `id` is already live.
    fn admit(&self, slot: Slot<'_>, id: SessionId) -> Option<SessionTransport> {
        let (handle, worker) = create_local_session(id.clone(), self.session_config.clone());
        let transport = WorkerTransport::spawn(worker);
        let session = LiveSession {
            handle: handle.clone(),
            cancel: transport.cancel_token(),
        };
        match self.registry.insert(slot, id.clone(), session) {
            Ok(seq) => Some(SessionTransport::new(
                transport,
                handle,
                Lease::new(self.registry.clone(), self.ended_handlers.clone(), id, seq),
                &self.session_config,
                self.max_lifetime,
            )),
            Err((_slot, _session)) => {
                // Dropping the slot frees it; dropping the transport cancels
                // the worker just spawned.
                None
            }
        }
    }
}

impl SessionManager for BoundedSessionManager {
    type Error = BoundedSessionError;
    type Transport = SessionTransport;

    /// # Cancel safety
    ///
    /// Cancel safe. The only suspension point is waiting for a slot, which
    /// happens only while a close is in flight or every slot belongs to a
    /// creation still in progress; dropping the future there returns its
    /// rate-limit grant and holds no slot.
    async fn create_session(&self) -> Result<(SessionId, Self::Transport), Self::Error> {
        let grant = self.rate_grant()?;
        loop {
            let slot = self.registry.acquire_slot().await;
            let id = session_id();
            // A random 122-bit id that is already live would be returned
            // here; retrying is cheaper than a special error for it.
            if let Some(transport) = self.admit(slot, id.clone()) {
                if let Some(grant) = grant {
                    grant.commit();
                }
                return Ok((id, transport));
            }
        }
    }

    /// # Cancel safety
    ///
    /// Cancel safe: no lock or slot is held across its `.await`. Dropped
    /// before the request reached the worker, the session waits for its
    /// handshake until `init_timeout`; dropped after, rmcp's worker cannot
    /// deliver the answer and stops, and the session closes at once
    /// (`WorkerEnded`).
    async fn initialize_session(
        &self,
        id: &SessionId,
        message: ClientJsonRpcMessage,
    ) -> Result<ServerJsonRpcMessage, Self::Error> {
        let gone = Refusal::EvictedBeforeInitialized;
        let handle = self.handle(id, gone)?;
        handle
            .initialize(message)
            .await
            .map_err(|error| worker_error(error, gone))
    }

    /// # Cancel safety
    ///
    /// Cancel safe: it never suspends.
    async fn has_session(&self, id: &SessionId) -> Result<bool, Self::Error> {
        Ok(self.registry.contains(id))
    }

    /// Closes the session at once: removes it, frees its slot and stops its
    /// worker (which ends its SSE streams). Closing an unknown or already
    /// closed session succeeds and does nothing.
    ///
    /// rmcp's service also calls this when a session's handler has ended;
    /// that call is recognised and closes nothing, so it cannot close a
    /// session restored under the same id meanwhile (see `session.rs`).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it never suspends.
    async fn close_session(&self, id: &SessionId) -> Result<(), Self::Error> {
        if !self.ended_handlers.take(id) {
            self.registry.close(id, None, CloseReason::Closed);
        }
        Ok(())
    }

    /// # Cancel safety
    ///
    /// Cancel safe as far as this crate is concerned: no lock or slot is held
    /// across its `.await`s. Dropped between opening the stream and queueing
    /// the request, the session worker keeps an idle request stream until the
    /// session ends (rmcp's local worker behaves so).
    async fn create_stream(
        &self,
        id: &SessionId,
        message: ClientJsonRpcMessage,
    ) -> Result<impl Stream<Item = ServerSseMessage> + Send + Sync + 'static, Self::Error> {
        let gone = Refusal::SessionGone;
        let handle = self.handle(id, gone)?;
        let receiver = handle
            .establish_request_wise_channel()
            .await
            .map_err(|error| worker_error(error, gone))?;
        handle
            .push_message(message, receiver.http_request_id)
            .await
            .map_err(|error| worker_error(error, gone))?;
        Ok(ReceiverStream::new(receiver.inner))
    }

    /// # Cancel safety
    ///
    /// Cancel safe: no lock or slot is held across its `.await`.
    async fn accept_message(
        &self,
        id: &SessionId,
        message: ClientJsonRpcMessage,
    ) -> Result<(), Self::Error> {
        let gone = Refusal::SessionGone;
        let handle = self.handle(id, gone)?;
        handle
            .push_message(message, None)
            .await
            .map_err(|error| worker_error(error, gone))?;
        Ok(())
    }

    /// # Cancel safety
    ///
    /// Cancel safe: no lock or slot is held across its `.await`.
    async fn create_standalone_stream(
        &self,
        id: &SessionId,
    ) -> Result<impl Stream<Item = ServerSseMessage> + Send + Sync + 'static, Self::Error> {
        let gone = Refusal::SessionGone;
        let handle = self.handle(id, gone)?;
        let receiver = handle
            .establish_common_channel()
            .await
            .map_err(|error| worker_error(error, gone))?;
        Ok(ReceiverStream::new(receiver.inner))
    }

    /// Replays what the stream named by `last_event_id` missed, then goes on
    /// with it. A malformed `last_event_id` is an error
    /// (`InvalidEventId`), which rmcp answers with an empty stream.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: no lock or slot is held across its `.await`.
    async fn resume(
        &self,
        id: &SessionId,
        last_event_id: String,
    ) -> Result<impl Stream<Item = ServerSseMessage> + Send + Sync + 'static, Self::Error> {
        let gone = Refusal::SessionGone;
        let handle = self.handle(id, gone)?;
        let last_event_id: EventId = last_event_id
            .parse()
            .map_err(LocalSessionManagerError::from)?;
        let receiver = handle
            .resume(last_event_id)
            .await
            .map_err(|error| worker_error(error, gone))?;
        Ok(ReceiverStream::new(receiver.inner))
    }

    /// Re-admits a session known to rmcp's `SessionStore`. It is admitted
    /// like a creation: it takes a slot (evicting the oldest session when
    /// full) and counts against the rate limit, so replaying stored ids
    /// cannot evict sessions faster than creating new ones could.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe, as [`SessionManager::create_session`].
    async fn restore_session(
        &self,
        id: SessionId,
    ) -> Result<RestoreOutcome<Self::Transport>, Self::Error> {
        if self.registry.contains(&id) {
            return Ok(RestoreOutcome::AlreadyPresent);
        }
        let grant = self.rate_grant()?;
        let slot = self.registry.acquire_slot().await;
        Ok(match self.admit(slot, id) {
            Some(transport) => {
                if let Some(grant) = grant {
                    grant.commit();
                }
                RestoreOutcome::Restored(transport)
            }
            // Raced with a concurrent restore; the grant goes back.
            None => RestoreOutcome::AlreadyPresent,
        })
    }

    /// `None`: sessions replay missed events from their own in-memory cache.
    /// rmcp 3.11 offers no public way to give its local worker an external
    /// `EventStore`.
    fn event_store(&self) -> Option<Arc<dyn EventStore>> {
        None
    }
}

/// Converts a worker's error; a worker that is gone means the session ended
/// under the request, which the HTTP layer answers as `gone`.
fn worker_error(error: SessionError, gone: Refusal) -> BoundedSessionError {
    if matches!(error, SessionError::SessionServiceTerminated) {
        http::record(gone);
    }
    LocalSessionManagerError::from(error).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn dropped_create_returns_its_rate_grant_and_holds_no_slot() {
        let manager = BoundedSessionManager::new(SessionConfig::default(), 1)
            .with_rate_limit(1, Duration::from_secs(60));
        // Every slot belongs to a creation in progress, so create_session waits.
        let in_progress = manager.registry.acquire_slot().await;
        let mut create = Box::pin(manager.create_session());
        assert!(futures::poll!(create.as_mut()).is_pending());
        drop(create);
        drop(in_progress);
        let stats = manager.stats();
        assert_eq!((stats.live, stats.free_slots, stats.queued), (0, 1, 0));

        // The grant came back: exactly one creation is allowed, not zero or two.
        let (_id, _transport) = manager.create_session().await.unwrap();
        assert!(matches!(
            manager.create_session().await,
            Err(BoundedSessionError::RateLimited)
        ));
        assert_eq!(manager.session_count(), 1);
    }

    #[tokio::test]
    async fn restore_counts_against_the_cap_and_reports_presence() {
        let manager = BoundedSessionManager::new(SessionConfig::default(), 1);
        let (first, _first_transport) = manager.create_session().await.unwrap();
        assert!(matches!(
            manager.restore_session(first.clone()).await.unwrap(),
            RestoreOutcome::AlreadyPresent
        ));
        let restored: SessionId = "restored-from-store".into();
        let RestoreOutcome::Restored(_transport) =
            manager.restore_session(restored.clone()).await.unwrap()
        else {
            panic!("expected a restore");
        };
        assert!(manager.has_session(&restored).await.unwrap());
        assert!(
            !manager.has_session(&first).await.unwrap(),
            "evicted for the restore"
        );
        assert_eq!(manager.session_count(), 1);
    }

    #[tokio::test]
    async fn huge_durations_mean_never_not_a_panic() {
        let mut config = SessionConfig::default();
        config.keep_alive = Some(Duration::MAX);
        config.init_timeout = Some(Duration::MAX);
        let manager = BoundedSessionManager::new(config, 2).with_max_lifetime(Duration::MAX);
        let (id, transport) = manager.create_session().await.unwrap();
        assert!(manager.has_session(&id).await.unwrap());
        // The worker ends (DELETE); the transport infers a reason without
        // adding Duration::MAX to the clock.
        let mut transport = transport;
        manager.close_session(&id).await.unwrap();
        assert!(
            rmcp::transport::Transport::receive(&mut transport)
                .await
                .is_none()
        );
    }

    #[tokio::test]
    async fn dropping_the_transport_closes_the_session() {
        let manager = BoundedSessionManager::new(SessionConfig::default(), 2);
        let (id, transport) = manager.create_session().await.unwrap();
        assert!(manager.has_session(&id).await.unwrap());
        drop(transport);
        assert!(!manager.has_session(&id).await.unwrap());
        assert_eq!(manager.stats().free_slots, 2);
    }

    #[tokio::test]
    async fn operations_on_unknown_sessions_are_not_found() {
        let manager = BoundedSessionManager::new(SessionConfig::default(), 2);
        let unknown: SessionId = "unknown".into();
        let message: ClientJsonRpcMessage = serde_json::from_value(serde_json::json!({
            "jsonrpc": "2.0", "method": "notifications/initialized"
        }))
        .unwrap();
        let error = manager.accept_message(&unknown, message).await.unwrap_err();
        assert!(error.is_session_not_found(), "{error}");
        assert!(manager.close_session(&unknown).await.is_ok());
        assert!(
            manager
                .resume(&unknown, "0".into())
                .await
                .err()
                .unwrap()
                .is_session_not_found()
        );
    }
}
