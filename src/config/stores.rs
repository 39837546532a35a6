//! The builder's choice of event and session stores.
//!
//! Two kinds of streams can be replayed after a reconnection, and each
//! choice is one method:
//! - a session's streams (clients on protocol versions before 2026-07-28):
//!   by default each stream keeps its last events in its own in-memory
//!   ring; [`event_store`](BoundedSessionManagerBuilder::event_store) or
//!   [`redis`](BoundedSessionManagerBuilder::redis) keeps them in a store
//!   instead;
//! - rmcp's stateless streams (protocol 2026-07-28, no session): resumable
//!   only through the store the manager's `event_store()` returns: the one
//!   given to `event_store` or `redis`, else the one given to
//!   [`stateless_event_store`](BoundedSessionManagerBuilder::stateless_event_store)
//!   (for instance a [`MemoryEventStore`](crate::MemoryEventStore), for one
//!   instance), else none (rmcp then does not offer their resumption).

use std::sync::Arc;

use rmcp::transport::streamable_http_server::session::EventStore;

use super::BoundedSessionManagerBuilder;

impl BoundedSessionManagerBuilder {
    /// Keeps every stream's events (sessions' and stateless ones) in an
    /// external rmcp `EventStore`, which names them and replays them,
    /// possibly on another instance, instead of each session stream's
    /// in-memory ring, as `LocalSessionManager::with_event_store`. The
    /// store may pick any ids: one that does not begin with its stream's
    /// name (`event-1`, say) goes to the client bound to its stream by a
    /// keyed tag, so that a session replays only its own streams'
    /// events (instances that share the store share the key: see
    /// [`event_id_key`](Self::event_id_key)).
    ///
    /// ```no_run
    /// # use std::sync::Arc;
    /// # use mcp_bounded_session::BoundedSessionManager;
    /// # use rmcp::transport::streamable_http_server::session::EventStore;
    /// # fn demo(store: Arc<dyn EventStore>) {
    /// let manager = BoundedSessionManager::builder(100).event_store(store).build();
    /// # }
    /// ```
    pub fn event_store(mut self, store: Arc<dyn EventStore>) -> Self {
        self.event_store = Some(store);
        #[cfg(feature = "redis")]
        {
            self.event_store_is_redis = false;
        }
        self
    }

    /// The key that binds an external event store's ids to their stream
    /// (see [`event_store`](Self::event_store)); at least 16 bytes, the
    /// same on every instance that shares the store. Without it, a key is
    /// drawn at random per process, and an id issued by one instance
    /// resumes nothing on another (the resume is refused as unknown). Ids
    /// that begin with their stream's name, as this crate's stores' do,
    /// need no key.
    ///
    /// # Panics
    ///
    /// Panics if `key` is shorter than 16 bytes.
    ///
    /// ```
    /// use mcp_bounded_session::BoundedSessionManager;
    ///
    /// let key = std::env::var("MCP_EVENT_ID_KEY").unwrap_or_else(|_| "a shared secret of 32 bytes....".into());
    /// let manager = BoundedSessionManager::builder(100).event_id_key(key).build();
    /// # drop(manager);
    /// ```
    pub fn event_id_key(mut self, key: impl AsRef<[u8]>) -> Self {
        let key = key.as_ref();
        assert!(
            key.len() >= 16,
            "event_id_key must be at least 16 bytes (a random secret shared by the instances), \
             got {}",
            key.len()
        );
        self.event_id_key = Some(key.into());
        self
    }

    /// Makes rmcp's stateless streams (protocol 2026-07-28) resumable
    /// through `store`, while sessions keep their in-memory rings. Ignored
    /// if [`event_store`](Self::event_store) or `redis` is set (that store
    /// serves both).
    ///
    /// ```
    /// use std::sync::Arc;
    /// use mcp_bounded_session::{BoundedSessionManager, MemoryEventStore};
    /// use rmcp::transport::streamable_http_server::session::SessionManager;
    ///
    /// let manager = BoundedSessionManager::builder(100)
    ///     .stateless_event_store(Arc::new(MemoryEventStore::builder().max_events(50_000).build()))
    ///     .build();
    /// assert!(manager.event_store().is_some());
    /// ```
    pub fn stateless_event_store(mut self, store: Arc<dyn EventStore>) -> Self {
        self.stateless_event_store = Some(store);
        self
    }

    /// Shares sessions and replays with other instances through Redis:
    /// every stream's events go to `stores`' event store, and this manager's
    /// copies of sessions DELETEd on another instance end. Give
    /// `stores.session_store()` to rmcp's `StreamableHttpServerConfig`, so
    /// that an instance restores a session it does not hold. Unless set on
    /// `stores`' builder, keys live for the idle timeout (else the maximum
    /// lifetime) after their last use, and each stream keeps
    /// `replay_capacity` events.
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), mcp_bounded_session::StoreError> {
    /// use std::time::Duration;
    /// use mcp_bounded_session::{BoundedSessionManager, RedisStores};
    ///
    /// let redis = RedisStores::builder("redis://127.0.0.1:6379/").connect().await?;
    /// let manager = BoundedSessionManager::builder(1_000)
    ///     .idle_timeout(Duration::from_secs(15 * 60))
    ///     .redis(&redis)
    ///     .build();
    /// # drop(manager); Ok(()) }
    /// ```
    #[cfg(feature = "redis")]
    #[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
    pub fn redis(mut self, stores: &crate::store::RedisStores) -> Self {
        self.event_store = Some(stores.event_store());
        self.event_store_is_redis = true;
        self.redis = Some(stores.clone());
        self
    }
}
