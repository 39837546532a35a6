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

use std::collections::VecDeque;
use std::sync::{Arc, Weak};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use parking_lot::{Mutex, MutexGuard};
use rmcp::model::{
    ClientJsonRpcMessage, ClientNotification, JsonRpcMessage, RequestId, ServerJsonRpcMessage,
};
use rmcp::transport::common::server_side_http::session_id as random_id;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManagerError;
use rmcp::transport::streamable_http_server::session::{ServerSseMessage, SessionId};
use tokio::sync::{Notify, oneshot};
use tokio::time::Instant;

use super::connection::{ConnectionRef, SseResponse};
use super::routing::{RequestRoutes, Route};
use super::standalone::Standalone;
use super::{Origin, SessionSettings, StreamTarget};
use crate::close_reason::CloseReason;
use crate::error::{BoundedSessionError, TransportError};
use crate::event_id::EventId;
use crate::replay_buffer::ReplayError;

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

/// An event waiting for the event store to name it.
#[derive(Debug)]
struct Unstored {
    ticket: u64,
    route: Route,
    message: Option<Arc<ServerJsonRpcMessage>>,
    retry: Option<Duration>,
}

/// The answer of [`Shared::timeout_check`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Deadline {
    Passed(CloseReason),
    CheckAt(Instant),
    Never,
}

/// What routing a handler's message left to do, outside the lock.
#[derive(Debug)]
pub(crate) enum Routed {
    Done,
    /// The client's queue is over capacity: wait for room.
    WaitForRoom(ConnectionRef),
    /// With an event store: have event `ticket` (and those before it)
    /// stored and delivered.
    Store(u64),
    Failed(TransportError),
}

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
}

