//! Why a request is refused ([`Refused`]) and the answer to it: the HTTP
//! status and `Retry-After` a client of any protocol acts on, and a
//! JSON-RPC error a 2026-07-28 client can read, naming the limit and the
//! delay. The layer never reads the
//! request's body, so the error carries no `id` (the revision allows an
//! error without one when the request's id cannot be known).

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use http::{Response, StatusCode, header};
use http_body_util::{BodyExt, Full, combinators::BoxBody};

/// Why a request or a listen stream was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
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
}

/// The JSON-RPC error code of every admission refusal: implementation
/// defined (the `-32000`..`-32099` server-error range), the one other MCP
/// rate limiters answer with; `data.reason` tells the limits apart.
pub(crate) const ERROR_CODE: i64 = -32029;

impl Refused {
    /// The reason's label, in metrics and in the error's `data.reason`.
    pub(crate) const fn label(self) -> &'static str {
        match self {
            Refused::RequestQuota { .. } => "request_quota",
            Refused::RequestRate { .. } => "request_rate",
            Refused::RequestsAtCapacity { .. } => "at_capacity",
            Refused::ListenQuota { .. } => "listen_quota",
            Refused::ListenAtCapacity { .. } => "listen_at_capacity",
        }
    }

    fn status(self) -> StatusCode {
        match self {
            Refused::RequestsAtCapacity { .. } | Refused::ListenAtCapacity { .. } => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            _ => StatusCode::TOO_MANY_REQUESTS,
        }
    }

    /// Whole seconds to wait: the rate limit's exact delay; 1 where the
    /// wait depends on other requests ending, which nobody can predict.
    fn retry_after(self) -> u64 {
        match self {
            Refused::RequestRate { retry_after, .. } => crate::http::whole_seconds(retry_after),
            _ => 1,
        }
    }

    fn message(self) -> String {
        let retry = self.retry_after();
        match self {
            Refused::RequestQuota { limit } => format!(
                "this client has its maximum of {limit} request units in flight; \
                 retry in {retry} s, or wait for an answer first"
            ),
            Refused::RequestRate { limit, .. } => format!(
                "this client's request rate limit ({limit} per window) is reached; \
                 retry in {retry} s"
            ),
            Refused::RequestsAtCapacity { limit } => format!(
                "the server has its maximum of {limit} request units in flight; \
                 retry in {retry} s"
            ),
            Refused::ListenQuota { limit } => format!(
                "this client has its maximum of {limit} listen streams open; close one \
                 first"
            ),
            Refused::ListenAtCapacity { limit } => format!(
                "the server has its maximum of {limit} listen streams open; retry in \
                 {retry} s"
            ),
        }
    }
}

/// The HTTP response for `refused` (see the module docs).
pub(crate) fn response(refused: Refused) -> Response<BoxBody<Bytes, Infallible>> {
    #[cfg(feature = "metrics")]
    metrics::refused(refused);
    let retry_after = refused.retry_after();
    let body = serde_json::json!({
        "jsonrpc": "2.0",
        "error": {
            "code": ERROR_CODE,
            "message": refused.message(),
            "data": { "reason": refused.label(), "retryAfterSeconds": retry_after },
        },
    });
    Response::builder()
        .status(refused.status())
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::RETRY_AFTER, retry_after)
        .body(Full::new(Bytes::from(body.to_string())).boxed())
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new()).boxed()))
}

/// Metrics of request admission (feature `metrics`).
///
/// | name | type | labels | value |
/// |---|---|---|---|
/// | `mcp_requests_in_flight` | gauge | none | request units in flight |
/// | `mcp_listen_streams` | gauge | none | listen streams open |
/// | `mcp_requests_refused_total` | counter | `reason` | refusals: `request_quota`, `request_rate`, `at_capacity`, `listen_quota`, `listen_at_capacity` |
#[cfg(feature = "metrics")]
pub(crate) mod metrics {
    use super::Refused;

    const IN_FLIGHT: &str = "mcp_requests_in_flight";
    const LISTENING: &str = "mcp_listen_streams";
    const REFUSED: &str = "mcp_requests_refused_total";

    pub(crate) fn requests(in_flight: usize) {
        ::metrics::gauge!(IN_FLIGHT).set(in_flight as f64);
    }

    pub(crate) fn listening(open: usize) {
        ::metrics::gauge!(LISTENING).set(open as f64);
    }

    pub(super) fn refused(refused: Refused) {
        ::metrics::counter!(REFUSED, "reason" => refused.label()).increment(1);
    }
}
