//! Admission of requests and listen streams, for every request the service
//! serves: the stateless ones of protocol 2026-07-28 (no session, a fresh
//! handler per request, which the session manager never sees) and the
//! `POST`s of sessions alike.
//!
//! [`BoundedSessionLayer`](crate::BoundedSessionLayer) sees every request
//! and derives its client key; with any of these limits configured it asks
//! here before the service runs the request:
//!
//! - a `POST` whose `Mcp-Method` header is `subscriptions/listen` is a
//!   **listen stream**: it holds one place under `max_listen_streams` and
//!   its client's `max_listen_streams_per_client` until its response body
//!   ends or is dropped. A client at its quota that opens another gets it
//!   and its own oldest listen stream ends ([`ListenAtQuota::ReplaceOldest`]),
//!   or is refused ([`ListenAtQuota::Refuse`]);
//! - any other `POST` is a **request**: it holds `cost` units (1 unless a
//!   [`RequestInfo`] cost function says otherwise) under
//!   `max_requests_in_flight` and its client's
//!   `max_requests_in_flight_per_client` from admission until its response
//!   body ends or is dropped (in 2026-07-28, closing the response stream
//!   is the request's cancellation), and counts once against its client's
//!   `request_rate_limit_per_client`;
//! - a `GET` (a session's standalone stream, bounded by its session, or a
//!   replay) and a `DELETE` hold nothing here.
//!
//! Classification reads headers only: the layer never buffers or parses a
//! body, so a request costs the same to admit whatever its size. A client
//! that omits or falsifies `Mcp-Method` gains nothing: rmcp refuses a
//! request of protocol 2026-07-28 or later whose headers contradict its
//! body, and on a request of an earlier version (a session's, where rmcp
//! checks nothing) the layer ignores `Mcp-Method` and `Mcp-Name`: it is a
//! request, and the cost function sees neither header.
//!
//! The invariants (exact global and per-client bounds, the replacement
//! that touches only the client's own streams, bounded memory) are kept
//! in `table`; `body` holds the units for exactly as long as the response
//! lives; `metrics` reports them (feature `metrics`).

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use http::HeaderName;
use http::request::Parts;

use crate::clients::ClientKey;
use crate::refusal::RequestRefusal;

mod body;
mod budget;
#[cfg(all(test, mcp_bounded_session_loom))]
mod loom_tests;
#[cfg(feature = "metrics")]
pub(crate) mod metrics;
pub(crate) mod table;
#[cfg(test)]
mod tests;

pub(crate) use body::Held;
pub(crate) use table::RequestTable;

/// Idle clients whose request-rate history is kept unless configured
/// otherwise. A history holds up to the rate limit's `n` grants of 24 bytes
/// each: with the example's 600 per minute, 14 KB at most per client, so at
/// most ~140 MB at this bound (far less while clients send fewer than `n`
/// requests a window). Busy clients are bounded by the global bounds.
pub(crate) const DEFAULT_MAX_IDLE_CLIENTS: usize = 10_000;

/// The `Mcp-Method` of a listen stream.
const LISTEN_METHOD: &str = "subscriptions/listen";

/// The headers admission reads.
static PROTOCOL_VERSION_HEADER: HeaderName = HeaderName::from_static("mcp-protocol-version");
static METHOD_HEADER: HeaderName = HeaderName::from_static("mcp-method");
static NAME_HEADER: HeaderName = HeaderName::from_static("mcp-name");

/// The first protocol version whose requests carry `Mcp-Method` and
/// `Mcp-Name` headers that rmcp checks against the body.
const STANDARD_HEADERS_VERSION: &str = "2026-07-28";

/// What the layer reads of a `POST`'s MCP headers, once per request (the
/// drain and admission both use it).
#[derive(Debug, Clone, Copy)]
pub(crate) struct McpHeaders<'a> {
    /// Whether the request declares protocol 2026-07-28 or later, whose
    /// `Mcp-Method` and `Mcp-Name` headers rmcp checks against the body.
    /// Below that, a client could label any request a listen stream, or
    /// give it the name of a cheap tool: the headers are not believed.
    pub(crate) checked: bool,
    /// Its `Mcp-Method`, if checked.
    pub(crate) method: Option<&'a str>,
}