impl Shared {
    pub(crate) fn new(
        id: SessionId,
        settings: Arc<SessionSettings>,
        origin: Origin,
        first_index: u64,
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

    /// Why the session ended, if it has.
    pub(crate) fn ended(&self) -> Option<CloseReason> {
        match self.state.lock().phase {
            Phase::Ended(reason) => Some(reason),
            _ => None,
        }
    }

    /// Whether the session timed out by `now`, else when to look again.
    /// After the handshake: the idle timeout, counted from the last
    /// message. Before: `init_timeout`, counted from creation; and, as the
    /// handshake's end re-arms nothing, a look when the idle timeout would
    /// run out, in case the handshake is done by then.
    pub(crate) fn timeout_check(&self, now: Instant) -> Deadline {
        let state = self.state.lock();
        let config = &self.settings.session;
        let idle_at = config
            .keep_alive
            .and_then(|idle| state.last_activity.checked_add(idle));
        match state.phase {
            Phase::Ready => match idle_at {
                Some(at) if at <= now => Deadline::Passed(CloseReason::IdleTimeout),
                Some(at) => Deadline::CheckAt(at),
                None => Deadline::Never,
            },
            Phase::AwaitingInitialize | Phase::Initializing { .. } => {
                let init_at = config
                    .init_timeout
                    .and_then(|timeout| self.created_at.checked_add(timeout));
                match (init_at, idle_at) {
                    (Some(at), _) if at <= now => Deadline::Passed(CloseReason::InitTimeout),
                    (Some(init), Some(idle)) => Deadline::CheckAt(init.min(idle.max(now))),
                    (Some(at), None) => Deadline::CheckAt(at),
                    // Not a deadline: a look after the handshake.
                    (None, Some(at)) => Deadline::CheckAt(at.max(now)),
                    (None, None) => Deadline::Never,
                }
            }
            Phase::Ended(_) => Deadline::Never,
        }
    }

    // ---- The handler's side -------------------------------------------

    /// The next client message for the handler; `None` once ended.
    pub(crate) fn poll_receive(&self, cx: &mut Context<'_>) -> Poll<Option<ClientJsonRpcMessage>> {
        let mut state = self.state.lock();
        if let Some(message) = state.inbox.pop_front() {
            let had_no_room = state.inbox.len() + 1 >= self.capacity();
            drop(state);
            if had_no_room {
                self.changed.notify_waiters();
            }
            return Poll::Ready(Some(*message));
        }
        if matches!(state.phase, Phase::Ended(_)) {
            return Poll::Ready(None);
        }
        match &mut state.handler_waker {
            Some(waker) if waker.will_wake(cx.waker()) => {}
            waker => *waker = Some(cx.waker().clone()),
        }
        Poll::Pending
    }

    /// Routes one message from the handler: the synchronous part of
    /// `Transport::send` (see the module docs).
    pub(crate) fn route_from_handler(&self, message: ServerJsonRpcMessage) -> Routed {
        let mut state = self.state.lock();
        let now = Instant::now();
        state.last_activity = now;
        let answers_initialize = match &state.phase {
            Phase::Ended(_) => return Routed::Failed(TransportError::SessionEnded),
            Phase::Initializing { request_id, .. } => match &message {
                JsonRpcMessage::Response(response) => Some(&response.id) == request_id.as_ref(),
                JsonRpcMessage::Error(error) => error.id.as_ref() == request_id.as_ref(),
                _ => false,
            },
            Phase::AwaitingInitialize | Phase::Ready => false,
        };
        if answers_initialize {
            let Phase::Initializing { reply, .. } =
                std::mem::replace(&mut state.phase, Phase::Ready)
            else {
                unreachable!("checked above");
            };
            drop(state);
            self.changed.notify_waiters();
            if reply.send(Ok(message)).is_err() {
                // The client gave up on its handshake: nobody knows this
                // session's id, so it ends now rather than at its timeout.
                self.end(CloseReason::WorkerEnded);
                return Routed::Failed(TransportError::SessionEnded);
            }
            return Routed::Done;
        }
        state.routes.expire_completed(now, &self.settings);
        // Before the handshake's answer (a log line, say): the standalone
        // stream keeps it for the first GET.
        let route = match state.phase {
            Phase::Ready => state.routes.route(&message, &self.id),
            _ => Route::Standalone,
        };
        let message = Some(Arc::new(message));
        if self.settings.event_store.is_some() {
            return Routed::Store(state.queue_for_store(route, message, None));
        }
        match state.push(route, message, None, &self.settings) {
            Some(full) => Routed::WaitForRoom(full),
            None => Routed::Done,
        }
    }

    /// The part of `Transport::send` that waits: for room in a slow
    /// client's queue (at most the stall limit, then that client is
    /// disconnected and its events wait in the ring), or for the event store.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: the event is routed already; dropping this only skips
    /// the wait (or leaves the storing to the next sender).
    pub(crate) async fn finish_send(&self, routed: Routed) -> Result<(), TransportError> {
        match routed {
            Routed::Done => Ok(()),
            Routed::Failed(error) => Err(error),
            Routed::WaitForRoom(full) => {
                self.wait_for_room(full).await;
                // Ended while it waited: the handler hears of it.
                match self.ended() {
                    Some(_) => Err(TransportError::SessionEnded),
                    None => Ok(()),
                }
            }
            Routed::Store(ticket) => self.store_through(ticket).await,
        }
    }

    async fn wait_for_room(&self, full: ConnectionRef) {
        let stall_limit = self.settings.stall_limit();
        if !full.wait_for_room(self.capacity(), stall_limit).await {
            let mut state = self.state.lock();
            if state.disconnect(&full) {
                tracing::debug!(
                    session_id = %self.id,
                    "client stopped reading its stream; disconnected it (it can resume)"
                );
            }
        }
    }

    /// Has the events up to `ticket` stored and delivered, in order; the
    /// result is that of event `ticket` (a failure of an earlier one is
    /// logged by whoever stored it).
    async fn store_through(&self, ticket: u64) -> Result<(), TransportError> {
        let Some(store) = self.settings.event_store.clone() else {
            return Ok(());
        };
        let mut own = Ok(());
        let mut full = None;
        loop {
            let _turn = self.storing.lock().await;
            let (next, name) = {
                let mut state = self.state.lock();
                if state.stored_through >= ticket {
                    break;
                }
                let Some(next) = state.unstored.pop_front() else {
                    // Ended: the queue was dropped.
                    own = Err(TransportError::SessionEnded);
                    break;
                };
                let name = state.store_name(next.route);
                (next, name)
            };
            let mut event = ServerSseMessage::default();
            event.message = next.message;
            event.retry = next.retry;
            let stored = store.store_event(&name, &event).await;
            let mut state = self.state.lock();
            state.stored_through = next.ticket;
            match stored {
                Ok(id) => {
                    event.event_id = Some(id);
                    let queued = state.push_stored(next.route, event, self.capacity());
                    if next.ticket == ticket {
                        full = queued;
                    }
                }
                Err(error) if next.ticket == ticket => own = Err(TransportError::EventStore(error)),
                Err(error) => {
                    tracing::warn!(session_id = %self.id, %error, "event store failed; event not delivered");
                }
            }
            // Even if the store failed: the request is over either way, and
            // its stream must end and its routes and count be released.
            if let Route::Request {
                http_request_id,
                completes: true,
            } = next.route
            {
                state.routes.complete(http_request_id, &self.settings);
            }
        }
        if let Some(full) = full {
            self.wait_for_room(full).await;
        }
        own
    }

    // ---- The HTTP side -------------------------------------------------

    /// Hands `initialize` to the handler and waits for its answer.
    ///
    /// # Cancel safety
    ///
    /// Dropped before the answer, the session ends when the answer comes:
    /// nobody else can know its id.
    pub(crate) async fn initialize(
        &self,
        request: ClientJsonRpcMessage,
    ) -> Result<ServerJsonRpcMessage, BoundedSessionError> {
        let answer = {
            let mut state = self.state.lock();
            match state.phase {
                Phase::AwaitingInitialize => {}
                Phase::Ended(_) => return Err(self.gone()),
                _ => return Err(BoundedSessionError::AlreadyInitialized),
            }
            let request_id = match &request {
                JsonRpcMessage::Request(request) => Some(request.id.clone()),
                _ => None,
            };
            let (reply, answer) = oneshot::channel();
            state.phase = Phase::Initializing { request_id, reply };
            state.last_activity = Instant::now();
            self.hand_to_handler(state, request);
            answer
        };
        answer.await.map_err(|_| self.gone())?
    }

    /// The session's state once it may serve a client's request: after its
    /// handshake (a restored session's first requests may race the
    /// handshake rmcp replays: up to `channel_capacity` of them wait for
    /// it; no client can know a created session's id before its answer) and,
    /// if `inbox_room`, with room in the handler's inbox.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it only waits.
    async fn ready(&self, inbox_room: bool) -> Result<MutexGuard<'_, State>, BoundedSessionError> {
        let mut waiting: Option<WaitingForHandshake<'_>> = None;
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            {
                let mut state = self.state.lock();
                match state.phase {
                    Phase::Ready if !inbox_room || state.inbox.len() < self.capacity() => {
                        if let Some(waiting) = waiting.take() {
                            // Not by its drop: that would lock again.
                            waiting.release(&mut state);
                        }
                        let now = Instant::now();
                        state.last_activity = now;
                        state.routes.expire_completed(now, &self.settings);
                        return Ok(state);
                    }
                    Phase::Ready => {}
                    Phase::Ended(_) => return Err(self.gone()),
                    _ if self.origin == Origin::Created => {
                        return Err(BoundedSessionError::NotInitialized);
                    }
                    _ if waiting.is_none() => {
                        if state.waiting_for_handshake >= self.capacity() {
                            return Err(BoundedSessionError::NotInitialized);
                        }
                        state.waiting_for_handshake += 1;
                        waiting = Some(WaitingForHandshake(self));
                    }
                    _ => {}
                }
            }
            changed.await;
        }
    }

    fn hand_to_handler(&self, mut state: MutexGuard<'_, State>, message: ClientJsonRpcMessage) {
        state.inbox.push_back(Box::new(message));
        let handler = state.handler_waker.take();
        drop(state);
        if let Some(handler) = handler {
            handler.wake();
        }
    }

    /// Opens the request's SSE stream and hands the request to the handler.
    pub(crate) async fn request(
        &self,
        request: ClientJsonRpcMessage,
    ) -> Result<SseResponse, BoundedSessionError> {
        // With an event store, the priming event is stored before the
        // stream opens (under a name drawn now), outside the lock.
        let mut stored_priming = None;
        if let Some(store) = &self.settings.event_store {
            self.ready(true)
                .await?
                .routes
                .check_new(&request, &self.settings)?;
            if let Some(retry) = self.settings.session.sse_retry {
                let name = random_id().to_string();
                let mut priming = ServerSseMessage::default();
                priming.retry = Some(retry);
                let id = store
                    .store_event(&name, &priming)
                    .await
                    .map_err(BoundedSessionError::EventStore)?;
                priming.event_id = Some(id);
                stored_priming = Some((name, priming));
            }
        }
        let mut state = self.ready(true).await?;
        state.routes.check_new(&request, &self.settings)?;
        let capacity = self.capacity();
        let (name, priming) = stored_priming.unzip();
        let stream = state.routes.open(&request, &self.settings, &self.id, name);
        let (response, connection_over) =
            stream
                .events
                .connect(capacity, self.settings.session.sse_retry, priming);
        debug_assert!(
            connection_over.is_none(),
            "a new queue has room for its priming event"
        );
        self.hand_to_handler(state, request);
        Ok(response)
    }

    /// A client's notification or response, for the handler.
    pub(crate) async fn accept(
        &self,
        message: ClientJsonRpcMessage,
    ) -> Result<(), BoundedSessionError> {
        let mut state = self.ready(true).await?;
        if let JsonRpcMessage::Notification(notification) = &message
            && let ClientNotification::CancelledNotification(cancelled) = &notification.notification
            && let Some(request_id) = &cancelled.params.request_id
            && let Some(http_request_id) = state.routes.in_flight_request(request_id)
        {
            state.routes.complete(http_request_id, &self.settings);
        }
        self.hand_to_handler(state, message);
        Ok(())
    }

    /// A `GET` without `Last-Event-ID`.
    pub(crate) async fn standalone(&self) -> Result<SseResponse, BoundedSessionError> {
        let mut state = self.ready(false).await?;
        Ok(state
            .standalone
            .open(None, self.capacity(), self.me.clone()))
    }

    /// A `GET` with `Last-Event-ID`.
    pub(crate) async fn resume(
        &self,
        last_seen: EventId,
    ) -> Result<SseResponse, BoundedSessionError> {
        let mut state = self.ready(false).await?;
        let capacity = self.capacity();
        let Some(http_request_id) = last_seen.stream else {
            return Ok(state
                .standalone
                .open(Some(last_seen.index), capacity, self.me.clone()));
        };
        let request = state
            .routes
            .streams
            .get_mut(&http_request_id)
            .ok_or(ReplayError::UnknownStream(http_request_id))?;
        let response = request.events.reconnect(last_seen.index, capacity, None)?;
        if request.completed {
            // Nothing more will come: the replay is all, then it ends.
            request.events.connection = None;
        }
        Ok(response)
    }

    /// Ends a stream's current response (after a last event telling the
    /// client when to reconnect, with `retry`).
    pub(crate) async fn close_stream(
        &self,
        target: StreamTarget,
        retry: Option<Duration>,
    ) -> Result<(), BoundedSessionError> {
        let (route, routed) = {
            let mut state = self.ready(false).await?;
            let route = match target {
                StreamTarget::Standalone => Route::Standalone,
                StreamTarget::Http(http_request_id) => {
                    if !state.routes.streams.contains_key(&http_request_id) {
                        return Err(ReplayError::UnknownStream(http_request_id).into());
                    }
                    Route::Request {
                        http_request_id,
                        completes: false,
                    }
                }
                StreamTarget::Request(request_id) => Route::Request {
                    http_request_id: state
                        .routes
                        .in_flight_request(&request_id)
                        .ok_or(BoundedSessionError::UnknownRequest(request_id))?,
                    completes: false,
                },
            };
            let routed = match retry {
                None => Routed::Done,
                Some(retry) if self.settings.event_store.is_some() => {
                    Routed::Store(state.queue_for_store(route, None, Some(retry)))
                }
                Some(retry) => match state.push(route, None, Some(retry), &self.settings) {
                    Some(full) => Routed::WaitForRoom(full),
                    None => Routed::Done,
                },
            };
            (route, routed)
        };
        // The `retry` event first, then the end of the response.
        self.finish_send(routed).await?;
        let mut state = self.state.lock();
        match route {
            Route::Standalone => state.standalone.disconnect_all(),
            Route::Request {
                http_request_id, ..
            } => {
                if let Some(request) = state.routes.streams.get_mut(&http_request_id) {
                    request.events.connection = None;
                }
            }
        }
        Ok(())
    }

    /// The standalone response `gone` ended (its client left): a waiting
    /// shadow takes over.
    pub(crate) fn standalone_response_gone(&self, gone: &ConnectionRef) {
        let capacity = self.capacity();
        self.state.lock().standalone.response_gone(gone, capacity);
    }
}

