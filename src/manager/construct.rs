//! The one constructor every way of making a manager ends in: the
//! builder's `build` and the `mcp-session`-compatible `new` both hand their
//! settings here ([`Parts`]), already checked by the setters that took
//! them, and each part of the manager is made once, from them.

use std::sync::Arc;
use std::time::Duration;

use rmcp::transport::streamable_http_server::session::EventStore;

use super::BoundedSessionManager;
use super::admission::Clients;
use crate::clients::key::KeyDerivation;
use crate::clients::limits::ClientLimits;
use crate::config::SessionConfig;
use crate::eviction::{AtCapacity, EvictionPolicy};
use crate::rate_limiter::RateLimiter;
use crate::registry::Registry;
use crate::requests::{RequestAdmission, RequestLimits};
use crate::session::{LateCloseMarkers, SessionSettings};
use crate::store::Appender;

/// Everything a manager is made of, as the builder settled it.
pub(crate) struct Parts {
    pub(crate) max_sessions: usize,
    pub(crate) session: SessionConfig,
    pub(crate) replay_capacity: usize,
    pub(crate) max_request_streams: usize,
    pub(crate) event_store: Option<Appender>,
    /// For stateless streams; the store of every stream serves them too.
    pub(crate) stateless_event_store: Option<Arc<dyn EventStore>>,
    pub(crate) rate_limit: Option<(usize, Duration)>,
    pub(crate) max_lifetime: Option<Duration>,
    pub(crate) eviction_policy: EvictionPolicy,
    pub(crate) at_capacity: AtCapacity,
    pub(crate) on_close: Option<crate::observe::CloseHook>,
    pub(crate) keys: KeyDerivation,
    pub(crate) client_limits: Option<ClientLimits>,
    pub(crate) bind_to_client: bool,
    pub(crate) requests: RequestLimits,
    pub(crate) parking: Option<Arc<crate::manager::parking::Parking>>,
}

impl BoundedSessionManager {
    /// Makes the manager `parts` describe.
    pub(crate) fn from_parts(parts: Parts) -> Self {
        let Parts {
            max_sessions,
            session,
            replay_capacity,
            max_request_streams,
            event_store,
            stateless_event_store,
            rate_limit,
            max_lifetime,
            eviction_policy,
            at_capacity,
            on_close,
            keys,
            client_limits,
            bind_to_client,
            requests,
            parking,
        } = parts;
        let stateless = event_store
            .as_ref()
            .map(|store| store.store().clone())
            .or(stateless_event_store);
        Self {
            registry: Arc::new(Registry::with_policy(
                max_sessions,
                eviction_policy,
                at_capacity,
                on_close,
            )),
            late_close_markers: Arc::new(LateCloseMarkers::new(max_sessions)),
            settings: Arc::new(SessionSettings {
                replay_capacity,
                max_request_streams,
                event_store,
                session,
                parking,
            }),
            rate_limiter: rate_limit.map(|(max, window)| RateLimiter::new(max, window)),
            max_lifetime,
            keys: Arc::new(keys),
            clients: client_limits.map(|limits| Arc::new(Clients::new(limits))),
            bind_to_client,
            stateless_event_store: stateless.map(|store| {
                Arc::new(crate::store::StatelessStreams(store)) as Arc<dyn EventStore>
            }),
            restoring: dashmap::DashSet::new(),
            requests: RequestAdmission::new(&requests).map(Arc::new),
            drain: Arc::new(crate::drain::Drain::new()),
            #[cfg(feature = "redis")]
            redis_stores: std::sync::OnceLock::new(),
        }
    }
}
