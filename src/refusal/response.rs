//! The HTTP answer to a [`Refusal`].
//!
//! Two shapes, by who reads them:
//!
//! - request admission's refusals come before rmcp has seen the request,
//!   from clients of any protocol, so they carry a JSON-RPC error a
//!   2026-07-28 client can read, naming the limit and the delay. The layer
//!   never reads the request's body, so the error carries no `id` (the
//!   revision allows an error without one when the request's id cannot be
//!   known);
//! - every other refusal replaces the `500` rmcp answers a failed session
//!   lookup or creation with, where rmcp's own answers are plain text: so
//!   are these, with the status and `Retry-After` clients act on.

use std::borrow::Cow;
use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use http::{Response, header};
use http_body_util::{BodyExt, Full, combinators::BoxBody};

use super::{Creation, Refusal, RequestRefusal};

/// The JSON-RPC error code of every request-admission refusal:
/// implementation defined (the `-32000`..`-32099` server-error range), the
/// one other MCP rate limiters answer with; `data.reason` tells the limits
/// apart.
pub(crate) const ERROR_CODE: i64 = -32029;

/// The longest `Retry-After`: 2^31 - 1 seconds (68 years), the largest
/// value a client parsing into a signed 32-bit integer reads correctly
/// (RFC 9111, section 1.2.2, has caches treat anything larger as 2^31).
/// A wait this long, or one the clock cannot represent, means the limit
/// does not free in any useful time; saying so beats overflowing.
const MAX_RETRY_AFTER: u64 = i32::MAX as u64;

/// Whole seconds, rounded up so that a client retrying on time succeeds,
/// at least 1 and at most [`MAX_RETRY_AFTER`] (never wrapping round to a
/// small value).
pub(crate) fn whole_seconds(wait: Duration) -> u64 {
    wait.as_secs()
        .saturating_add(u64::from(wait.subsec_nanos() > 0))
        .clamp(1, MAX_RETRY_AFTER)
}

type HttpResponse = Response<BoxBody<Bytes, Infallible>>;

impl Refusal {
    /// The answer to this refusal (see the module docs).
    pub(crate) fn response(self) -> HttpResponse {
        let (content_type, body) = match self {
            Self::Request(_) => ("application/json", self.json_error()),
            _ => ("text/plain; charset=utf-8", self.message().into_owned()),
        };
        let mut response = Response::builder()
            .status(self.status())
            .header(header::CONTENT_TYPE, content_type);
        if let Some(secs) = self.retry_after() {
            response = response.header(header::RETRY_AFTER, secs);
        }
        response
            .body(Full::new(Bytes::from(body)).boxed())
            .unwrap_or_else(|_| Response::new(Full::new(Bytes::new()).boxed()))
    }

    /// What the answer says: the whole plain-text body, or a JSON-RPC
    /// error's `message`.
    fn message(self) -> Cow<'static, str> {
        Cow::Borrowed(match self {
            Self::Creation(Creation::RateLimited(_)) => {
                "Too Many Requests: the session creation rate limit is reached; retry later"
            }
            Self::Creation(Creation::ClientRateLimited(_)) => {
                "Too Many Requests: this client's session creation rate limit is reached; \
                 retry later"
            }
            Self::Creation(Creation::ClientQuota) => {
                "Too Many Requests: this client holds its maximum number of sessions and all \
                 of them are in use; end one (HTTP DELETE) or retry later"
            }
            Self::Creation(Creation::AtCapacity) => {
                "Service Unavailable: the session cap is full and every session is in use; \
                 retry later"
            }
            Self::Creation(Creation::Draining) => {
                "Service Unavailable: this server instance is shutting down; retry (through \
                 the load balancer, another instance answers)"
            }
            Self::EvictedBeforeInitialized => {
                "Service Unavailable: the new session ended before its initialization \
                 finished; retry later"
            }
            Self::SessionGone => "Not Found: Session not found",
            Self::RestoreRefused => {
                "Service Unavailable: this session is parked and could not be restored just \
                 now (the server is at its session cap, or busy); retry later"
            }
            Self::TooManyStreams => {
                "Too Many Requests: this session has its limit of requests in flight; \
                 wait for answers before sending more"
            }
            Self::NotInitialized => {
                "Bad Request: the session has not finished its initialize handshake"
            }
            #[cfg(feature = "redis")]
            Self::StoreUnavailable => {
                "Service Unavailable: the session is not on this instance and the session \
                 store is unreachable; retry later"
            }
            Self::DuplicateRequestId => {
                "Conflict: a request with this JSON-RPC id is still in flight in this \
                 session; use a fresh id per request"
            }
            Self::Request(refusal) => {
                let retry = self.retry_after().unwrap_or(1);
                return Cow::Owned(request_message(refusal, retry));
            }
        })
    }

    /// The JSON-RPC error of a request-admission refusal.
    fn json_error(self) -> String {
        let retry = self.retry_after().unwrap_or(1);
        serde_json::json!({
            "jsonrpc": "2.0",
            "error": {
                "code": ERROR_CODE,
                "message": self.message(),
                "data": { "reason": self.label(), "retryAfterSeconds": retry },
            },
        })
        .to_string()
    }
}

