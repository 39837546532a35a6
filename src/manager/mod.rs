//! [`BoundedSessionManager`]: rmcp's `SessionManager` on top of the registry.
//!
//! This module only wires the pieces together; each invariant is kept in the
//! module named after it: the cap and the slot hand-over in
//! [`crate::registry`], the eviction order and the busy sessions it never
//! evicts in [`crate::eviction`], the rate limit in [`crate::rate_limiter`],
//! per-client quotas and limits in [`crate::clients`] (and the order of the
//! checks in `admission`), and cleanup when a session ends in
//! [`crate::session`].
//!
//! Every request-path method (`has_session`, `create_stream`,
//! `accept_message`, `create_standalone_stream`, `resume`) does one `DashMap`
//! lookup and clones the session's handle out of it, so no map lock is held
//! while it works on the session (whose own lock it takes only briefly).
//! Behind the HTTP layer, `has_session` also marks the session busy for
//! the request (one atomic update, see `http::hold`) and, with parking, a
//! request for a session not live here is listed in the parking's map of
//! awaited sessions until it ends (see `parking`).

use std::sync::Arc;
use std::time::Duration;

use rmcp::transport::streamable_http_server::session::local::{
    LocalSessionManagerError, SessionConfig,
};
use rmcp::transport::streamable_http_server::session::{EventStore, SessionId};

use crate::clients::key::KeyDerivation;
use crate::config::BoundedSessionManagerBuilder;
use crate::drain::Drain;
use crate::error::BoundedSessionError;
use crate::eviction::activity::{BeginError, Busy};
use crate::eviction::{AtCapacity, EvictionPolicy};
use crate::http::{self, BoundedSessionLayer};
use crate::rate_limiter::RateLimiter;
use crate::refusal::{Creation, Refusal};
use crate::registry::SessionStats;
use crate::requests::RequestAdmission;

pub(crate) mod admission;
mod compat;
pub(crate) mod construct;
mod drain;
pub(crate) mod parking;
mod restoring;
mod session_manager;
#[cfg(feature = "redis")]
mod stores;

pub(crate) use self::admission::Membership;
use self::admission::{Admitted, Clients};
use crate::session::{
    self, LateCloseMarkers, Lease, LiveSession, Origin, SessionHandle, SessionRegistry,
    SessionSettings, SessionTransport,
};

/// An rmcp `SessionManager` that keeps at most `max_sessions` sessions in
/// memory, evicting the least recently active idle session when full (never
/// one with a request in flight), with optional per-client quotas, rate
/// limiting of session creation (global and per client) and a maximum
/// session lifetime.
///
/// It is a drop-in replacement for `mcp-session` 0.2's manager of the same
/// name and for rmcp's `LocalSessionManager`: pass it (in an [`Arc`]) to
/// `StreamableHttpService::new`.
///
/// Guarantees, under any concurrency:
/// - live sessions never exceed `max_sessions`; when full, a creation evicts
///   an idle session (by the [`EvictionPolicy`]) and takes its slot, or is
///   refused at once if every session is busy;
/// - at most `max_creates` creations in any rolling window, when configured;
/// - a session whose transport or handler ended (DELETE, eviction, idle or init
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
    late_close_markers: Arc<LateCloseMarkers>,
    settings: Arc<SessionSettings>,
    rate_limiter: Option<RateLimiter>,
    max_lifetime: Option<Duration>,
    /// How the HTTP layer derives client keys (handed to [`Self::layer`]).
    keys: Arc<KeyDerivation>,
    /// Per-client quotas and rate limits, when any is configured.
    clients: Option<Arc<Clients>>,
    /// Whether a session answers only requests of the client that created it.
    bind_to_client: bool,
    /// What `event_store()` gives rmcp for its stateless streams: the
    /// store of every stream or the stateless-only one, seen through
    /// `StatelessStreams` (which refuses to replay sessions' events).
    stateless_event_store: Option<Arc<dyn EventStore>>,
    /// Ids being restored: one restore of an id at a time (see
    /// `restore_session`).
    restoring: dashmap::DashSet<SessionId>,
    /// Admission of requests and listen streams (handed to [`Self::layer`]),
    /// when any of their limits is configured.
    requests: Option<Arc<RequestAdmission>>,
    /// Whether the instance drains, and what the drain counts (shared with
    /// [`Self::layer`]).
    drain: Arc<Drain>,
    /// The Redis stores the builder attached (see `stores`).
    #[cfg(feature = "redis")]
    redis_stores: std::sync::OnceLock<std::sync::Weak<crate::store::RedisInner>>,
}