/// Counts a request of a restored session waiting for its handshake.
struct WaitingForHandshake<'a>(&'a Shared);

impl WaitingForHandshake<'_> {
    fn release(self, state: &mut State) {
        state.waiting_for_handshake -= 1;
        std::mem::forget(self);
    }
}

impl Drop for WaitingForHandshake<'_> {
    fn drop(&mut self) {
        self.0.state.lock().waiting_for_handshake -= 1;
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

    fn queue_for_store(
        &mut self,
        route: Route,
        message: Option<Arc<ServerJsonRpcMessage>>,
        retry: Option<Duration>,
    ) -> u64 {
        let ticket = self.next_ticket;
        self.next_ticket += 1;
        self.unstored.push_back(Unstored {
            ticket,
            route,
            message,
            retry,
        });
        ticket
    }

    /// The store name of `route`'s stream (the standalone one's if that
    /// request's is gone).
    fn store_name(&mut self, route: Route) -> String {
        if let Route::Request {
            http_request_id, ..
        } = route
            && let Some(request) = self.routes.streams.get(&http_request_id)
            && let Some(name) = request.events.store_name()
        {
            return name.to_owned();
        }
        self.standalone
            .events
            .store_name()
            .unwrap_or_default()
            .to_owned()
    }

    fn push_stored(
        &mut self,
        route: Route,
        event: ServerSseMessage,
        capacity: usize,
    ) -> Option<ConnectionRef> {
        if let Route::Request {
            http_request_id, ..
        } = route
            && let Some(request) = self.routes.streams.get_mut(&http_request_id)
        {
            return request.events.push_stored(event, capacity);
        }
        self.standalone.connect_shadow_if_needed(capacity);
        self.standalone.events.push_stored(event, capacity)
    }

    /// Ends `connection` if it is still some stream's current response.
    fn disconnect(&mut self, connection: &ConnectionRef) -> bool {
        if self.standalone.events.disconnect_if(connection) {
            return true;
        }
        self.routes
            .streams
            .values_mut()
            .any(|request| request.events.disconnect_if(connection))
    }
}