impl<'a> McpHeaders<'a> {
    /// The headers of `request` if it is a `POST` (the only requests
    /// that carry MCP messages); `None` otherwise.
    pub(crate) fn of_post(request: &'a Parts) -> Option<Self> {
        (request.method == http::Method::POST).then(|| Self::read(request))
    }

    fn read(request: &'a Parts) -> Self {
        let header = |name: &HeaderName| {
            request
                .headers
                .get(name)
                .and_then(|value| value.to_str().ok())
        };
        // rmcp compares the version strings the same way.
        let checked = header(&PROTOCOL_VERSION_HEADER)
            .is_some_and(|version| version >= STANDARD_HEADERS_VERSION);
        Self {
            checked,
            method: checked.then(|| header(&METHOD_HEADER)).flatten(),
        }
    }

    /// Whether the request opens a `subscriptions/listen` stream.
    pub(crate) fn is_listen(&self) -> bool {
        self.method == Some(LISTEN_METHOD)
    }
}

/// What a client at its quota of listen streams gets when it opens one
/// more.
///
/// ```
/// use mcp_bounded_session::{BoundedSessionManagerBuilder, ListenAtQuota};
///
/// let manager = BoundedSessionManagerBuilder::new(100)
///     .max_listen_streams_per_client(4)
///     .listen_at_quota(ListenAtQuota::Refuse)
///     .build();
/// # drop(manager);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum ListenAtQuota {
    /// The new stream is admitted and the client's own oldest listen stream
    /// ends (its handler's `listen` sees its cancellation): a client that
    /// reconnects without closing its old stream never locks itself out.
    #[default]
    ReplaceOldest,
    /// The new stream is refused with `429 Too Many Requests`.
    Refuse,
}

/// What a request cost function sees: the request's `Mcp-Method` and
/// `Mcp-Name` headers (absent on legacy requests) and its client key.
///
/// ```
/// use mcp_bounded_session::{BoundedSessionManagerBuilder, RequestInfo};
///
/// // One expensive tool counts as ten cheap calls.
/// let manager = BoundedSessionManagerBuilder::new(100)
///     .max_requests_in_flight_per_client(32)
///     .request_cost(|request: &RequestInfo<'_>| {
///         match (request.method, request.name) {
///             (Some("tools/call"), Some("render_video")) => 10,
///             _ => 1,
///         }
///     })
///     .build();
/// # drop(manager);
/// ```
#[derive(Debug)]
#[non_exhaustive]
pub struct RequestInfo<'a> {
    /// The `Mcp-Method` header, if present and valid UTF-8, on a request
    /// of protocol 2026-07-28 or later (rmcp checks it against the body);
    /// `None` on an earlier version's, where a client could write anything.
    pub method: Option<&'a str>,
    /// The `Mcp-Name` header (the tool, resource or prompt), if present,
    /// under the same condition.
    pub name: Option<&'a str>,
    /// The client the request is keyed by.
    pub client: &'a ClientKey,
}

/// A user's request cost function (see [`RequestInfo`]).
#[derive(Clone)]
pub(crate) struct RequestCost(pub(crate) Arc<dyn Fn(&RequestInfo<'_>) -> u32 + Send + Sync>);

impl fmt::Debug for RequestCost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RequestCost(..)")
    }
}

/// The configured limits; `None` for none.
#[derive(Debug, Clone)]
pub(crate) struct RequestLimits {
    pub(crate) max_in_flight: Option<usize>,
    pub(crate) max_in_flight_per_client: Option<usize>,
    pub(crate) rate_per_client: Option<(usize, Duration)>,
    pub(crate) max_listen: Option<usize>,
    pub(crate) max_listen_per_client: Option<usize>,
    pub(crate) listen_at_quota: ListenAtQuota,
    pub(crate) max_idle_keys: usize,
    pub(crate) cost: Option<RequestCost>,
}

