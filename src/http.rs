//! HTTP glue: the right status for a refused request, instead of a 500.
//!
//! rmcp 3.11's `StreamableHttpService` answers every error of a
//! `SessionManager` with `500 Internal Server Error`. A rate-limited client
//! should get `429` with `Retry-After`, a request racing the end of its
//! session should get the `404` every later request gets, and a client whose
//! brand-new session was evicted by a burst of newer ones before its
//! handshake finished should get `503` with `Retry-After`.
//!
//! The manager knows which case it is; the service does not pass that on.
//! [`BoundedSessionLayer`] runs each request inside a task-local scope in
//! which the manager records the refusal; when the service then answers 500,
//! the layer replaces the response. The service awaits the manager inline in
//! the request's own future, so the record always belongs to this request.
//! Without the layer, nothing is recorded and responses are rmcp's own.

use std::cell::{Cell, RefCell};
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, combinators::BoxBody};

use crate::clients::ClientKey;
use crate::clients::forwarded::Unreadable;
use crate::clients::key::KeyDerivation;
use crate::drain::{Drain, Kind, Tracked};
use crate::eviction::activity::{Activity, Busy};
use crate::manager::parking::Awaiting;
use crate::refusal::{Refusal, RequestRefusal};
use crate::requests::{Held, McpHeaders, RequestAdmission};

/// What the layer knows of the request being served: who sent it (for
/// per-client limits and bound sessions), once the manager recorded it,
/// why it was refused, and the session it is on its way to.
struct RequestScope {
    refusal: Cell<Option<Refusal>>,
    client: ClientKey,
    /// The request's session, marked busy from the moment rmcp found it
    /// (`has_session`) or restored it: between that lookup and the call
    /// that hands the request to the session, the session is neither idle
    /// nor evictable, so `park_after` or an eviction cannot end it under
    /// the request (which would answer `404` to a request for a session
    /// that existed when it arrived).
    held: RefCell<Option<Busy>>,
    /// The session this request is on its way to, not live when rmcp
    /// looked it up (restored by this request or another): listed so
    /// that `park_after` leaves its restored copy to the request.
    awaiting: RefCell<Option<Awaiting>>,
    /// Whether the request is a `GET` with `Last-Event-ID`, which rmcp
    /// answers with an empty `200` stream, not an error, when the session
    /// refuses it: one refused as gone is answered `404` as any request
    /// for a gone session.
    resuming: bool,
}

impl RequestScope {
    fn new(client: ClientKey, resuming: bool) -> Self {
        Self {
            refusal: Cell::new(None),
            client,
            held: RefCell::new(None),
            awaiting: RefCell::new(None),
            resuming,
        }
    }
}

tokio::task_local! {
    static REQUEST: RequestScope;
}

/// The client key of the current request if it runs under the layer
/// (`None` elsewhere, for instance in rmcp's own task that closes a session
/// whose handler ended).
pub(crate) fn request_client() -> Option<ClientKey> {
    REQUEST.try_with(|scope| scope.client.clone()).ok()
}

/// The client key of the current request: the one the layer derived, or
/// the anonymous key outside the layer (one key for every request, to which
/// no per-client limit applies).
pub(crate) fn current_client() -> ClientKey {
    request_client().unwrap_or_else(ClientKey::anonymous)
}

/// Records `refusal` for the current request, if it runs under
/// [`BoundedSessionLayer`].
pub(crate) fn record(refusal: Refusal) {
    let _ = REQUEST.try_with(|scope| scope.refusal.set(Some(refusal)));
}

/// Whether the current request runs under [`BoundedSessionLayer`], which
/// can hold its session busy (`hold`).
pub(crate) fn can_hold() -> bool {
    REQUEST.try_with(|_| ()).is_ok()
}

/// Keeps the current request's session busy until the request's stream
/// takes the mark over (`held`) or the layer answers; outside the
/// layer, `busy` ends at once.
pub(crate) fn hold(busy: Busy) {
    let _ = REQUEST.try_with(move |scope| scope.held.replace(Some(busy)));
}

