//! The standalone (GET) stream, and the shadow streams of a client that
//! opens more than one.
//!
//! # Invariants kept here
//!
//! - While the standalone stream's response is alive, a second `GET`
//!   becomes a keep-alive-only shadow stream, so two `EventSource`s of one
//!   client do not keep replacing each other; at most 32 shadows are kept,
//!   the oldest dropped first.
//! - When the standalone response dies, the newest live shadow takes over
//!   at once and first gets what the dead response did not deliver (or what
//!   followed the shadow's own `Last-Event-ID`): no notification is lost
//!   between the two, and none is delivered twice.
//! - A response that another one replaces (a shadow taking over, or a new
//!   `GET` once the old response was disconnected) is *cut* first: it hands
//!   out nothing more, and the index it had reached is final (see
//!   `connection`). A slow client's response disconnected at the stall
//!   limit may still be read; without the cut it would go on handing out
//!   what it had queued while its successor replayed the same events.
//!
//! These hold with an event store too: the standalone stream then keeps its
//! newest `replay_capacity` events as the store named them, so a plain
//! `GET` or a shadow replays what the previous response did not deliver,
//! exactly as with the in-memory ring.

use std::sync::{Arc, Weak};
use std::time::Duration;

use rmcp::model::ServerJsonRpcMessage;
use rmcp::transport::streamable_http_server::session::SessionId;

use super::SessionSettings;
use super::connection::{Connection, ConnectionRef, SseResponse};
use super::event_stream::EventStream;
use super::shared::Shared;

/// Shadow streams kept at most (as rmcp's local session manager).
pub(crate) const MAX_SHADOW_STREAMS: usize = 32;

/// A GET stream waiting in reserve.
#[derive(Debug)]
struct Shadow {
    connection: Connection,
    /// The client's `Last-Event-ID`, if it sent one.
    last_seen: Option<u64>,
}

#[derive(Debug)]
pub(crate) struct Standalone {
    pub(crate) events: EventStream,
    /// The latest response that carried the stream, kept after it ends:
    /// what it delivered decides what the next one replays.
    last_response: Option<ConnectionRef>,
    /// What counts as delivered before any response: nothing.
    delivered_before_first: u64,
    /// Extra GET streams opened while the standalone one was connected,
    /// oldest first.
    shadows: Vec<Shadow>,
}

impl Standalone {
    pub(crate) fn new(first_index: u64, settings: &SessionSettings, session: &SessionId) -> Self {
        Self {
            events: EventStream::new(None, first_index, settings, session),
            last_response: None,
            delivered_before_first: first_index - 1,
            shadows: Vec::new(),
        }
    }

    /// Cuts the latest response (its successor takes over from here) and
    /// returns the index of the last event it handed out.
    fn cut_last_response(&self) -> u64 {
        self.last_response
            .as_ref()
            .map_or(self.delivered_before_first, ConnectionRef::cut)
    }

    /// A `GET` without `Last-Event-ID` (`last_seen: None`) or with a
    /// standalone id: a shadow while the standalone stream is connected,
    /// else the standalone stream's new response, which first replays what
    /// the previous one did not deliver (or what followed `last_seen`).
    pub(crate) fn open(
        &mut self,
        last_seen: Option<u64>,
        capacity: usize,
        session: Weak<Shared>,
    ) -> SseResponse {
        self.shadows.retain(|shadow| shadow.connection.is_open());
        if self.events.is_connected() {
            if self.shadows.len() >= MAX_SHADOW_STREAMS {
                self.shadows.remove(0);
            }
            let (connection, response) = Connection::open(Vec::new(), 0, capacity, Some(session));
            self.shadows.push(Shadow {
                connection,
                last_seen,
            });
            return response;
        }
        let delivered = self.cut_last_response();
        let missed_from = last_seen.unwrap_or(delivered);
        // The standalone stream resumes from any index (see
        // `EventStream::missed_after`), so the fallback is never used.
        let response = self
            .events
            .reconnect(missed_from, capacity, Some(session))
            .unwrap_or_else(|_| SseResponse::ended());
        self.last_response = self.events.connection.as_ref().map(Connection::handle);
        response
    }

