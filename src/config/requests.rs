//! The builder's limits on requests in flight, request rates and listen
//! streams, for every request the layer sees: stateless requests of
//! protocol 2026-07-28 (which never reach the session manager) and the
//! `POST`s of sessions alike (see [`crate::requests`] for how they are
//! counted and why each bound is exact).
//!
//! Every limit needs [`BoundedSessionManager::layer`](crate::BoundedSessionManager::layer)
//! in front of the service: the layer admits each request, and answers a
//! refused one with `429` (the client's own limits) or `503` (a global
//! bound), `Retry-After`, and a JSON-RPC error naming the limit.

use std::sync::Arc;
use std::time::Duration;

use super::BoundedSessionManagerBuilder;
use crate::requests::{ListenAtQuota, RequestCost, RequestInfo};

impl BoundedSessionManagerBuilder {
    /// At most `n` request units in flight on this server: a request holds
    /// its units (1 unless [`request_cost`](Self::request_cost) says
    /// otherwise) from admission until its response ends or its client
    /// drops it. One more is refused with `503` and `Retry-After: 1`. Listen
    /// streams do not count (see [`max_listen_streams`](Self::max_listen_streams)).
    ///
    /// # Panics
    ///
    /// [`build`](Self::build) panics if `n` is 0.
    ///
    /// ```
    /// # use mcp_bounded_session::BoundedSessionManagerBuilder;
    /// let manager = BoundedSessionManagerBuilder::new(1_000)
    ///     .max_requests_in_flight(1_024)
    ///     .max_requests_in_flight_per_client(32)
    ///     .build();
    /// assert_eq!(manager.requests_in_flight(), 0);
    /// ```
    pub fn max_requests_in_flight(mut self, n: usize) -> Self {
        self.requests.max_in_flight = Some(n);
        self
    }

    /// At most `n` request units in flight per client key; one more is
    /// refused with `429` and `Retry-After: 1`, and costs the server's
    /// bound nothing. Behind a shared address (a NAT, a company egress, a
    /// gateway) every client shares one key: key by an authenticated
    /// identity with [`client_key`](Self::client_key) there.
    ///
    /// # Panics
    ///
    /// [`build`](Self::build) panics if `n` is 0.
    ///
    /// ```
    /// # use mcp_bounded_session::BoundedSessionManagerBuilder;
    /// let manager = BoundedSessionManagerBuilder::new(1_000)
    ///     .max_requests_in_flight_per_client(32)
    ///     .build();
    /// # drop(manager);
    /// ```
    pub fn max_requests_in_flight_per_client(mut self, n: usize) -> Self {
        self.requests.max_in_flight_per_client = Some(n);
        self
    }

    /// At most `max_requests` requests per client key in any window of
    /// `window` (an exact sliding window, as the session rate limits); one
    /// more is refused with `429` and the exact `Retry-After`. Listen
    /// streams do not count.
    ///
    /// Idle clients' histories are kept for the 10,000 most recently seen
    /// clients; a history holds up to `max_requests` timestamps (24 bytes
    /// each).
    ///
    /// # Panics
    ///
    /// Panics if `max_requests` is 0 or `window` is zero.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use mcp_bounded_session::BoundedSessionManagerBuilder;
    /// let manager = BoundedSessionManagerBuilder::new(1_000)
    ///     .request_rate_limit_per_client(600, Duration::from_secs(60))
    ///     .build();
    /// # drop(manager);
    /// ```
    #[track_caller]
    pub fn request_rate_limit_per_client(mut self, max_requests: usize, window: Duration) -> Self {
        crate::rate_limiter::RateLimiter::validate(max_requests, window);
        self.requests.rate_per_client = Some((max_requests, window));
        self
    }

    /// At most `n` `subscriptions/listen` streams open on this server (told
    /// apart by their `Mcp-Method` header, on requests of protocol
    /// 2026-07-28, whose headers rmcp checks against the body); one more is
    /// refused with `503`,
    /// unless its client replaces one of its own
    /// ([`listen_at_quota`](Self::listen_at_quota)).
    ///
    /// # Panics
    ///
    /// [`build`](Self::build) panics if `n` is 0.
    ///
    /// ```
    /// # use mcp_bounded_session::BoundedSessionManagerBuilder;
    /// let manager = BoundedSessionManagerBuilder::new(1_000)
    ///     .max_listen_streams(10_000)
    ///     .max_listen_streams_per_client(4)
    ///     .build();
    /// assert_eq!(manager.listen_streams(), 0);
    /// ```
    pub fn max_listen_streams(mut self, n: usize) -> Self {
        self.requests.max_listen = Some(n);
        self
    }

    /// At most `n` listen streams per client key. A client at its quota that
    /// opens another gets it and its own oldest stream ends, or is refused
    /// with `429` (see [`ListenAtQuota`]); another client's stream is never
    /// touched.
    ///
    /// # Panics
    ///
    /// [`build`](Self::build) panics if `n` is 0.
    ///
    /// ```
    /// # use mcp_bounded_session::BoundedSessionManagerBuilder;
    /// let manager = BoundedSessionManagerBuilder::new(1_000)
    ///     .max_listen_streams_per_client(4)
    ///     .build();
    /// # drop(manager);
    /// ```
    pub fn max_listen_streams_per_client(mut self, n: usize) -> Self {
        self.requests.max_listen_per_client = Some(n);
        self
    }

    /// What a client at its quota of listen streams gets when it opens one
    /// more (default: [`ListenAtQuota::ReplaceOldest`]).
    ///
    /// ```
    /// # use mcp_bounded_session::{BoundedSessionManagerBuilder, ListenAtQuota};
    /// let manager = BoundedSessionManagerBuilder::new(1_000)
    ///     .max_listen_streams_per_client(4)
    ///     .listen_at_quota(ListenAtQuota::Refuse)
    ///     .build();
    /// # drop(manager);
    /// ```
    pub fn listen_at_quota(mut self, at_quota: ListenAtQuota) -> Self {
        self.requests.listen_at_quota = at_quota;
        self
    }

    /// How many units a request costs against the in-flight bounds, from
    /// its `Mcp-Method` and `Mcp-Name` headers (given only for requests of
    /// protocol 2026-07-28, whose headers rmcp checks; `None` for a
    /// session's) and its client (see [`RequestInfo`]); 1 for each request by default. A cost of 0 counts
    /// as 1, and a cost above the smallest in-flight bound configured
    /// counts as that bound (so an expensive request waits for an idle
    /// client, never for ever). The function runs on every `POST`: keep
    /// it cheap. The body is never read for it.
    ///
    /// ```
    /// # use mcp_bounded_session::{BoundedSessionManagerBuilder, RequestInfo};
    /// let manager = BoundedSessionManagerBuilder::new(1_000)
    ///     .max_requests_in_flight_per_client(32)
    ///     .request_cost(|request: &RequestInfo<'_>| match request.name {
    ///         Some("render_video") => 10,
    ///         _ => 1,
    ///     })
    ///     .build();
    /// # drop(manager);
    /// ```
    pub fn request_cost(
        mut self,
        cost: impl Fn(&RequestInfo<'_>) -> u32 + Send + Sync + 'static,
    ) -> Self {
        self.requests.cost = Some(RequestCost(Arc::new(cost)));
        self
    }
}