impl BoundedSessionManager {
    /// The builder of a manager that keeps at most `max_sessions` sessions:
    /// the one way to set every option.
    ///
    /// # Panics
    ///
    /// Panics if `max_sessions` is 0 (or beyond 2^61, tokio's semaphore
    /// limit).
    ///
    /// # Example
    ///
    /// ```
    /// use std::time::Duration;
    /// use mcp_bounded_session::BoundedSessionManager;
    ///
    /// let manager = BoundedSessionManager::builder(1_000)
    ///     .idle_timeout(Duration::from_secs(30 * 60))
    ///     .max_sessions_per_client(10)
    ///     .build();
    /// assert_eq!(manager.max_sessions(), 1_000);
    /// ```
    pub fn builder(max_sessions: usize) -> BoundedSessionManagerBuilder {
        BoundedSessionManagerBuilder::new(max_sessions)
    }

    /// Request units in flight now, under the layer's admission (0 without
    /// request limits: nothing is counted then).
    ///
    /// ```
    /// # use mcp_bounded_session::BoundedSessionManagerBuilder;
    /// let manager = BoundedSessionManagerBuilder::new(10).max_requests_in_flight(64).build();
    /// assert_eq!(manager.requests_in_flight(), 0);
    /// ```
    pub fn requests_in_flight(&self) -> usize {
        self.requests
            .as_ref()
            .map_or(0, |requests| requests.in_flight())
    }

    /// Listen streams open now, under the layer's admission (0 without
    /// listen-stream limits).
    ///
    /// ```
    /// # use mcp_bounded_session::BoundedSessionManagerBuilder;
    /// let manager = BoundedSessionManagerBuilder::new(10).max_listen_streams(64).build();
    /// assert_eq!(manager.listen_streams(), 0);
    /// ```
    pub fn listen_streams(&self) -> usize {
        self.requests
            .as_ref()
            .map_or(0, |requests| requests.listen_streams())
    }

    /// The HTTP layer for this manager: it answers refusals with their
    /// status instead of rmcp's 500, and derives each request's client key
    /// with this manager's settings (see [`BoundedSessionLayer`]).
    ///
    /// ```no_run
    /// use mcp_bounded_session::BoundedSessionManagerBuilder;
    /// use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
    /// use tower_layer::Layer;
    /// # #[derive(Clone)] struct MyServer;
    /// # impl rmcp::ServerHandler for MyServer {}
    ///
    /// let manager = BoundedSessionManagerBuilder::new(1_000)
    ///     .max_sessions_per_client(10)
    ///     .build();
    /// let layer = manager.layer();
    /// let service = StreamableHttpService::new(|| Ok(MyServer), manager, StreamableHttpServerConfig::default());
    /// let app: axum::Router = axum::Router::new().nest_service("/mcp", layer.layer(service));
    /// ```
    pub fn layer(&self) -> BoundedSessionLayer {
        BoundedSessionLayer::new(
            self.keys.clone(),
            self.requests.clone(),
            Some(self.drain.clone()),
        )
    }

