//! The handler's side of a session: what `Transport::receive` and
//! `Transport::send` do to its state.

use std::sync::Arc;
use std::task::{Context, Poll};

use rmcp::model::{ClientJsonRpcMessage, JsonRpcMessage, ServerJsonRpcMessage};
use tokio::time::Instant;

use super::{Phase, Shared};
use crate::close_reason::CloseReason;
use crate::error::TransportError;
use crate::session::connection::ConnectionRef;
use crate::session::routing::Route;

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

impl Shared {
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
                self.end(CloseReason::HandshakeAbandoned);
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

    pub(super) async fn wait_for_room(&self, full: ConnectionRef) {
        let stall_limit = self.settings.stall_limit();
        if !full.wait_for_room(self.capacity(), stall_limit).await {
            let mut state = self.state.lock();
            if state.disconnect(&full, self.capacity()) {
                tracing::debug!(
                    session_id = %self.id,
                    "client stopped reading its stream; disconnected it (it can resume)"
                );
            }
        }
    }
}
