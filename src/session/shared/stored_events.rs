//! With an external event store: events are named by the store before they
//! reach a client, in the order the session routed them.
//!
//! # Invariant kept here
//!
//! Per session, events are stored and delivered in routing order, one call
//! to the store at a time: storing is async, so routing only queues an
//! event with a ticket, and whichever send holds the session's storing turn
//! stores the queue's head (with the events right after it bound for the
//! same stream, up to its own, as many as the store takes in one call: the
//! Redis stores take several, so a tool call's priming event and its
//! answer cost one round trip), until its own ticket is done. Events leave the queue only
//! once stored: a send dropped while the store works leaves that event to the
//! next sender, which stores it again (the store may then hold it twice; a
//! client gets it once), rather than losing it. An ended session drops the
//! queue. An event the store failed to keep still goes to the client, with
//! no id (it cannot be replayed): a store outage must not stop sessions.

use std::sync::Arc;
use std::time::Duration;

use rmcp::model::{RequestId, ServerJsonRpcMessage};
use rmcp::transport::streamable_http_server::session::ServerSseMessage;

use super::{Shared, State};
use crate::error::TransportError;
use crate::session::connection::ConnectionRef;
use crate::session::routing::Route;

/// An event waiting for the event store to name it.
#[derive(Debug, Clone)]
pub(super) struct Unstored {
    ticket: u64,
    route: Route,
    message: Option<Arc<ServerJsonRpcMessage>>,
    retry: Option<Duration>,
    /// A request stream's priming event: delivered first, as event 0.
    priming: bool,
}

/// The events one call to the store takes: the queue's head and the
/// events after it bound for the same stream.
struct Batch {
    name: String,
    /// The request the stream answers, if it is a request's.
    request: Option<RequestId>,
    events: Vec<Unstored>,
}

impl Shared {
    /// Has the events up to `ticket` stored and delivered, in order (an
    /// event the store failed on is delivered without an id). Fails only if
    /// the session ended.
    pub(super) async fn store_through(&self, ticket: u64) -> Result<(), TransportError> {
        let Some(store) = self.settings.event_store.clone() else {
            return Ok(());
        };
        let mut own = Ok(());
        let mut full = None;
        'turns: loop {
            let _turn = self.storing.lock().await;
            let batch = {
                let mut state = self.state.lock();
                if state.stored_through >= ticket {
                    break;
                }
                match state.next_batch(store.max_events(), ticket) {
                    Some(batch) => batch,
                    None => {
                        // Ended: the queue was dropped.
                        own = Err(TransportError::SessionEnded);
                        break;
                    }
                }
            };
            let events: Vec<ServerSseMessage> = batch
                .events
                .iter()
                .map(|unstored| {
                    let mut event = ServerSseMessage::default();
                    event.message = unstored.message.clone();
                    event.retry = unstored.retry;
                    event
                })
                .collect();
            let stored = store
                .append(&batch.name, &events, batch.request.as_ref())
                .await;
            // A store that failed (Redis away, say) costs the events their
            // ids, so they cannot be replayed, but the client still gets
            // them: the session goes on without the store. The store logs
            // its own failures.
            let ids = match stored {
                Ok(ids) if ids.len() == events.len() => ids.into_iter().map(Some).collect(),
                Ok(_) => vec![None; events.len()],
                Err(error) => {
                    tracing::debug!(session_id = %self.id, %error, "event store failed; events sent without ids");
                    vec![None; events.len()]
                }
            };
            let mut state = self.state.lock();
            for ((next, mut event), id) in batch.events.into_iter().zip(events).zip(ids) {
                match state.unstored.front() {
                    Some(head) if head.ticket == next.ticket => {
                        state.unstored.pop_front();
                    }
                    // Ended while the store worked: the queue is gone.
                    _ => {
                        own = Err(TransportError::SessionEnded);
                        break 'turns;
                    }
                }
                state.stored_through = next.ticket;
                event.event_id = id;
                let queued = state.push_stored(&next, event, self.capacity());
                if next.ticket == ticket {
                    full = queued;
                }
                // Even if the store failed: the request is over either
                // way, and its stream must end and its routes and count be
                // released.
                if let Route::Request {
                    http_request_id,
                    completes: true,
                } = next.route
                {
                    state.routes.complete(http_request_id, &self.settings);
                }
            }
        }
        if let Some(full) = full {
            self.wait_for_room(full).await;
        }
        own
    }
}

