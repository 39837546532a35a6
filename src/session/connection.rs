//! The pipe between one of a session's event streams and the HTTP response
//! currently carrying it.
//!
//! # Invariant kept here
//!
//! A connected client's undelivered events are bounded: a sender that finds
//! more than `channel_capacity` of them waits (see
//! [`Connection::wait_for_room`]) until the client reads, disconnects, or
//! the stall limit passes. Events are queued in the order the session
//! routed them, so the wait never reorders them: routing is synchronous, the
//! wait only delays the sender's future.
//!
//! # Why an unbounded channel with a count
//!
//! rmcp runs each `Transport::send` future as its own task, so two sends
//! may wait at once. A bounded channel would force each one to hold its
//! event until a permit comes, and a later event could take the permit
//! first. Queueing at once and counting keeps the order and bounds the
//! queue by `channel_capacity` plus the sends waiting (rmcp's handler awaits
//! each notification it sends).

use std::pin::Pin;
use std::sync::Arc;
use std::sync::Weak;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::Stream;
use rmcp::transport::streamable_http_server::session::ServerSseMessage;
use tokio::sync::{Notify, mpsc};

use super::shared::Shared;

/// An event on its way to a client, with its index on its stream.
pub(crate) type NumberedEvent = (u64, ServerSseMessage);

/// What the sending side and the HTTP response share.
#[derive(Debug)]
struct Pipe {
    /// Events queued and not yet handed to the HTTP body.
    undelivered: AtomicUsize,
    /// Signalled when the client reads past the capacity or either side
    /// goes away.
    room: Notify,
    /// Either side went away.
    closed: AtomicBool,
    /// The index of the last event handed to the HTTP body, so a standalone
    /// stream that replaces a dead one replays exactly what it missed.
    last_delivered: AtomicU64,
}

impl Pipe {
    fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.room.notify_waiters();
    }
}

/// The sending side of one HTTP response: owned by the event stream it
/// carries, dropped to end the response.
#[derive(Debug)]
pub(crate) struct Connection {
    events: mpsc::UnboundedSender<NumberedEvent>,
    pipe: Arc<Pipe>,
}

/// The other side: the SSE stream handed to rmcp's service for one HTTP
/// response, first the replayed events (a plain list, no channel round trip
/// per event), then the live ones.
#[derive(Debug)]
pub(crate) struct SseResponse {
    replay: std::vec::IntoIter<NumberedEvent>,
    events: mpsc::UnboundedReceiver<NumberedEvent>,
    pipe: Arc<Pipe>,
    capacity: usize,
    /// The session, for a standalone response only: when its client goes,
    /// a waiting shadow stream takes over at once (see
    /// [`Shared::standalone_response_gone`]).
    standalone_of: Option<Weak<Shared>>,
}

/// A connection's identity, to act on it later only if it is still the
/// current one of its stream (a client may have reconnected meanwhile).
#[derive(Debug, Clone)]
pub(crate) struct ConnectionRef(Arc<Pipe>);

impl ConnectionRef {
    pub(crate) fn is(&self, connection: &Connection) -> bool {
        Arc::ptr_eq(&self.0, &connection.pipe)
    }

    /// The index of the last event the HTTP body took, also after the
    /// connection ended.
    pub(crate) fn last_delivered(&self) -> u64 {
        self.0.last_delivered.load(Ordering::Relaxed)
    }

    /// Waits until the client has at most `capacity` events to read, or
    /// either side is gone: `true`; `false` if `stall_limit` passed first
    /// (the caller then disconnects the client, whose events wait in its
    /// stream's ring for a resume).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it only waits.
    pub(crate) async fn wait_for_room(&self, capacity: usize, stall_limit: Duration) -> bool {
        let pipe = &self.0;
        let waited = tokio::time::timeout(stall_limit, async {
            loop {
                let room = pipe.room.notified();
                tokio::pin!(room);
                // Registered before the check, so a read in between wakes it.
                room.as_mut().enable();
                if pipe.closed.load(Ordering::Acquire)
                    || pipe.undelivered.load(Ordering::Acquire) <= capacity
                {
                    return;
                }
                room.await;
            }
        })
        .await;
        waited.is_ok()
    }
}

impl Connection {
    /// A new response: its sending side, and the stream for rmcp's service
    /// that first replays `replay`. `last_delivered` is the index just
    /// before the first event it will carry.
    pub(crate) fn open(
        replay: Vec<NumberedEvent>,
        last_delivered: u64,
        capacity: usize,
        standalone_of: Option<Weak<Shared>>,
    ) -> (Self, SseResponse) {
        let (sender, events) = mpsc::unbounded_channel();
        let pipe = Arc::new(Pipe {
            undelivered: AtomicUsize::new(0),
            room: Notify::new(),
            closed: AtomicBool::new(false),
            last_delivered: AtomicU64::new(last_delivered),
        });
        let response = SseResponse {
            replay: replay.into_iter(),
            events,
            pipe: pipe.clone(),
            capacity,
            standalone_of,
        };
        (
            Self {
                events: sender,
                pipe,
            },
            response,
        )
    }