/// Keeps `awaiting` for the rest of the current request; outside the
/// layer, it ends at once.
pub(crate) fn await_session(awaiting: Awaiting) {
    let _ = REQUEST.try_with(move |scope| scope.awaiting.replace(Some(awaiting)));
}

/// What the current request holds of `activity`'s session: `Some` when it
/// holds it busy, as the mark itself if `take` (for a stream that keeps
/// the session busy while it lasts), else as an empty mark (the held one
/// stays until the layer answers); `None` when it holds nothing of it.
pub(crate) fn held(activity: &Arc<Activity>, take: bool) -> Option<Busy> {
    REQUEST
        .try_with(|scope| {
            let mut held = scope.held.borrow_mut();
            if !held.as_ref().is_some_and(|busy| busy.is_of(activity)) {
                return None;
            }
            Some(if take {
                held.take().unwrap_or_else(Busy::none)
            } else {
                Busy::none()
            })
        })
        .ok()
        .flatten()
}

/// Runs `request` as the layer runs a request of an anonymous client (for
/// the manager's unit tests).
#[cfg(test)]
pub(crate) async fn in_request<F: Future>(request: F) -> F::Output {
    REQUEST
        .scope(RequestScope::new(ClientKey::anonymous(), false), request)
        .await
}

/// A tower layer for rmcp's `StreamableHttpService` that answers refusals by
/// [`BoundedSessionManager`](crate::BoundedSessionManager) with 429, 404 or
/// 503 instead of 500 (see the module docs).
///
/// | refusal | status |
/// |---|---|
/// | session creation rate-limited | `429 Too Many Requests`, `Retry-After` |
/// | the session ended while the request was in flight | `404 Not Found` |
/// | with parking, the session is parked and the restore the request waited for was refused | `503 Service Unavailable`, `Retry-After: 1` |
/// | the cap is full and every session is busy (or `AtCapacity::Refuse`) | `503 Service Unavailable`, `Retry-After: 1` |
/// | the new session ended before its handshake finished | `503 Service Unavailable`, `Retry-After: 1` |
/// | the session has its limit of requests in flight | `429 Too Many Requests`, `Retry-After: 1` |
/// | the request reuses the id of a request still in flight | `409 Conflict` |
/// | the session has not finished its `initialize` handshake | `400 Bad Request` |
/// | from a trusted proxy, a forwarding chain that names no client address | `400 Bad Request` |
///
/// # Example
///
/// ```no_run
/// use mcp_bounded_session::{BoundedSessionLayer, BoundedSessionManagerBuilder};
/// use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
/// use tower_layer::Layer;
/// # #[derive(Clone)] struct MyServer;
/// # impl rmcp::ServerHandler for MyServer {}
///
/// let manager = BoundedSessionManagerBuilder::new(1_000)
///     .max_sessions_per_client(10)
///     .build();
/// let layer: BoundedSessionLayer = manager.layer();
/// let service = StreamableHttpService::new(|| Ok(MyServer), manager, StreamableHttpServerConfig::default());
/// let app: axum::Router = axum::Router::new().nest_service("/mcp", layer.layer(service));
/// ```
///
/// It also derives each request's client key (see
/// [`BoundedSessionManagerBuilder::client_key`](crate::BoundedSessionManagerBuilder::client_key)),
/// which is why it comes from the manager: [`BoundedSessionManager::layer`](crate::BoundedSessionManager::layer)
/// carries the manager's key settings. The peer address it keys by is a
/// bare `SocketAddr` request extension if one is present (inserted by your
/// own code, such as a PROXY-protocol middleware naming the real client),
/// else axum's `ConnectInfo<SocketAddr>` (serve with
/// `into_make_service_with_connect_info::<SocketAddr>()`).
/// `BoundedSessionLayer::default()`
/// derives keys with the default settings (the peer address, IPv6 by /64,
/// no trusted proxy). A request from a trusted proxy whose forwarding
/// header names no client address (see
/// [`BoundedSessionManagerBuilder::trusted_proxies`](crate::BoundedSessionManagerBuilder::trusted_proxies))
/// is answered `400 Bad Request` here, before the service sees it.
///
/// With limits on requests or listen streams configured (see
/// [`BoundedSessionManagerBuilder::max_requests_in_flight`](crate::BoundedSessionManagerBuilder::max_requests_in_flight)),
/// it admits every `POST` before the service runs it, stateless or not,
/// and holds its admission until the response ends: a refused request is
/// answered `429` or `503` with `Retry-After` and a JSON-RPC error naming
/// the limit.
///
/// A successful `DELETE` is answered `200 OK` rather than rmcp's
/// `202 Accepted` (the session is gone by then; clients that accept only
/// `200` or `204`, as the official Python SDK does, would warn on every
/// session end).
#[derive(Debug, Clone, Default)]
pub struct BoundedSessionLayer {
    keys: Arc<KeyDerivation>,
    requests: Option<Arc<RequestAdmission>>,
    drain: Option<Arc<Drain>>,
}

