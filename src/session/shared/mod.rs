//! A session's state, shared by its HTTP requests (through
//! [`SessionHandle`](super::SessionHandle)) and its MCP handler (through
//! [`SessionTransport`](super::SessionTransport)).
//!
//! # Invariants kept here
//!
//! - Every routing decision (which stream a message goes to, its index, its
//!   place in the ring and in the client's queue) is made under the
//!   session's one lock, in the order the handler sent the messages: the
//!   futures rmcp spawns for its sends only wait afterwards, for room in a
//!   slow client's queue, and never reorder anything.
//! - The lock is never held across an `.await`, and nothing called under it
//!   takes another lock of the crate (the registry included; an SSE
//!   response is never dropped under it, as its drop takes it): it cannot
//!   deadlock, and it is per session, so one session never delays another.
//! - The handler's inbox holds at most `channel_capacity` client messages,
//!   boxed (pointer-sized) and allocated only when one waits; an HTTP
//!   request that finds it full waits for room.
//! - Once ended, a session stays ended: its inbox is dropped, its responses
//!   end (what they queued is still read), the handler's next `receive`
//!   returns `None` and its sends fail.

//!
//! The HTTP side's operations are in [`from_client`], the handler's in
//! [`from_handler`], the ordered hand-off to an external event store in
//! [`stored_events`].

use std::collections::VecDeque;
use std::sync::{Arc, Weak};
use std::task::Waker;
use std::time::Duration;

use parking_lot::Mutex;
#[cfg(test)]
use parking_lot::MutexGuard;
use rmcp::model::{ClientJsonRpcMessage, RequestId, ServerJsonRpcMessage};
use rmcp::transport::streamable_http_server::session::SessionId;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManagerError;
use tokio::sync::{Notify, oneshot};
use tokio::time::Instant;

use super::connection::ConnectionRef;
use super::routing::{RequestRoutes, Route};
use super::standalone::Standalone;
use super::{Origin, SessionSettings};
use crate::close_reason::CloseReason;
use crate::error::BoundedSessionError;

mod from_client;
mod from_handler;
mod stored_events;

pub(crate) use from_handler::Routed;
use stored_events::Unstored;

type InitializeReply = oneshot::Sender<Result<ServerJsonRpcMessage, BoundedSessionError>>;

/// Where the session is in its life.
#[derive(Debug)]
enum Phase {
    /// Created: waiting for the client's `initialize`.
    AwaitingInitialize,
    /// `initialize` is with the handler; its answer goes to `reply`.
    Initializing {
        request_id: Option<RequestId>,
        reply: InitializeReply,
    },
    Ready,
    Ended(CloseReason),
}

#[derive(Debug)]
pub(crate) struct State {
    phase: Phase,
    /// Client messages the handler has not received yet.
    inbox: VecDeque<Box<ClientJsonRpcMessage>>,
    handler_waker: Option<Waker>,
    last_activity: Instant,
    pub(crate) routes: RequestRoutes,
    pub(crate) standalone: Standalone,
    /// Requests of a restored session waiting for its handshake.
    waiting_for_handshake: usize,
    /// With an event store: events routed and not yet stored, in order.
    unstored: VecDeque<Unstored>,
    next_ticket: u64,
    stored_through: u64,
}

/// The answer of [`Shared::timeout_check`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Deadline {
    Passed(CloseReason),
    /// Idle for `park_after`: park it if nothing of it is in flight.
    Park,
    CheckAt(Instant),
    Never,
}

/// The shortest `park_after` of a restored copy, counted from its last
/// activity as `park_after` is (so from the end of its restore at the
/// earliest). rmcp 3.11 forgets a finished restore in a task of its own:
/// until that task runs, a request for the id is told the session was
/// restored, without a restore of its own, and goes to it; a copy parked
/// again in that window would answer it `404`. The task waits for a lock
/// other requests take; this outlasts it on a loaded machine, and is
/// nothing next to the `park_after` of a real server.
const RESTORED_STAYS: Duration = Duration::from_millis(100);

