//! Errors of the session manager.

use rmcp::model::RequestId;
use rmcp::transport::streamable_http_server::session::EventStoreError;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManagerError;

use crate::event_id::EventIdError;
use crate::replay_buffer::ReplayError;

/// Errors returned by [`BoundedSessionManager`](crate::BoundedSessionManager).
///
/// `Inner` and `RateLimited` match `mcp-session` 0.2, so code that matches
/// on them keeps compiling after the migration (the enum is
/// `#[non_exhaustive]`, as that one is); the others come from this crate's
/// own sessions.
///
/// # Example
///
/// ```
/// use mcp_bounded_session::BoundedSessionError;
///
/// let error = BoundedSessionError::RateLimited;
/// assert!(error.to_string().contains("rate limit"));
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BoundedSessionError {
    /// The session is unknown (never existed, closed, evicted or expired), or
    /// it refused the operation; see the inner error.
    #[error(transparent)]
    Inner(#[from] LocalSessionManagerError),
    /// Session creation was refused because the configured rate limit is
    /// reached; nothing was evicted. Retry after the rolling window frees a
    /// creation (`BoundedSessionManager::rate_limit_retry_after`).
    #[error(
        "session creation rate limit exceeded: no session was created or evicted; \
         retry once the rolling window frees a creation"
    )]
    RateLimited,
    /// Session creation was refused because the cap is full and no session
    /// may be evicted: every live session has a request in flight, or the
    /// manager is configured with `AtCapacity::Refuse`. Nothing was
    /// evicted; retry shortly.
    #[error(
        "the session cap is full and no session is idle: no session was created or evicted; \
         retry shortly"
    )]
    AtCapacity,
    /// Session creation was refused by this client's own rate limit
    /// (`rate_limit_per_client`); nothing was created or evicted.
    #[error(
        "this client's session creation rate limit is exceeded: no session was created or \
         evicted; retry once its rolling window frees a creation"
    )]
    ClientRateLimited,
    /// The client holds its `max_sessions_per_client` sessions and every
    /// one of them has a request in flight, so none can be replaced.
    #[error(
        "this client holds its maximum number of sessions and all of them are in use: end one \
         (HTTP DELETE) or retry once one is idle"
    )]
    ClientQuota,
    /// Session creation (or restore) was refused because the instance is
    /// draining before it stops; another instance serves the client.
    #[error(
        "this server instance is draining before it stops: no session is created or restored \
         here; retry, and the load balancer sends the client to another instance"
    )]
    Draining,
    /// A `Last-Event-ID` that this crate never issues.
    #[error(transparent)]
    InvalidEventId(#[from] EventIdError),
    /// The stream named by a `Last-Event-ID` cannot be replayed exactly.
    #[error(transparent)]
    Replay(#[from] ReplayError),
    /// The client sent a request with the id of one of its requests still
    /// in flight in this session; JSON-RPC ids must be unique among them.
    #[error("request id {0} is already in flight in this session; use a fresh id per request")]
    DuplicateRequestId(RequestId),
    /// The session already has this many requests in flight (the
    /// builder's `max_request_streams`).
    #[error(
        "too many requests in flight in this session (limit {limit}); wait for answers \
         before sending more"
    )]
    TooManyStreams {
        /// The configured limit.
        limit: usize,
    },
    /// No request with this id is in flight in the session (it was never
    /// sent, or it was already answered or cancelled).
    #[error("no request {0} in flight in this session")]
    UnknownRequest(RequestId),
    /// A message reached the session before its `initialize` handshake.
    #[error("the session has not finished its initialize handshake yet")]
    NotInitialized,
    /// `initialize` was sent to a session that already had one.
    #[error("the session is already initialized; start a new session to initialize again")]
    AlreadyInitialized,
    /// A notification or response was given where a request was expected.
    #[error("expected a JSON-RPC request")]
    NotARequest,
    /// The session's transport failed (the event store included).
    #[error(transparent)]
    Transport(#[from] TransportError),
}

/// Errors of a session's transport, as the MCP handler sees them when it
/// sends a message.
///
/// # Example
///
/// ```
/// use mcp_bounded_session::TransportError;
///
/// assert!(TransportError::SessionEnded.to_string().contains("ended"));
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    /// The session ended (closed, evicted or expired); the message was not
    /// delivered.
    #[error("the session has ended; the message was not delivered")]
    SessionEnded,
    /// The configured external `EventStore` failed to store or replay
    /// events.
    #[error(
        "the event store failed: {0}; the event was not kept for replay (check the store's health)"
    )]
    EventStore(#[source] EventStoreError),
}

impl BoundedSessionError {
    /// Whether the error says the session does not exist (any more).
    ///
    /// ```
    /// use mcp_bounded_session::BoundedSessionError;
    ///
    /// assert!(!BoundedSessionError::RateLimited.is_session_not_found());
    /// ```
    pub fn is_session_not_found(&self) -> bool {
        matches!(
            self,
            Self::Inner(LocalSessionManagerError::SessionNotFound(_))
        )
    }
}
