//! The builder's parking settings (see [`guide::parking`](crate::guide::parking)).

use std::sync::Arc;
use std::time::Duration;

use rmcp::transport::streamable_http_server::session::SessionId;

use super::BoundedSessionManagerBuilder;
use crate::close_reason::CloseReason;
use crate::manager::parking::{ParkHook, Parking, RestoreHook};
use crate::store::MemorySessionStore;

/// What the builder was told about parking.
#[derive(Clone, Default)]
pub(super) struct ParkingSettings {
    memory: Option<MemorySessionStore>,
    park_after: Option<Duration>,
    on_park: Option<ParkHook>,
    on_restore: Option<RestoreHook>,
}

impl ParkingSettings {
    /// The manager's parking, if any setting asks for it; `redis`: whether
    /// the Redis stores keep sessions.
    ///
    /// # Panics
    ///
    /// Panics if `park_after` is set without a session store to park in,
    /// if both a `MemorySessionStore` and the Redis stores are set (rmcp
    /// restores from one session store), or if `park_after` is not shorter
    /// than `idle_timeout`.
    pub(super) fn into_parking(
        self,
        redis: bool,
        idle_timeout: Option<Duration>,
    ) -> Option<Arc<Parking>> {
        assert!(
            !(redis && self.memory.is_some()),
            "park_in and redis: give one session store (rmcp restores from one)"
        );
        if let Some(after) = self.park_after {
            assert!(
                redis || self.memory.is_some(),
                "park_after needs a session store to park in: park_in(MemorySessionStore) or redis"
            );
            assert!(
                idle_timeout.is_none_or(|idle| after < idle),
                "park_after ({after:?}) must be shorter than the idle timeout ({idle_timeout:?})"
            );
        }
        let wanted = self.memory.is_some()
            || self.park_after.is_some()
            || self.on_park.is_some()
            || self.on_restore.is_some();
        wanted.then(|| {
            Arc::new(Parking::new(
                self.memory,
                self.park_after,
                self.on_park,
                self.on_restore,
            ))
        })
    }
}

impl BoundedSessionManagerBuilder {
    /// Parks sessions in `store` instead of losing them: a session evicted
    /// at a full cap (or idle for [`park_after`](Self::park_after)) gives
    /// up its live copy and keeps only its `initialize` parameters there;
    /// its next request restores it, through rmcp's restore path, as a
    /// creation would be admitted (the cap, the rate limits, the client's
    /// quota). Give the same store to rmcp's
    /// `StreamableHttpServerConfig::session_store`.
    ///
    /// A restored session gets a **fresh handler**, given the same
    /// `initialize`: state the handler kept in memory is gone (save and
    /// reload it with [`on_park`](Self::on_park) and
    /// [`on_restore`](Self::on_restore)). An idle timeout, the maximum
    /// lifetime or a DELETE still end a session for good. With the Redis
    /// stores ([`redis`](Self::redis)), evicted sessions are kept in Redis
    /// already: use one or the other.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use mcp_bounded_session::{BoundedSessionManager, MemorySessionStore};
    /// use rmcp::transport::streamable_http_server::StreamableHttpServerConfig;
    ///
    /// let parked = MemorySessionStore::builder().max_parked(100_000).build();
    /// let manager = BoundedSessionManager::builder(1_000).park_in(&parked).build();
    /// let mut config = StreamableHttpServerConfig::default();
    /// config.session_store = Some(Arc::new(parked));
    /// # drop((manager, config));
    /// ```
    pub fn park_in(mut self, store: &MemorySessionStore) -> Self {
        self.parking.memory = Some(store.clone());
        self
    }

    /// Parks a session idle for `idle` (no request in flight, no stream
    /// open), rather than keeping its live copy until the idle timeout:
    /// a parked session costs its `initialize` parameters instead of a
    /// live session's 22.6 KB, and comes back on its next request. Needs
    /// [`park_in`](Self::park_in) or [`redis`](Self::redis), and must be
    /// shorter than the idle timeout (checked by `build`, which panics
    /// otherwise).
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use mcp_bounded_session::{BoundedSessionManager, MemorySessionStore};
    /// let parked = MemorySessionStore::default();
    /// let manager = BoundedSessionManager::builder(1_000)
    ///     .idle_timeout(Duration::from_secs(3600))
    ///     .park_in(&parked)
    ///     .park_after(Duration::from_secs(120))
    ///     .build();
    /// # drop(manager);
    /// ```
    pub fn park_after(mut self, idle: Duration) -> Self {
        self.parking.park_after = Some(idle);
        self
    }

    /// Calls `hook` with every session parked, and why
    /// ([`CloseReason::Evicted`], [`CloseReason::Parked`] or, closed by a
    /// drain, [`CloseReason::Drained`]): the moment
    /// to save state the handler keeps in memory, which a restored session's
    /// fresh handler will not have. Runs synchronously where the session
    /// was let go of: keep it short.
    ///
    /// ```
    /// # use mcp_bounded_session::{BoundedSessionManager, MemorySessionStore};
    /// let parked = MemorySessionStore::default();
    /// let manager = BoundedSessionManager::builder(8)
    ///     .park_in(&parked)
    ///     .on_park(|id, reason| println!("{id} parked ({reason})"))
    ///     .build();
    /// # drop(manager);
    /// ```
    pub fn on_park(
        mut self,
        hook: impl Fn(&SessionId, CloseReason) + Send + Sync + 'static,
    ) -> Self {
        self.parking.on_park = Some(Arc::new(hook));
        self
    }

    /// Calls `hook` with every parked session a request restored, before
    /// rmcp replays its `initialize` to the fresh handler.
    ///
    /// ```
    /// # use mcp_bounded_session::{BoundedSessionManager, MemorySessionStore};
    /// let parked = MemorySessionStore::default();
    /// let manager = BoundedSessionManager::builder(8)
    ///     .park_in(&parked)
    ///     .on_restore(|id| println!("{id} is back"))
    ///     .build();
    /// # drop(manager);
    /// ```
    pub fn on_restore(mut self, hook: impl Fn(&SessionId) + Send + Sync + 'static) -> Self {
        self.parking.on_restore = Some(Arc::new(hook));
        self
    }
}