fn request_message(refusal: RequestRefusal, retry: u64) -> String {
    match refusal {
        RequestRefusal::RequestQuota { limit } => format!(
            "this client has its maximum of {limit} request units in flight; \
             retry in {retry} s, or wait for an answer first"
        ),
        RequestRefusal::RequestRate { limit, .. } => format!(
            "this client's request rate limit ({limit} per window) is reached; \
             retry in {retry} s"
        ),
        RequestRefusal::RequestsAtCapacity { limit } => format!(
            "the server has its maximum of {limit} request units in flight; \
             retry in {retry} s"
        ),
        RequestRefusal::ListenQuota { limit } => format!(
            "this client has its maximum of {limit} listen streams open; close one \
             first"
        ),
        RequestRefusal::ListenAtCapacity { limit } => format!(
            "the server has its maximum of {limit} listen streams open; retry in \
             {retry} s"
        ),
        RequestRefusal::Draining => format!(
            "this server instance is shutting down; retry in {retry} s (through the load \
             balancer, another instance answers)"
        ),
    }
}

#[cfg(test)]
mod tests {
    use http::StatusCode;

    use super::*;

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        let response =
            Refusal::Creation(Creation::RateLimited(Duration::from_millis(1_200))).response();
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(response.headers()[header::RETRY_AFTER], "2");
        let response = Refusal::Creation(Creation::RateLimited(Duration::ZERO)).response();
        assert_eq!(response.headers()[header::RETRY_AFTER], "1");
    }

    #[test]
    fn retry_after_saturates_for_a_limit_that_never_frees() {
        for wait in [
            Duration::MAX,
            Duration::new(u64::MAX, 0),
            Duration::new(u64::MAX - 1, 1),
            Duration::from_secs(MAX_RETRY_AFTER + 1),
        ] {
            let response = Refusal::Creation(Creation::ClientRateLimited(wait)).response();
            assert_eq!(
                response.headers()[header::RETRY_AFTER],
                MAX_RETRY_AFTER.to_string().as_str(),
                "{wait:?}"
            );
        }
        assert_eq!(
            whole_seconds(Duration::from_secs(MAX_RETRY_AFTER)),
            MAX_RETRY_AFTER
        );
    }

    #[test]
    fn a_gone_session_is_not_told_to_retry() {
        let response = Refusal::SessionGone.response();
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
        assert!(response.headers().get(header::RETRY_AFTER).is_none());
    }

    #[tokio::test]
    async fn a_request_refusal_is_a_json_rpc_error_naming_the_limit() {
        let refusal = Refusal::Request(RequestRefusal::RequestRate {
            limit: 5,
            retry_after: Duration::from_millis(2_500),
        });
        let response = refusal.response();
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(response.headers()[header::RETRY_AFTER], "3");
        assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
        let body = response.into_body().collect().await.unwrap().to_bytes();
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["error"]["code"], ERROR_CODE);
        assert_eq!(body["error"]["data"]["reason"], "request_rate");
        assert_eq!(body["error"]["data"]["retryAfterSeconds"], 3);
        assert!(body["error"].get("id").is_none());
    }
}