impl BoundedSessionLayer {
    pub(crate) fn new(
        keys: Arc<KeyDerivation>,
        requests: Option<Arc<RequestAdmission>>,
        drain: Option<Arc<Drain>>,
    ) -> Self {
        Self {
            keys,
            requests,
            drain,
        }
    }
}

impl<S> tower_layer::Layer<S> for BoundedSessionLayer {
    type Service = BoundedSessionService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        BoundedSessionService {
            inner,
            keys: self.keys.clone(),
            requests: self.requests.clone(),
            drain: self.drain.clone(),
        }
    }
}

/// The service made by [`BoundedSessionLayer`].
///
/// # Example
///
/// ```no_run
/// use mcp_bounded_session::{BoundedSessionLayer, BoundedSessionManagerBuilder, BoundedSessionService};
/// use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
/// use tower_layer::Layer;
/// # #[derive(Clone)] struct MyServer;
/// # impl rmcp::ServerHandler for MyServer {}
///
/// let manager = BoundedSessionManagerBuilder::new(1_000).build();
/// let service: BoundedSessionService<_> = manager.layer().layer(
///     StreamableHttpService::new(|| Ok(MyServer), manager, StreamableHttpServerConfig::default()),
/// );
/// # drop(service);
/// ```
#[derive(Debug, Clone)]
pub struct BoundedSessionService<S> {
    inner: S,
    keys: Arc<KeyDerivation>,
    requests: Option<Arc<RequestAdmission>>,
    drain: Option<Arc<Drain>>,
}

type HttpResponse = Response<BoxBody<Bytes, Infallible>>;

