//! Why a request was refused ([`Refusal`]), and everything the crate
//! derives from that one value: the HTTP status, `Retry-After`, the answer's
//! text, the metric label and, for a refused session creation, the
//! [`BoundedSessionError`] returned to rmcp.
//!
//! Three parts of the crate refuse, each with its own kinds, nested in the
//! one type so that no second enum has to be kept in step with it by hand:
//!
//! - session creation (the manager's admission of a new or restored
//!   session): [`Creation`];
//! - a request to an existing session (it ended under the request, or the
//!   session itself refused the message): the plain variants;
//! - request admission (the layer, before rmcp sees the request, for any
//!   protocol): [`RequestRefusal`].
//!
//! The answers themselves are built in [`response`].

use std::time::Duration;

use http::StatusCode;

use crate::error::BoundedSessionError;

pub(crate) mod response;

pub(crate) use response::whole_seconds;

/// Why the manager or the layer refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// A new (or restored) session was not admitted.
    Creation(Creation),
    /// The new session ended (closed or timed out) before its `initialize`
    /// was answered.
    EvictedBeforeInitialized,
    /// The session ended while the request was on its way to it.
    SessionGone,
    /// The session is parked, and the restore this request waited for
    /// (another request's, of the same session) was refused, or had just
    /// been: the session is still restorable.
    RestoreRefused,
    /// The session already has its limit of requests in flight.
    TooManyStreams,
    /// The request reuses the id of a request still in flight.
    DuplicateRequestId,
    /// The session has not finished its `initialize` handshake.
    NotInitialized,
    /// The session is not on this instance and the session store that
    /// would restore it cannot be reached.
    #[cfg(feature = "redis")]
    StoreUnavailable,
    /// Request admission refused the request or listen stream.
    Request(RequestRefusal),
}

/// Why a session creation was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Creation {
    /// The client's own rate limit; the client may retry after the delay.
    ClientRateLimited(Duration),
    /// The client is at its quota and none of its sessions is idle.
    ClientQuota,
    /// The manager's rate limit; anyone may retry after the delay.
    RateLimited(Duration),
    /// The cap is full and nothing may be evicted.
    AtCapacity,
    /// The instance is draining: sessions are created (and restored)
    /// elsewhere.
    Draining,
}

/// Why request admission refused a request or a listen stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RequestRefusal {
    /// The client has its quota of units in flight.
    RequestQuota {
        /// The client's bound.
        limit: usize,
    },
    /// The client's request rate limit.
    RequestRate {
        /// Requests per window.
        limit: usize,
        /// Until the window admits a request again.
        retry_after: Duration,
    },
    /// The global bound on units in flight.
    RequestsAtCapacity {
        /// The global bound.
        limit: usize,
    },
    /// The client has its quota of listen streams and may not replace one.
    ListenQuota {
        /// The client's bound.
        limit: usize,
    },
    /// The global bound on listen streams.
    ListenAtCapacity {
        /// The global bound.
        limit: usize,
    },
    /// The instance is draining: the request is for another instance.
    Draining,
}

impl Refusal {
    /// The HTTP status of the answer.
    pub(crate) fn status(self) -> StatusCode {
        match self {
            Self::Creation(Creation::AtCapacity | Creation::Draining)
            | Self::EvictedBeforeInitialized
            | Self::RestoreRefused
            | Self::Request(RequestRefusal::Draining)
            | Self::Request(RequestRefusal::RequestsAtCapacity { .. })
            | Self::Request(RequestRefusal::ListenAtCapacity { .. }) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            #[cfg(feature = "redis")]
            Self::StoreUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            Self::Creation(_) | Self::TooManyStreams | Self::Request(_) => {
                StatusCode::TOO_MANY_REQUESTS
            }
            Self::SessionGone => StatusCode::NOT_FOUND,
            Self::DuplicateRequestId => StatusCode::CONFLICT,
            Self::NotInitialized => StatusCode::BAD_REQUEST,
        }
    }

    /// Whole seconds to wait before a retry (`Retry-After`), where waiting
    /// helps: a rate limit's exact delay; 1 where the wait depends on other
    /// requests or sessions ending, which nobody can predict; `None` where
    /// the same request will never succeed.
    pub(crate) fn retry_after(self) -> Option<u64> {
        match self {
            Self::Creation(Creation::RateLimited(wait) | Creation::ClientRateLimited(wait))
            | Self::Request(RequestRefusal::RequestRate {
                retry_after: wait, ..
            }) => Some(whole_seconds(wait)),
            Self::SessionGone | Self::DuplicateRequestId | Self::NotInitialized => None,
            _ => Some(1),
        }
    }