    /// Makes the newest live shadow stream the standalone stream, first
    /// queueing to it what it missed.
    pub(crate) fn promote_shadow(&mut self, capacity: usize) {
        self.shadows.retain(|shadow| shadow.connection.is_open());
        let Some(shadow) = self.shadows.pop() else {
            return;
        };
        let delivered = self.cut_last_response();
        let last_seen = shadow.last_seen.unwrap_or(delivered);
        // The standalone stream never refuses (see `missed_after`).
        let (missed, delivered_before) = self
            .events
            .missed_after(last_seen)
            .unwrap_or((Vec::new(), last_seen));
        shadow.connection.set_last_delivered(delivered_before);
        for event in missed {
            // Bounded by the ring: no wait for room here.
            let _ = shadow.connection.push(event, capacity);
        }
        self.last_response = Some(shadow.connection.handle());
        self.events.connection = Some(shadow.connection);
        tracing::debug!("a shadow stream took over the standalone stream");
    }

    /// If `gone` was the standalone stream's response and a shadow waits,
    /// the shadow takes over now, not at the next notification (a server
    /// request waiting for the client's answer may be in the ring).
    /// Whether `gone` was the standalone stream's response.
    pub(crate) fn response_gone(&mut self, gone: &ConnectionRef, capacity: usize) -> bool {
        if !self.events.disconnect_if(gone) {
            return false;
        }
        if !self.shadows.is_empty() {
            self.promote_shadow(capacity);
        }
        true
    }

    /// Sends on the standalone stream; if its client is gone but a shadow
    /// stream is alive, that one takes over first. `Some` if the client's
    /// queue is over capacity.
    pub(crate) fn push(
        &mut self,
        message: Option<Arc<ServerJsonRpcMessage>>,
        retry: Option<Duration>,
        capacity: usize,
    ) -> Option<ConnectionRef> {
        self.connect_shadow_if_needed(capacity);
        self.events.push(message, retry, capacity)
    }

    /// Before an event is queued: a dead standalone response with a live
    /// shadow hands over to it.
    pub(crate) fn connect_shadow_if_needed(&mut self, capacity: usize) {
        if !self.events.is_connected() && !self.shadows.is_empty() {
            self.promote_shadow(capacity);
        }
    }

    /// Ends the standalone response and every shadow (the session ended);
    /// later events wait in the ring for the next `GET`.
    pub(crate) fn disconnect_all(&mut self) {
        self.events.connection = None;
        self.drop_shadows();
    }

    /// Ends every shadow stream.
    pub(crate) fn drop_shadows(&mut self) {
        self.shadows.clear();
    }

    /// Whether a response (the standalone one, or a shadow) is open.
    pub(crate) fn is_open(&self) -> bool {
        self.events.is_connected()
            || self
                .shadows
                .iter()
                .any(|shadow| shadow.connection.is_open())
    }

    /// The responses open now: the standalone one and every shadow.
    pub(crate) fn responses(&self) -> Vec<ConnectionRef> {
        self.events
            .connection
            .iter()
            .chain(self.shadows.iter().map(|shadow| &shadow.connection))
            .map(Connection::handle)
            .collect()
    }

    /// Ends those of `responses` still open, whichever role they have now:
    /// a shadow may have taken over the standalone stream meanwhile (its
    /// predecessor stalled, or its client left), and a server-side close
    /// must end it as it would have ended the shadow. What they queued is
    /// still handed out (a close's `retry` event). Responses opened since
    /// are left alone.
    pub(crate) fn end_responses(&mut self, responses: &[ConnectionRef]) {
        let among = |connection: &Connection| responses.iter().any(|r| r.is(connection));
        if self.events.connection.as_ref().is_some_and(among) {
            self.events.connection = None;
        }
        self.shadows.retain(|shadow| !among(&shadow.connection));
    }
}