#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) id: SessionId,
    pub(crate) settings: Arc<SessionSettings>,
    origin: Origin,
    state: Mutex<State>,
    /// Signalled when the inbox gets room, the handshake completes or the
    /// session ends.
    changed: Notify,
    /// With an event store: one sender stores at a time, in ticket order.
    storing: tokio::sync::Mutex<()>,
    me: Weak<Shared>,
    pub(crate) created_at: Instant,
    /// When the maximum lifetime ends, if there is one: counted from the
    /// session's first copy, so that parking and restoring it does not
    /// extend it.
    pub(crate) lifetime_end: Option<Instant>,
}

impl Shared {
    pub(crate) fn new(
        id: SessionId,
        settings: Arc<SessionSettings>,
        origin: Origin,
        first_index: u64,
        lifetime_end: Option<Instant>,
    ) -> Arc<Self> {
        let now = Instant::now();
        Arc::new_cyclic(|me| Self {
            state: Mutex::new(State {
                phase: Phase::AwaitingInitialize,
                inbox: VecDeque::new(),
                handler_waker: None,
                last_activity: now,
                // A created session numbers its POSTs from 0, as rmcp's.
                routes: RequestRoutes::new(match origin {
                    Origin::Created => 0,
                    Origin::Restored => first_index,
                }),
                standalone: Standalone::new(first_index, &settings, &id),
                waiting_for_handshake: 0,
                unstored: VecDeque::new(),
                next_ticket: 1,
                stored_through: 0,
            }),
            id,
            settings,
            origin,
            changed: Notify::new(),
            storing: tokio::sync::Mutex::new(()),
            me: me.clone(),
            created_at: now,
            lifetime_end,
        })
    }

    fn capacity(&self) -> usize {
        self.settings.session.channel_capacity
    }

    pub(crate) fn gone(&self) -> BoundedSessionError {
        LocalSessionManagerError::SessionNotFound(self.id.clone()).into()
    }