    /// The stable snake_case label of the reason, in metrics
    /// (`mcp_sessions_refused_total` for creations,
    /// `mcp_requests_refused_total` for request admission), in logs and in
    /// a JSON-RPC refusal's `data.reason`.
    pub(crate) const fn label(self) -> &'static str {
        match self {
            Self::Creation(Creation::RateLimited(_)) => "rate_limited",
            Self::Creation(Creation::ClientRateLimited(_)) => "client_rate_limited",
            Self::Creation(Creation::ClientQuota) => "client_quota",
            Self::Creation(Creation::AtCapacity) => "at_capacity",
            Self::Creation(Creation::Draining) | Self::Request(RequestRefusal::Draining) => {
                "draining"
            }
            Self::EvictedBeforeInitialized => "evicted_before_initialized",
            Self::SessionGone => "session_gone",
            Self::RestoreRefused => "restore_refused",
            Self::TooManyStreams => "too_many_streams",
            Self::DuplicateRequestId => "duplicate_request_id",
            Self::NotInitialized => "not_initialized",
            #[cfg(feature = "redis")]
            Self::StoreUnavailable => "store_unavailable",
            Self::Request(RequestRefusal::RequestQuota { .. }) => "request_quota",
            Self::Request(RequestRefusal::RequestRate { .. }) => "request_rate",
            Self::Request(RequestRefusal::RequestsAtCapacity { .. }) => "at_capacity",
            Self::Request(RequestRefusal::ListenQuota { .. }) => "listen_quota",
            Self::Request(RequestRefusal::ListenAtCapacity { .. }) => "listen_at_capacity",
        }
    }

    /// What the manager records for a session's refusal of a message,
    /// `None` for an error the layer should leave to rmcp. A session that
    /// is gone is answered as `gone` (it ended under the request, or, for
    /// a new one, before its handshake finished).
    pub(crate) fn of_session_error(error: &BoundedSessionError, gone: Self) -> Option<Self> {
        match error {
            error if error.is_session_not_found() => Some(gone),
            BoundedSessionError::TooManyStreams { .. } => Some(Self::TooManyStreams),
            BoundedSessionError::DuplicateRequestId(_) => Some(Self::DuplicateRequestId),
            BoundedSessionError::NotInitialized => Some(Self::NotInitialized),
            _ => None,
        }
    }
}

impl From<Creation> for Refusal {
    fn from(creation: Creation) -> Self {
        Self::Creation(creation)
    }
}

impl From<RequestRefusal> for Refusal {
    fn from(refusal: RequestRefusal) -> Self {
        Self::Request(refusal)
    }
}

impl From<Creation> for BoundedSessionError {
    fn from(creation: Creation) -> Self {
        match creation {
            Creation::ClientRateLimited(_) => Self::ClientRateLimited,
            Creation::ClientQuota => Self::ClientQuota,
            Creation::RateLimited(_) => Self::RateLimited,
            Creation::AtCapacity => Self::AtCapacity,
            Creation::Draining => Self::Draining,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_creation_refusal_keeps_its_metric_label() {
        // The labels are part of the metrics' contract.
        assert_eq!(
            Refusal::from(Creation::RateLimited(Duration::ZERO)).label(),
            "rate_limited"
        );
        assert_eq!(
            Refusal::from(Creation::ClientRateLimited(Duration::ZERO)).label(),
            "client_rate_limited"
        );
        assert_eq!(Refusal::from(Creation::ClientQuota).label(), "client_quota");
        assert_eq!(Refusal::from(Creation::AtCapacity).label(), "at_capacity");
    }

    #[test]
    fn a_creation_refusal_becomes_the_error_mcp_session_users_match_on() {
        let error = BoundedSessionError::from(Creation::RateLimited(Duration::ZERO));
        assert!(matches!(error, BoundedSessionError::RateLimited));
        let error = BoundedSessionError::from(Creation::ClientQuota);
        assert!(matches!(error, BoundedSessionError::ClientQuota));
        let error = BoundedSessionError::from(Creation::AtCapacity);
        assert!(matches!(error, BoundedSessionError::AtCapacity));
        let error = BoundedSessionError::from(Creation::ClientRateLimited(Duration::ZERO));
        assert!(matches!(error, BoundedSessionError::ClientRateLimited));
    }

    #[test]
    fn a_session_error_is_recorded_only_when_the_layer_can_answer_it_better() {
        let gone = Refusal::SessionGone;
        let error = BoundedSessionError::TooManyStreams { limit: 8 };
        assert_eq!(
            Refusal::of_session_error(&error, gone),
            Some(Refusal::TooManyStreams)
        );
        let error = BoundedSessionError::NotInitialized;
        assert_eq!(
            Refusal::of_session_error(&error, gone),
            Some(Refusal::NotInitialized)
        );
        let error = BoundedSessionError::NotARequest;
        assert_eq!(Refusal::of_session_error(&error, gone), None);
    }
}
