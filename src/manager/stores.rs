//! What the Redis stores ask of the manager: whether it holds a session,
//! and to end a session DELETEd on another instance.

use rmcp::transport::streamable_http_server::session::SessionId;

use super::BoundedSessionManager;
use crate::close_reason::CloseReason;

impl BoundedSessionManager {
    /// Whether `id` is live on this instance.
    pub(crate) fn holds_session(&self, id: &SessionId) -> bool {
        self.registry.contains_where(id, |_| true)
    }

    /// Ends this instance's copy of a session DELETEd elsewhere, as a
    /// DELETE here would (`CloseReason::Closed`); nothing if it has none.
    pub(crate) fn close_deleted_elsewhere(&self, id: &SessionId) {
        self.registry.close(id, None, CloseReason::Closed);
    }
}