    /// Whether `peer` is in the networks given to the builder's
    /// [`trusted_proxies`](crate::BoundedSessionManagerBuilder::trusted_proxies)
    /// (an IPv4-mapped address as its IPv4 address): for limits kept
    /// outside the layer, such as connections per address, that must not
    /// count a proxy's many clients as one.
    ///
    /// ```
    /// use mcp_bounded_session::BoundedSessionManagerBuilder;
    ///
    /// let manager = BoundedSessionManagerBuilder::new(10)
    ///     .trusted_proxies("x-forwarded-for", ["10.0.0.0/8"])
    ///     .build();
    /// assert!(manager.is_trusted_proxy("10.1.2.3".parse().unwrap()));
    /// assert!(manager.is_trusted_proxy("::ffff:10.1.2.3".parse().unwrap()));
    /// assert!(!manager.is_trusted_proxy("192.0.2.1".parse().unwrap()));
    /// ```
    pub fn is_trusted_proxy(&self, peer: std::net::IpAddr) -> bool {
        self.keys.trusts_proxy(peer)
    }

    /// Which idle session a creation at the full cap evicts.
    ///
    /// ```
    /// # use mcp_bounded_session::{BoundedSessionManagerBuilder, EvictionPolicy};
    /// let manager = BoundedSessionManagerBuilder::new(10).build();
    /// assert_eq!(manager.eviction_policy(), EvictionPolicy::LeastRecentlyActive);
    /// ```
    pub fn eviction_policy(&self) -> EvictionPolicy {
        self.registry.policy()
    }

    /// What a creation does when the cap is full.
    ///
    /// ```
    /// # use mcp_bounded_session::{AtCapacity, BoundedSessionManagerBuilder};
    /// let manager = BoundedSessionManagerBuilder::new(10).build();
    /// assert_eq!(manager.at_capacity(), AtCapacity::Evict);
    /// ```
    pub fn at_capacity(&self) -> AtCapacity {
        self.registry.at_capacity()
    }

    /// The default of the builder's
    /// [`max_request_streams`](crate::BoundedSessionManagerBuilder::max_request_streams).
    ///
    /// ```
    /// use mcp_bounded_session::BoundedSessionManager;
    ///
    /// assert_eq!(BoundedSessionManager::DEFAULT_MAX_REQUEST_STREAMS, 256);
    /// ```
    pub const DEFAULT_MAX_REQUEST_STREAMS: usize = 256;

    /// How many events each SSE stream keeps for replay.
    ///
    /// ```
    /// # use mcp_bounded_session::{BoundedSessionManager, SessionConfig};
    /// let manager = BoundedSessionManager::new(SessionConfig::default(), 10);
    /// assert_eq!(manager.replay_capacity(), 16);
    /// ```
    pub fn replay_capacity(&self) -> usize {
        self.settings.replay_capacity
    }

