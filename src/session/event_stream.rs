//! One SSE stream of a session (a request's, or the standalone one): its
//! events numbered in order, the newest kept for replay, and the HTTP
//! response currently carrying it, if any.
//!
//! # Invariant kept here
//!
//! Events carry consecutive indices on their stream and are queued to the
//! client in that order; a reconnection with `Last-Event-ID` gets exactly
//! the kept events after it (see [`crate::replay_buffer`]), then the live
//! ones, so a client never receives the same event twice on one stream.

use std::sync::{Arc, Weak};
use std::time::Duration;

use rmcp::model::ServerJsonRpcMessage;
use rmcp::transport::common::server_side_http::session_id as random_id;
use rmcp::transport::streamable_http_server::session::{ServerSseMessage, SessionId};

use super::SessionSettings;
use super::connection::{Connection, ConnectionRef, NumberedEvent, SseResponse};
use super::shared::Shared;
use crate::event_id::EventId;
use crate::replay_buffer::{Miss, Replay, ReplayBuffer, ReplayError};

/// What a stream keeps of an event for replay: the message is shared with
/// the copy in flight, and the id is rebuilt from the index, so keeping an
/// event costs no allocation.
#[derive(Debug, Clone)]
pub(crate) struct RetainedEvent {
    message: Option<Arc<ServerJsonRpcMessage>>,
    retry: Option<Duration>,
}

/// Who keeps a stream's events for replay.
#[derive(Debug)]
pub(crate) enum Retention {
    /// The stream's own ring.
    Ring(ReplayBuffer<RetainedEvent>),
    /// An external event store, which names the events and replays them
    /// by `Last-Event-ID`.
    Store {
        /// The stream's id in the store.
        name: String,
        /// The index the next event gets.
        next: u64,
        /// The standalone stream's newest events as the store named them:
        /// a plain `GET` or a shadow taking over carries no id to ask the
        /// store with, and must still get what the previous response did
        /// not deliver. `None` for a request stream, resumed only by id.
        recent: Option<ReplayBuffer<ServerSseMessage>>,
    },
}

#[derive(Debug)]
pub(crate) struct EventStream {
    /// `None` for the standalone stream, else the HTTP request's number.
    pub(crate) http_request_id: Option<u64>,
    pub(crate) connection: Option<Connection>,
    pub(crate) retention: Retention,
}

impl EventStream {
    /// A stream whose first event gets index `first`; with an event store,
    /// named there, for a request stream, the session id, a colon and a
    /// fresh random suffix (the session's prefix is how a resume tells its
    /// own streams from another session's).
    pub(crate) fn new(
        http_request_id: Option<u64>,
        first: u64,
        settings: &SessionSettings,
        session: &SessionId,
    ) -> Self {
        let retention = match &settings.event_store {
            None => Retention::Ring(ReplayBuffer::starting_at(settings.replay_capacity, first)),
            Some(_) => Retention::Store {
                // The standalone stream's name in the store is rmcp's, and
                // stable across restores of the session on any instance.
                name: match http_request_id {
                    None => format!("{session}:common"),
                    Some(_) => store_name_for(session),
                },
                next: first,
                recent: http_request_id
                    .is_none()
                    .then(|| ReplayBuffer::starting_at(settings.replay_capacity, first)),
            },
        };
        Self {
            http_request_id,
            connection: None,
            retention,
        }
    }

    /// With an event store: the stream's name there.
    pub(crate) fn store_name(&self) -> Option<&str> {
        match &self.retention {
            Retention::Ring(_) => None,
            Retention::Store { name, .. } => Some(name),
        }
    }

    pub(crate) fn event_id(&self, index: u64) -> String {
        EventId {
            index,
            stream: self.http_request_id,
        }
        .to_text()
    }

    pub(crate) fn is_connected(&self) -> bool {
        self.connection.as_ref().is_some_and(Connection::is_open)
    }