    #[cfg(test)]
    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock()
    }

    /// Ends the session for `reason`; `false` if it had ended already.
    pub(crate) fn end(&self, reason: CloseReason) -> bool {
        let mut state = self.state.lock();
        if matches!(state.phase, Phase::Ended(_)) {
            return false;
        }
        // Dropping the handshake's reply tells its waiter the session is gone.
        state.phase = Phase::Ended(reason);
        state.inbox = VecDeque::new();
        state.unstored.clear();
        state.standalone.disconnect_all();
        for request in state.routes.streams.values_mut() {
            request.events.connection = None;
        }
        let handler = state.handler_waker.take();
        drop(state);
        if let Some(handler) = handler {
            handler.wake();
        }
        self.changed.notify_waiters();
        true
    }

    /// Counts as activity for the idle timeout (a resume served by an
    /// event store, which does not go through the session's state).
    pub(crate) fn note_activity(&self) {
        self.state.lock().last_activity = Instant::now();
    }

    /// Runs `claim` under the session's lock if no standalone response (or
    /// shadow) is open: a `GET` opens its response under this lock, after
    /// its request marked the session busy, so it either holds the
    /// session busy when `claim` runs (which then fails) or finds it
    /// claimed. Takes no other lock (see the module docs).
    pub(crate) fn claim_if_quiet(&self, claim: &mut dyn FnMut() -> bool) -> bool {
        let state = self.state.lock();
        !state.standalone.is_open() && claim()
    }

    /// When the session's idle timeout ends it, counted from its last
    /// activity; `None` without an idle timeout.
    pub(crate) fn idle_deadline(&self) -> Option<Instant> {
        let idle = self.settings.session.keep_alive?;
        self.state.lock().last_activity.checked_add(idle)
    }

    /// Until when the session may come back once its copy ended: its idle
    /// deadline or the end of its lifetime, whichever comes first.
    pub(crate) fn restorable_until(&self) -> Option<Instant> {
        match (self.idle_deadline(), self.lifetime_end) {
            (Some(idle), Some(end)) => Some(idle.min(end)),
            (at, None) | (None, at) => at,
        }
    }

    /// Whether the handshake is still under way (or not begun).
    pub(crate) fn handshake_pending(&self) -> bool {
        matches!(
            self.state.lock().phase,
            Phase::AwaitingInitialize | Phase::Initializing { .. }
        )
    }

    /// Why the session ended, if it has.
    pub(crate) fn ended(&self) -> Option<CloseReason> {
        match self.state.lock().phase {
            Phase::Ended(reason) => Some(reason),
            _ => None,
        }
    }

    /// Whether the session timed out by `now` (or is due to be parked),
    /// else when to look again. After the handshake: the idle timeout and
    /// `park_after`, counted from the last message. Before: `init_timeout`,
    /// counted from creation; and, as the handshake's end re-arms nothing,
    /// a look when the first of the idle timeout and `park_after` would
    /// run out, in case the handshake is done by then.
    pub(crate) fn timeout_check(&self, now: Instant) -> Deadline {
        let state = self.state.lock();
        let config = &self.settings.session;
        let idle_at = config
            .keep_alive
            .and_then(|idle| state.last_activity.checked_add(idle));
        let park_after = self
            .settings
            .parking
            .as_ref()
            .and_then(|parking| parking.park_after);
        match state.phase {
            Phase::Ready => {
                let park_after = park_after.map(|after| match self.origin {
                    Origin::Restored => after.max(RESTORED_STAYS),
                    Origin::Created => after,
                });
                let park_at = park_after.and_then(|after| state.last_activity.checked_add(after));
                match (idle_at, park_at) {
                    (Some(at), _) if at <= now => Deadline::Passed(CloseReason::IdleTimeout),
                    (_, Some(at)) if at <= now => Deadline::Park,
                    (Some(idle), Some(park)) => Deadline::CheckAt(idle.min(park)),
                    (Some(at), None) | (None, Some(at)) => Deadline::CheckAt(at),
                    (None, None) => Deadline::Never,
                }
            }
            Phase::AwaitingInitialize | Phase::Initializing { .. } => {
                let init_at = config
                    .init_timeout
                    .and_then(|timeout| self.created_at.checked_add(timeout));
                // Not a deadline: a look once the idle timeout (or
                // `park_after`) would have run out, in case the handshake is
                // done by then (and again as long later if it is not).
                let every = match (config.keep_alive, park_after) {
                    (Some(idle), Some(park)) => Some(idle.min(park)),
                    (idle, park) => idle.or(park),
                };
                let look_at = every.and_then(|every| {
                    let at = state.last_activity.checked_add(every)?;
                    if at > now {
                        Some(at)
                    } else {
                        now.checked_add(every)
                    }
                });
                match (init_at, look_at) {
                    (Some(at), _) if at <= now => Deadline::Passed(CloseReason::InitTimeout),
                    (Some(init), Some(look)) => Deadline::CheckAt(init.min(look)),
                    (Some(at), None) | (None, Some(at)) => Deadline::CheckAt(at),
                    (None, None) => Deadline::Never,
                }
            }
            Phase::Ended(_) => Deadline::Never,
        }
    }
}

impl State {
    /// Numbers, keeps and queues an event on `route`'s stream (the
    /// standalone stream if that request's is gone).
    fn push(
        &mut self,
        route: Route,
        message: Option<Arc<ServerJsonRpcMessage>>,
        retry: Option<Duration>,
        settings: &SessionSettings,
    ) -> Option<ConnectionRef> {
        let capacity = settings.session.channel_capacity;
        if let Route::Request {
            http_request_id,
            completes,
        } = route
            && let Some(request) = self.routes.streams.get_mut(&http_request_id)
        {
            let full = request.events.push(message, retry, capacity);
            if completes {
                self.routes.complete(http_request_id, settings);
            }
            return full;
        }
        self.standalone.push(message, retry, capacity)
    }

    /// Ends `connection` if it is still some stream's current response (a
    /// waiting shadow then takes over the standalone stream at once).
    fn disconnect(&mut self, connection: &ConnectionRef, capacity: usize) -> bool {
        if self.standalone.response_gone(connection, capacity) {
            return true;
        }
        self.routes
            .streams
            .values_mut()
            .any(|request| request.events.disconnect_if(connection))
    }
}
