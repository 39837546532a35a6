//! One session: its state, shared by the HTTP requests that reach it and
//! the MCP handler that serves it, with no task of its own.
//!
//! - [`shared`]: the state under the session's one lock, the phases of its
//!   life, the handler's inbox, what each side does to it;
//! - [`routing`]: which stream each server message belongs to;
//! - [`event_stream`]: one stream's numbered events, kept for replay;
//! - [`standalone`]: the GET stream and its shadows;
//! - [`connection`]: the pipe to the HTTP response carrying a stream;
//! - [`transport`]: the handler's side, rmcp's `Transport`, and the
//!   session's deadlines;
//! - [`handle`]: the request path's side, public as [`SessionHandle`];
//! - [`live`]: what the registry keeps, and the lease that closes it.
//!
//! # Invariant kept here
//!
//! Memory per session is bounded by the configuration: each stream keeps at
//! most `replay_capacity` events and queues at most `channel_capacity` for a
//! connected client (plus the sends waiting for room; a resumed stream: its
//! replay on top); at most `max_request_streams` request streams are open
//! and as many completed ones are kept for late resumes; at most 32 shadow
//! streams. An idle session with no stream connected holds no channel and
//! no timer entry beyond its one deadline.

use std::sync::Arc;
use std::time::Duration;

use rmcp::model::RequestId;
use rmcp::transport::streamable_http_server::session::SessionId;
use rmcp::transport::streamable_http_server::session::local::SessionConfig;
use tokio::time::Instant;

mod connection;
mod event_stream;
mod handle;
mod live;
mod routing;
mod shared;
mod standalone;
mod transport;

#[cfg(test)]
mod tests;

pub(crate) use event_stream::is_event_of;
pub use handle::SessionHandle;
pub(crate) use live::{LateCloseMarkers, Lease, LiveSession, SessionRegistry};
pub use transport::SessionTransport;

/// How long a send waits for a client that does not read a connected
/// stream (its queue is full) before it disconnects that stream; the events
/// stay in the stream's ring for a resume. At most the idle timeout.
const STALL_LIMIT: Duration = Duration::from_secs(30);

/// What every session of one manager runs with, shared.
#[derive(Debug, Clone)]
pub(crate) struct SessionSettings {
    pub(crate) session: SessionConfig,
    pub(crate) replay_capacity: usize,
    pub(crate) max_request_streams: usize,
    pub(crate) event_store: Option<crate::store::Appender>,
    /// Where sessions are parked, if they are.
    pub(crate) parking: Option<Arc<crate::manager::parking::Parking>>,
}

impl SessionSettings {
    fn stall_limit(&self) -> Duration {
        self.session
            .keep_alive
            .unwrap_or(STALL_LIMIT)
            .min(STALL_LIMIT)
    }
}

/// How a session came to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Origin {
    /// A client's `initialize`: nobody can know its id before the answer.
    Created,
    /// Restored from rmcp's `SessionStore`: rmcp replays the handshake, and
    /// the client's requests that triggered the restore may arrive first.
    Restored,
}

/// Which stream a server closes from its side.
#[derive(Debug, Clone)]
pub(crate) enum StreamTarget {
    Standalone,
    Http(u64),
    Request(RequestId),
}

/// Where a restored session starts numbering its standalone events and its
/// POSTs: a random index in `[2^40, 2^62)`, drawn anew for each life of the
/// session. Ids a client kept from another life then name no event of this
/// one, unless the two lives' ranges overlap: a life that issues `n` ids
/// overlaps another's with probability about `2n / 2^62` (a billion events
/// in both: one in two billion). Its standalone stream replays everything
/// kept for such an id, and a request stream of the earlier life is
/// unknown, instead of either being mistaken for an event or a request of
/// the new life. (A start derived from the clock, as before, overlapped
/// whenever an earlier life had issued more than one event per millisecond
/// since its own start, or a clock stepped back.) Indices stay below 2^63,
/// where event ids and the response's cut mark need them.
fn first_index_after_restore() -> u64 {
    use std::hash::BuildHasher;
    const LOW: u64 = 1 << 40;
    const HIGH: u64 = 1 << 62;
    // std's randomly keyed hasher, a fresh key per call: a random word
    // without a dependency for it.
    let random = std::hash::RandomState::new().hash_one(std::process::id());
    LOW + random % (HIGH - LOW)
}

/// A new session: the handle the registry keeps, and the transport for
/// rmcp's service (given its lease once the registry admitted it).
/// `lifetime_end`: when its maximum lifetime ends, if it has one (a
/// restored session's is its first copy's).
pub(crate) fn create(
    id: SessionId,
    settings: Arc<SessionSettings>,
    origin: Origin,
    lifetime_end: Option<Instant>,
) -> SessionHandle {
    let first_index = match origin {
        Origin::Created => crate::replay_buffer::FIRST_INDEX,
        Origin::Restored => first_index_after_restore(),
    };
    SessionHandle::new(shared::Shared::new(
        id,
        settings,
        origin,
        first_index,
        lifetime_end,
    ))
}

impl SessionHandle {
    /// The handler's side of this session.
    pub(crate) fn transport(&self, lease: Option<Lease>) -> SessionTransport {
        SessionTransport::new(self.shared().clone(), lease)
    }
}