    /// Numbers an event, keeps it in the ring and queues it to the client,
    /// if one is connected. `Some` if the client's queue is over capacity
    /// (see [`Connection::push`]).
    ///
    /// # Panics
    ///
    /// Panics with an event store (whose events are numbered by
    /// [`Self::push_stored`]); the session never calls it then.
    pub(crate) fn push(
        &mut self,
        message: Option<Arc<ServerJsonRpcMessage>>,
        retry: Option<Duration>,
        capacity: usize,
    ) -> Option<ConnectionRef> {
        let Retention::Ring(ring) = &mut self.retention else {
            unreachable!("events of a stream kept in an event store are pushed once stored");
        };
        let index = ring.push(RetainedEvent {
            message: message.clone(),
            retry,
        });
        let mut event = ServerSseMessage::default();
        event.event_id = Some(self.event_id(index));
        event.message = message;
        event.retry = retry;
        self.deliver((index, event), capacity)
    }

    /// Queues an event the store has named (`event.event_id` set) to the
    /// client, under the stream's next index.
    pub(crate) fn push_stored(
        &mut self,
        event: ServerSseMessage,
        capacity: usize,
    ) -> Option<ConnectionRef> {
        let index = match &mut self.retention {
            Retention::Store { next, recent, .. } => {
                *next += 1;
                if let Some(recent) = recent {
                    let kept = recent.push(event.clone());
                    debug_assert_eq!(kept, *next - 1, "the ring counts with the stream");
                }
                *next - 1
            }
            Retention::Ring(ring) => ring.newest() + 1,
        };
        self.deliver((index, event), capacity)
    }