impl Default for RequestLimits {
    fn default() -> Self {
        Self {
            max_in_flight: None,
            max_in_flight_per_client: None,
            rate_per_client: None,
            max_listen: None,
            max_listen_per_client: None,
            listen_at_quota: ListenAtQuota::default(),
            max_idle_keys: DEFAULT_MAX_IDLE_CLIENTS,
            cost: None,
        }
    }
}

impl RequestLimits {
    /// Whether any limit is set (else the layer admits without counting).
    pub(crate) fn any(&self) -> bool {
        self.max_in_flight.is_some()
            || self.max_in_flight_per_client.is_some()
            || self.rate_per_client.is_some()
            || self.max_listen.is_some()
            || self.max_listen_per_client.is_some()
    }

    /// Panics with an actionable message unless every limit admits
    /// something.
    #[track_caller]
    pub(crate) fn validate(&self) {
        for (name, limit) in [
            ("max_requests_in_flight", self.max_in_flight),
            (
                "max_requests_in_flight_per_client",
                self.max_in_flight_per_client,
            ),
            ("max_listen_streams", self.max_listen),
            ("max_listen_streams_per_client", self.max_listen_per_client),
        ] {
            assert!(
                limit != Some(0),
                "{name} must be at least 1; leave it unset for no limit"
            );
        }
        if let Some((max, window)) = self.rate_per_client {
            crate::rate_limiter::RateLimiter::validate(max, window);
        }
    }
}

/// What a request holds while it is served; dropping it gives it back.
#[derive(Debug)]
pub(crate) enum Admitted {
    // Never read: held for its drop.
    Request(#[allow(dead_code)] table::RequestUnits),
    Listen(table::ListenUnit),
}

/// Request admission as the layer uses it.
#[derive(Debug)]
pub(crate) struct RequestAdmission {
    table: Arc<RequestTable>,
    cost: Option<RequestCost>,
    /// The smallest bound a request's units count against: a cost above
    /// it is lowered to it, so that an expensive request is admitted when
    /// its client and the server are otherwise idle, never refused forever.
    max_cost: usize,
}

impl RequestAdmission {
    /// `None` if no limit is configured.
    pub(crate) fn new(limits: &RequestLimits) -> Option<Self> {
        limits.validate();
        if !limits.any() {
            return None;
        }
        let max_cost = [limits.max_in_flight, limits.max_in_flight_per_client]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(usize::MAX);
        Some(Self {
            table: Arc::new(RequestTable::new(limits)),
            cost: limits.cost.clone(),
            max_cost,
        })
    }

    /// Admits `request` of `client`, if it is one that holds anything
    /// here (see the module docs); `Ok(None)` for one that does not.
    /// `headers` are the request's, read once by the layer (`None` for a
    /// request that is not a `POST`).
    pub(crate) fn admit(
        &self,
        request: &Parts,
        headers: Option<&McpHeaders<'_>>,
        client: &ClientKey,
    ) -> Result<Option<Admitted>, RequestRefusal> {
        let Some(headers) = headers else {
            return Ok(None);
        };
        let method = headers.method;
        let now = self.table.clock();
        if headers.is_listen() {
            let unit = self.table.admit_listen(client, now)?;
            return Ok(Some(Admitted::Listen(unit)));
        }
        let cost = match &self.cost {
            Some(cost) => {
                let name = headers
                    .checked
                    .then(|| request.headers.get(&NAME_HEADER))
                    .flatten()
                    .and_then(|value| value.to_str().ok());
                let info = RequestInfo {
                    method,
                    name,
                    client,
                };
                (cost.0)(&info) as usize
            }
            None => 1,
        };
        let units = self
            .table
            .admit_request(client, cost.clamp(1, self.max_cost), now)?;
        Ok(Some(Admitted::Request(units)))
    }

    /// Units in flight now (a request of cost `c` holds `c`).
    pub(crate) fn in_flight(&self) -> usize {
        self.table.in_flight()
    }

    /// Listen streams open now.
    pub(crate) fn listen_streams(&self) -> usize {
        self.table.listening()
    }
}