    /// Whether the client still reads this response.
    pub(crate) fn is_open(&self) -> bool {
        !self.events.is_closed()
    }

    pub(crate) fn handle(&self) -> ConnectionRef {
        ConnectionRef(self.pipe.clone())
    }

    /// The index of the last event the HTTP body took.
    #[cfg(test)]
    pub(crate) fn last_delivered(&self) -> u64 {
        self.pipe.last_delivered.load(Ordering::Relaxed)
    }

    /// Sets where the client stands before the events about to be queued
    /// (a shadow stream taking over the standalone one).
    pub(crate) fn set_last_delivered(&self, index: u64) {
        self.pipe.last_delivered.store(index, Ordering::Relaxed);
    }

    /// Queues `event` for the client. `Some` if the client now has more
    /// than `capacity` events to read: the sender should wait for room
    /// (outside any lock) before it goes on. `None` also if the client is
    /// gone (the event is in the stream's ring, if it keeps one).
    pub(crate) fn push(&self, event: NumberedEvent, capacity: usize) -> Option<ConnectionRef> {
        // Counted before it is queued: the reader, which counts it out,
        // may take it at once.
        let queued = self.pipe.undelivered.fetch_add(1, Ordering::AcqRel) + 1;
        if self.events.send(event).is_err() {
            self.pipe.undelivered.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        (queued > capacity).then(|| self.handle())
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.pipe.close();
    }
}

impl SseResponse {
    /// A response that carries nothing and ends at once.
    pub(crate) fn ended() -> Self {
        let (connection, response) = Connection::open(Vec::new(), 0, 1, None);
        drop(connection);
        response
    }
}

impl Stream for SseResponse {
    type Item = ServerSseMessage;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if let Some((index, message)) = this.replay.next() {
            // Replayed events were never queued: not counted as undelivered.
            this.pipe.last_delivered.store(index, Ordering::Relaxed);
            return Poll::Ready(Some(message));
        }
        let event = std::task::ready!(this.events.poll_recv(cx));
        Poll::Ready(event.map(|(index, message)| {
            let pipe = &this.pipe;
            // Read by the session only after this response died.
            pipe.last_delivered.store(index, Ordering::Relaxed);
            if pipe.undelivered.fetch_sub(1, Ordering::AcqRel) > this.capacity {
                pipe.room.notify_waiters();
            }
            message
        }))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.replay.len(), None)
    }
}

impl Drop for SseResponse {
    fn drop(&mut self) {
        self.events.close();
        self.pipe.close();
        if let Some(shared) = self.standalone_of.take().and_then(|weak| weak.upgrade()) {
            shared.standalone_response_gone(&ConnectionRef(self.pipe.clone()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;

    fn event(index: u64) -> NumberedEvent {
        let mut message = ServerSseMessage::default();
        message.event_id = Some(index.to_string());
        (index, message)
    }

    #[tokio::test]
    async fn a_full_pipe_waits_for_the_reader_and_keeps_the_order() {
        let (connection, mut response) = Connection::open(vec![event(1)], 1, 2, None);
        assert!(connection.push(event(2), 2).is_none());
        assert!(connection.push(event(3), 2).is_none());
        let full = connection.push(event(4), 2).expect("over capacity");
        let waiting =
            tokio::spawn(async move { full.wait_for_room(2, Duration::from_secs(5)).await });
        let mut ids = Vec::new();
        for _ in 0..4 {
            ids.push(response.next().await.unwrap().event_id.unwrap());
        }
        assert_eq!(ids, ["1", "2", "3", "4"]);
        assert!(waiting.await.unwrap(), "the reader made room");
        assert_eq!(connection.last_delivered(), 4);
    }

    #[tokio::test(start_paused = true)]
    async fn a_reader_that_never_reads_stalls_the_sender_only_until_the_limit() {
        let (connection, _response) = Connection::open(Vec::new(), 0, 1, None);
        connection.push(event(1), 1);
        let full = connection.push(event(2), 1).expect("over capacity");
        assert!(!full.wait_for_room(1, Duration::from_secs(30)).await);
    }

    #[tokio::test]
    async fn a_reader_that_goes_away_releases_the_sender() {
        let (connection, response) = Connection::open(Vec::new(), 0, 0, None);
        let full = connection.push(event(1), 0).expect("over capacity");
        drop(response);
        assert!(full.wait_for_room(0, Duration::from_secs(5)).await);
        assert!(!connection.is_open());
        assert!(connection.push(event(2), 0).is_none(), "nobody to wait for");
    }
}
