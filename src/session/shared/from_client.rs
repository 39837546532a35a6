//! The HTTP side of a session: what the request path does to its state.

use std::time::Duration;

use parking_lot::MutexGuard;
use rmcp::model::{ClientJsonRpcMessage, ClientNotification, JsonRpcMessage, ServerJsonRpcMessage};
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::{Phase, Routed, Shared, State};

/// How long a request's priming event waits for another event of its
/// session to be stored with, with a store that takes several per call
/// (see `Shared::store_priming`).
const PRIMING_DELAY: Duration = Duration::from_millis(50);
use crate::close_reason::CloseReason;
use crate::error::BoundedSessionError;
use crate::event_id::EventId;
use crate::replay_buffer::ReplayError;
use crate::session::connection::{Connection, ConnectionRef, SseResponse};
use crate::session::routing::Route;
use crate::session::{Origin, StreamTarget};

impl Shared {
    /// Hands `initialize` to the handler and waits for its answer, until
    /// `init_timeout` after the session's creation: a handler that never
    /// answers ends the session as a client that never asks does
    /// ([`CloseReason::InitTimeout`]; the transport cannot notice it, as
    /// rmcp does not poll `receive` while its handler runs `initialize`).
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
        let answer = match self.init_deadline() {
            Some(deadline) => match tokio::time::timeout_at(deadline, answer).await {
                Ok(answer) => answer,
                Err(_) => {
                    self.end(CloseReason::InitTimeout);
                    return Err(self.gone());
                }
            },
            None => answer.await,
        };
        answer.map_err(|_| self.gone())?
    }

    /// When the handshake must be done by, if `init_timeout` is set.
    pub(crate) fn init_deadline(&self) -> Option<Instant> {
        let timeout = self.settings.session.init_timeout?;
        self.created_at.checked_add(timeout)
    }

    /// The session's state once it may serve a client's request: after its
    /// handshake (a restored session's first requests may race the
    /// handshake rmcp replays: up to `channel_capacity` of them wait for
    /// it; no client can know a created session's id before its answer) and,
    /// if `inbox_room`, with room in the handler's inbox. A wait for the
    /// handshake lasts until `init_timeout` at most (then the session
    /// ends).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it only waits.
    async fn ready(&self, inbox_room: bool) -> Result<MutexGuard<'_, State>, BoundedSessionError> {
        // The usual case, without registering with `changed` (a lock of
        // its own) first.
        {
            let mut state = self.state.lock();
            if matches!(state.phase, Phase::Ready)
                && (!inbox_room || state.inbox.len() < self.capacity())
            {
                self.note_request(&mut state);
                return Ok(state);
            }
        }
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
                        self.note_request(&mut state);
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
            match (waiting.is_some(), self.init_deadline()) {
                (true, Some(deadline)) => {
                    if tokio::time::timeout_at(deadline, changed).await.is_err() {
                        self.end(CloseReason::InitTimeout);
                    }
                }
                _ => changed.await,
            }
        }
    }

    /// A client's request is activity; completed streams past their TTL go.
    fn note_request(&self, state: &mut State) {
        let now = Instant::now();
        state.last_activity = now;
        state.routes.expire_completed(now, &self.settings);
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
        let mut state = self.ready(true).await?;
        state.routes.check_new(&request, &self.settings)?;
        let capacity = self.capacity();
        let retry = self.settings.session.sse_retry;
        let store = self.settings.event_store.as_ref();
        let stream = state.routes.open(&request, &self.settings, &self.id);
        let http_request_id = stream.events.http_request_id;
        // With an event store, the priming event gets its id from the store
        // like any other: it is queued, not sent now.
        let (response, connection_over) = stream
            .events
            .connect(capacity, retry.filter(|_| store.is_none()));
        debug_assert!(
            connection_over.is_none(),
            "a new queue has room for its priming event"
        );
        let priming = match (store, retry, http_request_id) {
            (Some(store), Some(retry), Some(http_request_id)) => Some((
                state.queue_priming(http_request_id, retry),
                store.max_events() > 1,
            )),
            _ => None,
        };
        self.hand_to_handler(state, request);
        if let Some((ticket, batched)) = priming {
            self.store_priming(ticket, batched);
        }
        Ok(response)
    }

    /// Stores a request's priming event off the request's path: at once
    /// with a store that takes one event per call (the handler runs
    /// meanwhile), else [`PRIMING_DELAY`] later unless another event of
    /// the session took it along first (a quick call's answer does: one
    /// round trip for both). Either way a long, silent call's client soon
    /// has an id to resume from.
    fn store_priming(&self, ticket: u64, batched: bool) {
        let me = self.me.clone();
        tokio::spawn(async move {
            if batched {
                tokio::time::sleep(PRIMING_DELAY).await;
            }
            if let Some(shared) = me.upgrade() {
                // Fails only if the session ended.
                let _ = shared.store_through(ticket).await;
            }
        });
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
            state.routes.cancel(http_request_id, &self.settings);
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
    /// client when to reconnect, with `retry`); for the standalone stream,
    /// its shadows too, including one that took over while the `retry`
    /// event waited. A response the client opened while the `retry` event
    /// waited for room or for the store is left alone.
    pub(crate) async fn close_stream(
        &self,
        target: StreamTarget,
        retry: Option<Duration>,
    ) -> Result<(), BoundedSessionError> {
        let (route, current, routed) = {
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
            // Every response of the stream open now, shadows included.
            let current: Vec<ConnectionRef> = match route {
                Route::Standalone => state.standalone.responses(),
                Route::Request {
                    http_request_id, ..
                } => state
                    .routes
                    .streams
                    .get(&http_request_id)
                    .and_then(|request| request.events.connection.as_ref())
                    .map(Connection::handle)
                    .into_iter()
                    .collect(),
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
            (route, current, routed)
        };
        // The `retry` event first, then the end of the response.
        self.finish_send(routed).await?;
        let mut state = self.state.lock();
        match route {
            Route::Standalone => state.standalone.end_responses(&current),
            Route::Request {
                http_request_id, ..
            } => {
                if let Some(request) = state.routes.streams.get_mut(&http_request_id) {
                    for current in &current {
                        request.events.disconnect_if(current);
                    }
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
pub(super) struct WaitingForHandshake<'a>(&'a Shared);

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
