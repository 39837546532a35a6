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
    /// store's ids must begin with their stream's name (as this crate's
    /// stores' do): a session replays only ids of its own streams.
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
        self.redis = Some(stores.clone());
        self
    }
}
