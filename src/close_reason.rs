//! Why a session ended.

use std::fmt;

/// The reason a session was closed, carried by the `session closed` tracing
/// event.
///
/// `Evicted`, `MaxLifetime` and `Closed` mean what they mean in `mcp-session`
/// 0.2; the other variants name causes that crate could not tell apart.
///
/// # Example
///
/// ```
/// use mcp_bounded_session::CloseReason;
///
/// assert_eq!(CloseReason::Evicted.to_string(), "Evicted");
/// assert_eq!(CloseReason::IdleTimeout.to_string(), "IdleTimeout");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CloseReason {
    /// The cap was full and a newer session took this one's slot.
    Evicted,
    /// The session reached its configured maximum lifetime.
    MaxLifetime,
    /// The session was closed on request (HTTP DELETE or
    /// `SessionManager::close_session`).
    Closed,
    /// No message went through the session for the configured idle timeout
    /// (`SessionConfig::keep_alive`).
    IdleTimeout,
    /// The client never sent `initialize` within `SessionConfig::init_timeout`.
    InitTimeout,
    /// The client gave up on its `initialize` request before the answer
    /// came: nobody else can know the session's id, so it ends at once.
    HandshakeAbandoned,
    /// The MCP handler serving the session stopped: it returned, panicked,
    /// or the server is shutting down.
    HandlerEnded,
    /// The instance was drained before it stops
    /// ([`BoundedSessionManager::drain`](crate::BoundedSessionManager::drain)):
    /// a session store, if any, keeps the session for another instance.
    Drained,
    /// The session was idle for the manager's `park_after`: its live copy
    /// ended, and its next request restores it from the session store
    /// (see [`guide::parking`](crate::guide::parking)).
    Parked,
}

impl CloseReason {
    /// The variant's name, as printed by `Display`.
    ///
    /// ```
    /// use mcp_bounded_session::CloseReason;
    ///
    /// assert_eq!(CloseReason::MaxLifetime.as_str(), "MaxLifetime");
    /// ```
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Evicted => "Evicted",
            Self::MaxLifetime => "MaxLifetime",
            Self::Closed => "Closed",
            Self::IdleTimeout => "IdleTimeout",
            Self::InitTimeout => "InitTimeout",
            Self::HandshakeAbandoned => "HandshakeAbandoned",
            Self::HandlerEnded => "HandlerEnded",
            Self::Drained => "Drained",
            Self::Parked => "Parked",
        }
    }

    /// The variant's name in snake_case, for metric labels and log fields
    /// that want one stable spelling (`as_str` keeps `mcp-session`'s
    /// CamelCase).
    ///
    /// ```
    /// use mcp_bounded_session::CloseReason;
    ///
    /// assert_eq!(CloseReason::MaxLifetime.label(), "max_lifetime");
    /// assert_eq!(CloseReason::Evicted.label(), "evicted");
    /// ```
    pub const fn label(self) -> &'static str {
        match self {
            Self::Evicted => "evicted",
            Self::MaxLifetime => "max_lifetime",
            Self::Closed => "closed",
            Self::IdleTimeout => "idle_timeout",
            Self::InitTimeout => "init_timeout",
            Self::HandshakeAbandoned => "handshake_abandoned",
            Self::HandlerEnded => "handler_ended",
            Self::Drained => "drained",
            Self::Parked => "parked",
        }
    }
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [CloseReason; 9] = [
        CloseReason::Evicted,
        CloseReason::MaxLifetime,
        CloseReason::Closed,
        CloseReason::IdleTimeout,
        CloseReason::InitTimeout,
        CloseReason::HandshakeAbandoned,
        CloseReason::HandlerEnded,
        CloseReason::Drained,
        CloseReason::Parked,
    ];

    /// The two spellings are written out by hand; this keeps them the same
    /// words.
    #[test]
    fn label_is_the_snake_case_of_the_name() {
        for reason in ALL {
            let mut snake = String::new();
            for (i, c) in reason.as_str().chars().enumerate() {
                if c.is_ascii_uppercase() && i > 0 {
                    snake.push('_');
                }
                snake.push(c.to_ascii_lowercase());
            }
            assert_eq!(reason.label(), snake);
        }
    }
}