impl Shared {
    /// Queues on the standalone stream an event that another instance
    /// stored there (`event.event_id` is its id in the store), as if it
    /// were routed now: under the session's lock, so it gets the stream's
    /// next index, stays in the stream's recent ring (a plain `GET` or a
    /// shadow taking over replays it) and reaches the connected client at
    /// most once, in the order events are routed here. It is not stored
    /// again. Never waits: `false` (the event dropped here, still
    /// replayable by id from the store) if the client's queue has no room
    /// for it. An ended session takes nothing (`true`: nothing to report).
    /// Needs a tokio runtime's context (see `has_room_for_one`).
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn push_stored_elsewhere(&self, event: ServerSseMessage) -> bool {
        let capacity = self.capacity();
        let mut state = self.state.lock();
        if matches!(state.phase, super::Phase::Ended(_)) {
            return true;
        }
        state.standalone.connect_shadow_if_needed(capacity);
        if !state.standalone.events.has_room_for_one(capacity) {
            return false;
        }
        let full = state.standalone.events.push_stored(event, capacity);
        debug_assert!(full.is_none(), "room was checked under the same lock");
        true
    }
}

impl State {
    pub(super) fn queue_for_store(
        &mut self,
        route: Route,
        message: Option<Arc<ServerJsonRpcMessage>>,
        retry: Option<Duration>,
    ) -> u64 {
        self.queue_unstored(route, message, retry, false)
    }

    /// Queues request stream `http_request_id`'s priming event.
    pub(super) fn queue_priming(&mut self, http_request_id: u64, retry: Duration) -> u64 {
        let route = Route::Request {
            http_request_id,
            completes: false,
        };
        self.queue_unstored(route, None, Some(retry), true)
    }

    fn queue_unstored(
        &mut self,
        route: Route,
        message: Option<Arc<ServerJsonRpcMessage>>,
        retry: Option<Duration>,
        priming: bool,
    ) -> u64 {
        let ticket = self.next_ticket;
        self.next_ticket += 1;
        self.unstored.push_back(Unstored {
            ticket,
            route,
            message,
            retry,
            priming,
        });
        ticket
    }

    /// The queue's head and, up to `max` in all, the events right after it
    /// bound for the same stream, up to ticket `through` (a later event's
    /// sender stores it, and waits for room in its client's queue if it
    /// must); `None` if the queue is empty (the session ended).
    fn next_batch(&mut self, max: usize, through: u64) -> Option<Batch> {
        let head = self.unstored.front()?.clone();
        let name = self.store_name(head.route);
        let request = match head.route {
            Route::Request {
                http_request_id, ..
            } => self
                .routes
                .streams
                .get(&http_request_id)
                .filter(|request| !request.completed)
                .map(|request| request.request_id.clone()),
            Route::Standalone => None,
        };
        let mut events = vec![head];
        for next in self.unstored.iter().skip(1).take(max.saturating_sub(1)) {
            if next.ticket > through || !same_stream(next.route, events[0].route) {
                break;
            }
            events.push(next.clone());
        }
        Some(Batch {
            name,
            request,
            events,
        })
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
        unstored: &Unstored,
        event: ServerSseMessage,
        capacity: usize,
    ) -> Option<ConnectionRef> {
        if let Route::Request {
            http_request_id, ..
        } = unstored.route
            && let Some(request) = self.routes.streams.get_mut(&http_request_id)
        {
            if unstored.priming {
                return request.events.deliver((0, event), capacity);
            }
            return request.events.push_stored(event, capacity);
        }
        if unstored.priming {
            // Its request's stream is gone: nothing to prime.
            return None;
        }
        self.standalone.connect_shadow_if_needed(capacity);
        self.standalone.events.push_stored(event, capacity)
    }
}

/// Whether two routes lead to the same stream (a request's last event goes
/// where its others went).
fn same_stream(a: Route, b: Route) -> bool {
    match (a, b) {
        (Route::Standalone, Route::Standalone) => true,
        (
            Route::Request {
                http_request_id: a, ..
            },
            Route::Request {
                http_request_id: b, ..
            },
        ) => a == b,
        _ => false,
    }
}
