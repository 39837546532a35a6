//! Building the manager: the settings, defaults filled in, become the
//! [`Parts`] the manager's one constructor takes.

use std::sync::Arc;

use rmcp::transport::streamable_http_server::session::EventStore;

use super::{BoundedSessionManagerBuilder, ClientKeyFn};
use crate::clients::key::KeyDerivation;
use crate::clients::limits::ClientLimits;
use crate::manager::BoundedSessionManager;
use crate::manager::construct::Parts;
use crate::store::{Appender, BoundIds, IdKey};

impl BoundedSessionManagerBuilder {
    /// Builds the manager, ready to hand to `StreamableHttpService::new`.
    ///
    /// ```
    /// # use mcp_bounded_session::BoundedSessionManagerBuilder;
    /// let manager = BoundedSessionManagerBuilder::new(8).build();
    /// assert_eq!(manager.session_count(), 0);
    /// ```
    pub fn build(self) -> Arc<BoundedSessionManager> {
        #[cfg(feature = "redis")]
        let (redis, max_lifetime) = (self.redis.clone(), self.max_lifetime);
        let manager = Arc::new(BoundedSessionManager::from_parts(self.into_parts()));
        #[cfg(feature = "redis")]
        if let Some(redis) = &redis {
            let ttl = manager.session_config().keep_alive.or(max_lifetime);
            redis.attach(&manager, ttl, manager.replay_capacity());
        }
        manager
    }

    /// What the manager is made of, as these settings say: the defaults
    /// filled in, `idle_timeout` applied to the session configuration.
    pub(crate) fn into_parts(self) -> Parts {
        let explicit_keep_alive = self
            .session_config
            .as_ref()
            .is_some_and(|config| config.keep_alive.is_some());
        let mut session = self.session_config.unwrap_or_default();
        if let Some(idle) = self.idle_timeout {
            if explicit_keep_alive && session.keep_alive != Some(idle) {
                tracing::warn!("idle_timeout overrides the keep_alive of the given SessionConfig");
            }
            session.keep_alive = Some(idle);
        }
        let mut keys = KeyDerivation::new()
            .ipv6_prefix(self.ipv6_prefix)
            .trusted_proxies(self.trusted_proxies);
        if let Some(ClientKeyFn(key)) = self.client_key {
            keys = keys.custom(key);
        }
        let client_limits = (self.max_sessions_per_client.is_some()
            || self.rate_limit_per_client.is_some())
        .then_some(ClientLimits {
            max_sessions: self.max_sessions_per_client,
            rate: self.rate_limit_per_client,
            max_idle_keys: self.max_idle_client_keys,
        });
        // External stores' ids are bound to their streams (`store::bound_ids`);
        // the Redis stores' ids name their stream already.
        let key = self
            .event_id_key
            .as_deref()
            .map_or_else(IdKey::random, IdKey::new);
        let bind = |store| Arc::new(BoundIds::new(store, key.clone())) as Arc<dyn EventStore>;
        #[cfg(feature = "redis")]
        let event_store = match (&self.redis, self.event_store_is_redis) {
            (Some(redis), true) => Some(Appender::redis(redis.events())),
            _ => self.event_store.map(|store| Appender::any(bind(store))),
        };
        #[cfg(not(feature = "redis"))]
        let event_store = self.event_store.map(|store| Appender::any(bind(store)));
        #[cfg(feature = "redis")]
        let redis = self.redis.is_some();
        #[cfg(not(feature = "redis"))]
        let redis = false;
        let parking = self.parking.into_parking(redis, session.keep_alive);
        Parts {
            parking,
            max_sessions: self.max_sessions,
            replay_capacity: self.replay_capacity.unwrap_or(session.channel_capacity),
            session,
            max_request_streams: self
                .max_request_streams
                .unwrap_or(BoundedSessionManager::DEFAULT_MAX_REQUEST_STREAMS),
            event_store,
            stateless_event_store: self.stateless_event_store.map(bind),
            rate_limit: self.rate_limit,
            max_lifetime: self.max_lifetime,
            eviction_policy: self.eviction_policy,
            at_capacity: self.at_capacity,
            on_close: self.on_close.map(|hook| hook.0),
            keys,
            client_limits,
            bind_to_client: self.bind_sessions_to_client,
            requests: self.requests,
        }
    }
}
