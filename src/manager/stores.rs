//! What the Redis stores ask of the manager (whether it holds a session,
//! to end a session DELETEd on another instance), and what the manager
//! asks of them (whether a restore must be refused).

use std::sync::Weak;

use rmcp::transport::streamable_http_server::session::SessionId;

use super::BoundedSessionManager;
use crate::close_reason::CloseReason;
use crate::session::SessionHandle;

impl BoundedSessionManager {
    /// Whether the Redis stores refuse a restore of `id`: not an id this
    /// crate issues, or DELETEd on this instance since rmcp loaded it.
    pub(crate) fn store_refuses_restore(&self, id: &SessionId) -> bool {
        crate::store::refuses_restore(self, id)
    }

    /// The Redis stores attached to this manager, if any (weak: the stores'
    /// background tasks end with their last `RedisStores` clone, not with
    /// the manager).
    pub(crate) fn redis_stores(&self) -> Option<&Weak<crate::store::RedisInner>> {
        self.redis_stores.get()
    }

    /// Records the stores the builder attached (once: a manager is built
    /// with one `RedisStores` at most).
    pub(crate) fn attach_redis_stores(&self, stores: Weak<crate::store::RedisInner>) {
        let _ = self.redis_stores.set(stores);
    }
}

impl crate::store::SessionHost for BoundedSessionManager {
    fn holds_session(&self, id: &SessionId) -> bool {
        self.registry.contains(id)
    }

    /// As a DELETE here would (`CloseReason::Closed`).
    fn close_deleted_elsewhere(&self, id: &SessionId) {
        self.registry.close(id, None, CloseReason::Closed);
    }

    fn session(&self, id: &SessionId) -> Option<SessionHandle> {
        BoundedSessionManager::session(self, id)
    }
}
