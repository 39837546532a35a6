//! What the Redis stores need of the manager whose sessions they keep: a
//! small trait rather than the manager itself, so that the stores depend on
//! three questions and nothing else of it (and can be driven without one).

use rmcp::transport::streamable_http_server::session::SessionId;

use crate::session::SessionHandle;

/// The manager the stores serve, as they see it.
pub(crate) trait SessionHost: Send + Sync {
    /// Whether `id` is live on this instance (the upkeep keeps its stored
    /// copy alive while it is).
    fn holds_session(&self, id: &SessionId) -> bool;

    /// Ends this instance's copy of a session DELETEd elsewhere; nothing if
    /// it has none.
    fn close_deleted_elsewhere(&self, id: &SessionId);

    /// The live session `id`, to queue another instance's standalone
    /// notifications on it.
    fn session(&self, id: &SessionId) -> Option<SessionHandle>;
}