    /// Whether the connected client, if any, can take one more event
    /// without going over `capacity` queued: for a sender that must not
    /// wait for room (`Shared::push_stored_elsewhere`). True with no
    /// client connected.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn has_room_for_one(&self, capacity: usize) -> bool {
        self.connection
            .as_ref()
            .is_none_or(|connection| connection.has_room_for_one(capacity))
    }

    /// Connects a new request stream's first response, which starts with a
    /// priming event of index 0 if `retry` is set (SEP-1699; with an event
    /// store, the session delivers it once the store named it).
    pub(crate) fn connect(
        &mut self,
        capacity: usize,
        retry: Option<Duration>,
    ) -> (SseResponse, Option<ConnectionRef>) {
        let (connection, response) = Connection::open(Vec::new(), 0, capacity, None);
        self.connection = Some(connection);
        let priming = retry.map(|retry| ServerSseMessage::priming(self.event_id(0), retry));
        let full = priming.and_then(|priming| self.deliver((0, priming), capacity));
        (response, full)
    }

    /// Queues an event to the connected client, if any.
    pub(crate) fn deliver(
        &mut self,
        event: NumberedEvent,
        capacity: usize,
    ) -> Option<ConnectionRef> {
        let connection = self.connection.as_ref()?;
        if !connection.is_open() {
            self.connection = None;
            return None;
        }
        connection.push(event, capacity)
    }

    /// Ends the current HTTP response if it is still `connection`.
    pub(crate) fn disconnect_if(&mut self, connection: &ConnectionRef) -> bool {
        if self
            .connection
            .as_ref()
            .is_some_and(|current| connection.is(current))
        {
            self.connection = None;
            return true;
        }
        false
    }

    fn to_events(&self, replay: Replay<'_, RetainedEvent>) -> Vec<NumberedEvent> {
        replay
            .map(|(index, retained)| {
                let mut event = ServerSseMessage::default();
                event.event_id = Some(self.event_id(index));
                event.message = retained.message.clone();
                event.retry = retained.retry;
                (index, event)
            })
            .collect()
    }

    /// The kept events a client that last saw `last_seen` missed, and the
    /// index just before the first of them. With an event store, a request
    /// stream keeps nothing here (the store replays it by id): nothing.
    ///
    /// If some were overwritten, it gives what is kept (the jump in the
    /// indices shows the gap) rather than nothing: a refusal would only make
    /// the client retry the same id forever. An id from another life of
    /// the session (a restore starts its indices far from any earlier
    /// ones, see [`super::first_index_after_restore`]) or ahead of the
    /// standalone stream gets everything kept, none of which that client
    /// can have seen; a request stream's id ahead of it is refused, as no
    /// such event exists.
    pub(crate) fn missed_after(
        &self,
        last_seen: u64,
    ) -> Result<(Vec<NumberedEvent>, u64), ReplayError> {
        match &self.retention {
            Retention::Ring(ring) => {
                let replay = self.kept_after(ring, last_seen)?;
                let delivered_before = replay.next_index() - 1;
                Ok((self.to_events(replay), delivered_before))
            }
            Retention::Store {
                recent: Some(ring), ..
            } => {
                let replay = self.kept_after(ring, last_seen)?;
                let delivered_before = replay.next_index() - 1;
                let events = replay
                    .map(|(index, event)| (index, event.clone()))
                    .collect();
                Ok((events, delivered_before))
            }
            Retention::Store { recent: None, .. } => Ok((Vec::new(), last_seen)),
        }
    }

    /// What [`Self::missed_after`] replays from `ring`.
    fn kept_after<'a, T>(
        &self,
        ring: &'a ReplayBuffer<T>,
        last_seen: u64,
    ) -> Result<Replay<'a, T>, ReplayError> {
        Ok(match ring.after(last_seen) {
            Ok(replay) => replay,
            Err(Miss::Overwritten { oldest_kept }) => {
                if last_seen.saturating_add(1) >= ring.first() {
                    tracing::warn!(
                        stream = ?self.http_request_id,
                        last_seen,
                        oldest_kept,
                        "replay has a gap: missed events were overwritten; raise the replay capacity"
                    );
                }
                ring.from(oldest_kept)
            }
            Err(Miss::Ahead { newest }) => {
                if self.http_request_id.is_some() {
                    return Err(ReplayError::Ahead { last_seen, newest });
                }
                tracing::warn!(
                    last_seen,
                    newest,
                    "Last-Event-ID ahead of the standalone stream; replaying all it keeps"
                );
                ring.from(0)
            }
        })
    }

    /// Starts a new HTTP response for this stream (ending the previous one)
    /// that first carries the kept events the client missed after
    /// `last_seen` (see [`Self::missed_after`]).
    pub(crate) fn reconnect(
        &mut self,
        last_seen: u64,
        capacity: usize,
        standalone_of: Option<Weak<Shared>>,
    ) -> Result<SseResponse, ReplayError> {
        let (replay, delivered_before) = self.missed_after(last_seen)?;
        // The previous response must not go on handing out what this one
        // replays.
        if let Some(previous) = self.connection.take() {
            previous.cut();
        }
        let (connection, response) =
            Connection::open(replay, delivered_before, capacity, standalone_of);
        self.connection = Some(connection);
        Ok(response)
    }
}

/// A fresh name in the event store for a request stream of `session`.
pub(crate) fn store_name_for(session: &SessionId) -> String {
    format!("{session}:{}", random_id())
}

/// Whether `event_id`, issued by an event store, names an event of one of
/// `session`'s streams: ids begin with their stream's name, and the
/// session's streams' names with its id and a colon.
pub(crate) fn is_event_of(session: &SessionId, event_id: &str) -> bool {
    event_id
        .strip_prefix(&**session)
        .is_some_and(|rest| rest.starts_with(':'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_is_a_sessions_only_if_its_stream_bears_the_session_id_and_a_colon() {
        let session: SessionId = "a1b2".into();
        assert!(is_event_of(&session, "a1b2:common#5-1"));
        assert!(is_event_of(
            &session,
            &format!("{}#5-1", store_name_for(&session))
        ));
        for other in [
            "a1b2x:common#5-1",
            "a1b#5-1",
            "a1b2#5-1",
            "",
            "x:a1b2:common#5-1",
        ] {
            assert!(!is_event_of(&session, other), "{other:?}");
        }
    }
}