impl<S, B> tower_service::Service<Request<B>> for BoundedSessionService<S>
where
    S: tower_service::Service<Request<B>, Response = HttpResponse>,
    S::Future: Send + 'static,
{
    type Response = HttpResponse;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<HttpResponse, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let (parts, body) = request.into_parts();
        let client = match self.keys.derive(&parts) {
            Ok(client) => client,
            // Refused before rmcp sees it: keying it by the proxy instead
            // would let a client onto a key it shares with others.
            Err(unreadable) => {
                let response = unreadable_chain_response(unreadable);
                return Box::pin(async move { Ok(response) });
            }
        };
        // Counted in before it reads whether the instance drains (see
        // `drain`); held by the response's body from then on.
        let headers = McpHeaders::of_post(&parts);
        let ticket = self
            .drain
            .as_deref()
            .and_then(|drain| Some((drain, drain_kind(&parts, headers.as_ref())?)))
            .map(|(drain, kind)| {
                let ticket = drain.enter(kind);
                (drain.is_draining(), ticket)
            });
        let ticket = match ticket {
            Some((true, ticket)) if refused_while_draining(headers.as_ref(), ticket.kind()) => {
                ticket.refused();
                let refusal = RequestRefusal::Draining;
                #[cfg(feature = "metrics")]
                crate::requests::metrics::refused(refusal);
                let response = Refusal::Request(refusal).response();
                return Box::pin(async move { Ok(response) });
            }
            ticket => ticket.map(|(_, ticket)| ticket),
        };
        // Admitted before the service sees the request; held by the
        // response's body from then on (or dropped with this future).
        let admitted = match self
            .requests
            .as_deref()
            .map(|requests| requests.admit(&parts, headers.as_ref(), &client))
            .transpose()
        {
            Ok(admitted) => admitted.flatten(),
            Err(refused) => {
                #[cfg(feature = "metrics")]
                crate::requests::metrics::refused(refused);
                let response = Refusal::Request(refused).response();
                return Box::pin(async move { Ok(response) });
            }
        };
        let is_delete = parts.method == http::Method::DELETE;
        let resuming = parts.method == http::Method::GET
            && parts
                .headers
                .contains_key(http::header::HeaderName::from_static("last-event-id"));
        let inner = self.inner.call(Request::from_parts(parts, body));
        let scope = RequestScope::new(client, resuming);
        Box::pin(REQUEST.scope(scope, async move {
            let mut ticket = ticket;
            let mut response = match &ticket {
                None => inner.await?,
                Some(waiting) => {
                    let answered = tokio::select! {
                        biased;
                        response = inner => Some(response),
                        () = waiting.ended() => None,
                    };
                    match answered {
                        Some(response) => response?,
                        // Cut by the drain before rmcp answered.
                        None => {
                            if let Some(ticket) = &mut ticket {
                                ticket.cut();
                            }
                            return Ok(Refusal::Request(RequestRefusal::Draining).response());
                        }
                    }
                }
            };
            if is_delete && response.status() == StatusCode::ACCEPTED {
                *response.status_mut() = StatusCode::OK;
            }
            // A request whose session was not live when rmcp looked it up,
            // answered as if the session were gone (rmcp's own `404`: the
            // restore it waited for, another request's, was refused, or had
            // just been, and rmcp keeps that outcome for the id a moment
            // longer; or the copy it was told of ended before it reached
            // it), while the session is still kept here: a retry finds it.
            let (refusal, kept, resuming) = REQUEST.with(|scope| {
                let kept = scope
                    .awaiting
                    .borrow()
                    .as_ref()
                    .is_some_and(|awaiting| awaiting.still_kept(&scope.client));
                (scope.refusal.get(), kept, scope.resuming)
            });
            let refused_gone = refusal == Some(Refusal::SessionGone)
                && (response.status() == StatusCode::INTERNAL_SERVER_ERROR || resuming);
            let gone =
                refused_gone || (response.status() == StatusCode::NOT_FOUND && refusal.is_none());
            if gone && kept {
                return Ok(Refusal::RestoreRefused.response());
            }
            if refused_gone {
                return Ok(Refusal::SessionGone.response());
            }
            if response.status() == StatusCode::INTERNAL_SERVER_ERROR
                && let Some(refusal) = refusal
            {
                return Ok(refusal.response());
            }
            // Only a stream outlives this future: other responses are whole.
            let ticket = ticket.filter(|_| is_sse(&response));
            Ok(match (admitted, ticket) {
                (Some(admitted), Some(ticket)) => {
                    response.map(|body| Tracked::new(Held::new(body, admitted), ticket).boxed())
                }
                (Some(admitted), None) => response.map(|body| Held::new(body, admitted).boxed()),
                (None, Some(ticket)) => response.map(|body| Tracked::new(body, ticket).boxed()),
                (None, None) => response,
            })
        }))
    }
}

/// What a request is to the drain: `None` for one it neither waits for
/// nor ends (a `DELETE`, whose answer is immediate).
fn drain_kind(request: &http::request::Parts, headers: Option<&McpHeaders<'_>>) -> Option<Kind> {
    match (&request.method, headers) {
        (&http::Method::GET, _) => Some(Kind::Stream),
        (_, Some(headers)) if headers.is_listen() => Some(Kind::Stream),
        (_, Some(_)) => Some(Kind::Request),
        _ => None,
    }
}