    /// A handle on a live session, to close its SSE streams from the server
    /// side (SEP-1699 polling); `None` if the session is not live.
    ///
    /// ```
    /// # use mcp_bounded_session::{BoundedSessionManager, SessionConfig};
    /// let manager = BoundedSessionManager::new(SessionConfig::default(), 10);
    /// assert!(manager.session(&"unknown".into()).is_none());
    /// ```
    pub fn session(&self, id: &SessionId) -> Option<SessionHandle> {
        self.registry
            .with_session(id, |session| session.handle.clone())
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
        self.registry.session_count()
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

    /// The configuration each session runs with.
    ///
    /// ```
    /// # use mcp_bounded_session::{BoundedSessionManager, SessionConfig};
    /// let manager = BoundedSessionManager::new(SessionConfig::default(), 10);
    /// assert_eq!(manager.session_config().channel_capacity, 16);
    /// ```
    pub fn session_config(&self) -> &SessionConfig {
        &self.settings.session
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
        self.registry.stats()
    }

    /// The session's handle, with the session marked busy until the
    /// returned guard ends (an empty guard if the request already holds
    /// it busy, see [`http::hold`]). If it is gone, records `gone` for the
    /// HTTP layer: the request raced the end of its session.
    fn begin(
        &self,
        id: &SessionId,
        gone: Refusal,
    ) -> Result<(SessionHandle, Busy), BoundedSessionError> {
        self.begin_marked(id, gone, false)
    }

    /// [`Self::begin`] for a request's stream, which keeps its session busy
    /// while it lasts: it takes over the request's held mark.
    fn begin_stream(
        &self,
        id: &SessionId,
        gone: Refusal,
    ) -> Result<(SessionHandle, Busy), BoundedSessionError> {
        self.begin_marked(id, gone, true)
    }

    fn begin_marked(
        &self,
        id: &SessionId,
        gone: Refusal,
        take_held: bool,
    ) -> Result<(SessionHandle, Busy), BoundedSessionError> {
        let not_found = || {
            http::record(gone);
            BoundedSessionError::from(LocalSessionManagerError::SessionNotFound(id.clone()))
        };
        let (handle, activity) = self
            .registry
            .with_activity(id, |session, activity| {
                self.is_owner(session)
                    .then(|| (session.handle.clone(), activity.clone()))
            })
            .flatten()
            .ok_or_else(not_found)?;
        // A held mark keeps a park or an eviction away, not a close (a
        // DELETE, a timeout): a claimed session is gone, held or not.
        if let Some(busy) = http::held(&activity, take_held) {
            if activity.is_claimed() {
                return Err(not_found());
            }
            return Ok((handle, busy));
        }
        match activity.begin() {
            Ok(busy) => Ok((handle, busy)),
            Err(BeginError::Gone) => Err(not_found()),
            Err(BeginError::Saturated) => {
                http::record(Refusal::TooManyStreams);
                Err(BoundedSessionError::TooManyStreams {
                    limit: crate::eviction::activity::MAX_BUSY as usize,
                })
            }
        }
    }

    /// Reserves everything a new session of the current request's client
    /// needs (see [`admission`]); a refusal is recorded for the HTTP layer
    /// and the observer.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe, as [`admission::admit`].
    async fn admission(&self) -> Result<Admitted<'_>, BoundedSessionError> {
        if self.drain.is_draining() {
            return Err(self.refused(Creation::Draining));
        }
        let client = http::current_client();
        let clients = self.clients.as_deref().filter(|_| !client.is_anonymous());
        admission::admit(&self.registry, self.rate_limiter.as_ref(), clients, &client)
            .await
            .map_err(|refused| self.refused(refused))
    }

    fn refused(&self, refused: Creation) -> BoundedSessionError {
        let refusal = Refusal::Creation(refused);
        http::record(refusal);
        self.registry.observer().refused(refused);
        tracing::debug!(
            reason = refusal.label(),
            retry_after_secs = refusal.retry_after(),
            "session admission refused"
        );
        BoundedSessionError::from(refused)
    }

    /// Makes session `id` and admits it with what `admitted` holds;
    /// gives everything back (and drops the session) if `id` is already
    /// live, except a client's rate grant (the race is a concurrent restore
    /// of the same id, or a random id drawn twice).
    /// `lifetime_end`: a restored session's (its first copy's), else one
    /// is counted from now.
    fn admit(
        &self,
        admitted: Admitted<'_>,
        id: SessionId,
        origin: Origin,
        lifetime_end: Option<tokio::time::Instant>,
    ) -> Option<SessionTransport> {
        let owner = admitted.client().clone();
        // A lifetime too long to add to the clock never ends.
        let lifetime_end = lifetime_end.or_else(|| {
            self.max_lifetime
                .and_then(|lifetime| tokio::time::Instant::now().checked_add(lifetime))
        });
        let handle = session::create(id.clone(), self.settings.clone(), origin, lifetime_end);
        let activity = admitted.insert(&self.registry, id.clone(), |listed| LiveSession {
            handle: handle.clone(),
            membership: listed
                .zip(self.clients.clone())
                .map(|(listed, clients)| Membership::new(clients, owner.clone(), listed)),
            owner,
        })?;
        let lease = Lease::new(
            self.registry.clone(),
            self.late_close_markers.clone(),
            id,
            activity.generation(),
        );
        Some(handle.transport(Some(lease)))
    }

    /// Whether the current request's client may use `session` (always,
    /// unless sessions are bound to their client).
    fn is_owner(&self, session: &LiveSession) -> bool {
        !self.bind_to_client || session.owner == http::current_client()
    }
}

#[cfg(all(test, mcp_bounded_session_loom))]
mod loom_tests;
#[cfg(test)]
mod tests;
