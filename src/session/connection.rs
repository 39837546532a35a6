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
//! # Cut: a response replaced hands out nothing more
//!
//! A response whose connection was merely dropped still hands out what it
//! had queued (a request's last answer, a server-side close's `retry`
//! event). A response that another one *replaces* (a resume, a shadow or a
//! new `GET` taking over the standalone stream) must not: the new one
//! replays from where the old one stood, and an old one that went on would
//! deliver the same events twice. [`ConnectionRef::cut`] marks the pipe's
//! `last_delivered` word and returns the index it held, in one atomic
//! step; the response records each event it hands out with a
//! compare-and-swap on that same word, which fails once the mark is set.
//! So every event is handed out by the old response (before the cut, and
//! counted in the index the cut returns) or replayed by the new one (after
//! it), never both and never neither.
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

/// Set in [`Pipe::last_delivered`] once the response is cut (indices stay
/// below 2^63: see `replay_buffer`).
const CUT: u64 = 1 << 63;

impl Pipe {
    fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.room.notify_waiters();
    }

    /// Records that the HTTP body takes event `index`; `false`, recording
    /// nothing, if the response was cut (the event must not go out).
    fn hand_out(&self, index: u64) -> bool {
        let mut current = self.last_delivered.load(Ordering::Acquire);
        loop {
            if current & CUT != 0 {
                return false;
            }
            match self.last_delivered.compare_exchange_weak(
                current,
                index,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return true,
                Err(actual) => current = actual,
            }
        }
    }

    fn is_cut(&self) -> bool {
        self.last_delivered.load(Ordering::Acquire) & CUT != 0
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

    /// Stops the response from handing out anything more (see the module
    /// docs); the index of the last event it handed out, final from now on.
    /// The response ends at its next poll, which a reader waiting on an
    /// empty queue gets once the connection's sender is dropped (every
    /// caller cuts a connection it drops or already dropped). Cutting twice
    /// returns the same index.
    pub(crate) fn cut(&self) -> u64 {
        let before = self.0.last_delivered.fetch_or(CUT, Ordering::AcqRel);
        self.0.close();
        before & !CUT
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

    /// Whether one more event fits in the client's queue without a wait
    /// (or the client is gone, and nothing will wait for it).
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn has_room_for_one(&self, capacity: usize) -> bool {
        self.pipe.closed.load(Ordering::Acquire)
            || self.pipe.undelivered.load(Ordering::Acquire) < capacity
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
        self.pipe.last_delivered.load(Ordering::Acquire) & !CUT
    }

    /// Sets where the client stands before the events about to be queued
    /// (a shadow stream taking over the standalone one, never cut before).
    pub(crate) fn set_last_delivered(&self, index: u64) {
        self.pipe.last_delivered.store(index, Ordering::Release);
    }

    /// [`ConnectionRef::cut`], for the connection being replaced.
    pub(crate) fn cut(self) -> u64 {
        self.handle().cut()
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
        // Replaced: what is left goes out on the response that replaced it.
        if this.pipe.is_cut() {
            return Poll::Ready(None);
        }
        if let Some((index, message)) = this.replay.next() {
            // Replayed events were never queued: not counted as undelivered.
            return Poll::Ready(this.pipe.hand_out(index).then_some(message));
        }
        let event = std::task::ready!(this.events.poll_recv(cx));
        Poll::Ready(event.and_then(|(index, message)| {
            let pipe = &this.pipe;
            if pipe.undelivered.fetch_sub(1, Ordering::AcqRel) > this.capacity {
                pipe.room.notify_waiters();
            }
            pipe.hand_out(index).then_some(message)
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
    async fn a_cut_response_hands_out_nothing_more_and_its_index_is_final() {
        let (connection, mut response) = Connection::open(vec![event(1)], 0, 4, None);
        connection.push(event(2), 4);
        connection.push(event(3), 4);
        assert_eq!(response.next().await.unwrap().event_id.unwrap(), "1");
        assert_eq!(response.next().await.unwrap().event_id.unwrap(), "2");
        let handle = connection.handle();
        assert_eq!(connection.cut(), 2, "the last event handed out");
        assert!(
            response.next().await.is_none(),
            "event 3 is its successor's"
        );
        assert_eq!(handle.cut(), 2, "cutting again changes nothing");
    }

    #[tokio::test]
    async fn a_dropped_connection_still_hands_out_what_it_queued() {
        let (connection, response) = Connection::open(Vec::new(), 0, 4, None);
        connection.push(event(1), 4);
        connection.push(event(2), 4);
        drop(connection);
        let ids: Vec<_> = response
            .map(|event| event.event_id.unwrap())
            .collect()
            .await;
        assert_eq!(ids, ["1", "2"]);
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
