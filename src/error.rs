//! Errors of the session manager.

use rmcp::transport::streamable_http_server::session::local::LocalSessionManagerError;

/// Errors returned by [`BoundedSessionManager`](crate::BoundedSessionManager).
///
/// The variants match `mcp-session` 0.2, so code that matches on them keeps
/// compiling after the migration.
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
    /// its worker refused the operation; see the inner error.
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