/// Whether a draining instance refuses the request at once: a stream (it
/// would be ended at once), or a 2026-07-28 request (no state keeps it
/// here). Other requests are for sessions: the manager serves those it
/// holds and refuses to create or restore the others.
fn refused_while_draining(headers: Option<&McpHeaders<'_>>, kind: Kind) -> bool {
    kind == Kind::Stream || headers.is_some_and(|headers| headers.checked)
}

/// Whether `response` is an SSE stream.
fn is_sse(response: &HttpResponse) -> bool {
    response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("text/event-stream"))
}

/// `400 Bad Request` for a request from a trusted proxy whose forwarding
/// chain names no client address.
fn unreadable_chain_response(unreadable: Unreadable) -> HttpResponse {
    let message = format!("Bad Request: {unreadable}");
    Response::builder()
        .status(StatusCode::BAD_REQUEST)
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(Full::new(Bytes::from(message)).boxed())
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new()).boxed()))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::refusal::Creation;

    fn scope() -> RequestScope {
        RequestScope::new(ClientKey::anonymous(), false)
    }

    #[tokio::test]
    async fn a_record_outside_the_layer_reaches_no_request() {
        record(Refusal::SessionGone);
        let seen = REQUEST
            .scope(scope(), async { REQUEST.with(|scope| scope.refusal.get()) })
            .await;
        assert_eq!(seen, None);
    }

    /// An inner service that records a refusal (as the manager does) and
    /// answers with a status (as rmcp's service does on a manager error).
    #[derive(Clone)]
    struct Inner(Option<Refusal>, StatusCode);

    impl tower_service::Service<Request<()>> for Inner {
        type Response = HttpResponse;
        type Error = Infallible;
        type Future = Pin<Box<dyn Future<Output = Result<HttpResponse, Infallible>> + Send>>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, _: Request<()>) -> Self::Future {
            let Inner(refusal, status) = self.clone();
            Box::pin(async move {
                tokio::task::yield_now().await;
                if let Some(refusal) = refusal {
                    record(refusal);
                }
                let mut response = Response::new(Full::new(Bytes::new()).boxed());
                *response.status_mut() = status;
                Ok(response)
            })
        }
    }

    async fn respond(refusal: Option<Refusal>, status: StatusCode) -> HttpResponse {
        use tower_layer::Layer;
        use tower_service::Service;
        let mut service = BoundedSessionLayer::default().layer(Inner(refusal, status));
        service.call(Request::new(())).await.unwrap()
    }

    #[tokio::test]
    async fn refusals_replace_the_500() {
        let gone = respond(
            Some(Refusal::SessionGone),
            StatusCode::INTERNAL_SERVER_ERROR,
        )
        .await;
        assert_eq!(gone.status(), StatusCode::NOT_FOUND);
        let evicted = respond(
            Some(Refusal::EvictedBeforeInitialized),
            StatusCode::INTERNAL_SERVER_ERROR,
        )
        .await;
        assert_eq!(evicted.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(evicted.headers()[header::RETRY_AFTER], "1");
        let limited = respond(
            Some(Refusal::Creation(Creation::RateLimited(
                Duration::from_secs(7),
            ))),
            StatusCode::INTERNAL_SERVER_ERROR,
        )
        .await;
        assert_eq!(limited.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(limited.headers()[header::RETRY_AFTER], "7");
    }

    #[tokio::test]
    async fn other_responses_pass_through() {
        // A 500 the manager did not explain stays a 500.
        let unexplained = respond(None, StatusCode::INTERNAL_SERVER_ERROR).await;
        assert_eq!(unexplained.status(), StatusCode::INTERNAL_SERVER_ERROR);
        // A refusal followed by a recovery (not a 500) is not rewritten.
        let recovered = respond(Some(Refusal::SessionGone), StatusCode::OK).await;
        assert_eq!(recovered.status(), StatusCode::OK);
    }

    #[tokio::test]
    async fn record_inside_the_scope_is_seen() {
        let seen = REQUEST
            .scope(scope(), async {
                record(Refusal::SessionGone);
                REQUEST.with(|scope| scope.refusal.get())
            })
            .await;
        assert_eq!(seen, Some(Refusal::SessionGone));
    }
}
