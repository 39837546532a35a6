//! The session worker: one task per session that routes every message
//! between the MCP handler and the session's SSE streams, and keeps what
//! each stream sent for replay.
//!
//! # Invariants kept here
//!
//! - Per stream, events carry consecutive indices and reach the client in
//!   order; a reconnection with `Last-Event-ID` gets exactly the kept events
//!   after it (see [`crate::replay_buffer`]), so a client never receives the
//!   same event twice on one stream.
//! - Every server message goes to exactly one stream: a response or error to
//!   the stream of the request it answers (which it then completes), a
//!   progress notification to the stream of its progress token, a request
//!   marked with rmcp's `OriginatingRequestId` to its originating request's
//!   stream (SEP-2260), anything else, or anything whose stream is gone, to
//!   the standalone stream.
//! - Memory per session is bounded by the configuration: each stream keeps
//!   at most `replay_capacity` events and buffers at most `channel_capacity`
//!   (a resumed stream: its replay on top); at most `max_request_streams`
//!   request streams are open and as many completed ones are kept for late
//!   resumes (at most `completed_cache_ttl`); at most 32 shadow streams.
//! - The worker never waits on a client without also watching its
//!   cancellation token, and each wait on a client whose buffer is full
//!   lasts at most the stall limit (then that stream is disconnected; its
//!   events wait in its ring): a client that stops reading stalls its own
//!   session only, one bounded wait at a time, and the task always ends with
//!   the session.
//!
//! # Why an actor
//!
//! All per-session state (routes, streams, rings) lives in this one task, as
//! in rmcp's local worker: no lock, and ordering per session comes for free.
//! The request path reaches it through [`SessionHandle`], a channel sender
//! cloned out of the registry.

use std::collections::{HashMap, VecDeque};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::Stream;
use rmcp::RoleServer;
use rmcp::model::{
    ClientJsonRpcMessage, ClientNotification, GetExtensions, GetMeta, JsonRpcMessage,
    ProgressToken, RequestId, ServerJsonRpcMessage, ServerNotification,
};
use rmcp::service::OriginatingRequestId;
use rmcp::transport::common::server_side_http::session_id as random_id;
use rmcp::transport::streamable_http_server::session::local::{
    LocalSessionManagerError, SessionConfig,
};
use rmcp::transport::streamable_http_server::session::{EventStore, ServerSseMessage, SessionId};
use rmcp::transport::worker::{Worker, WorkerConfig, WorkerContext, WorkerQuitReason};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::close_reason::CloseReason;
use crate::error::{BoundedSessionError, TransportError};
use crate::event_id::EventId;
use crate::replay_buffer::{Miss, ReplayBuffer, ReplayError};

/// Shadow streams kept at most (as rmcp's local worker): extra GET streams
/// opened while the standalone stream is alive get keep-alives only.
const MAX_SHADOW_STREAMS: usize = 32;

/// How long the worker waits for a client that does not read a connected
/// stream (its buffer is full) before it disconnects that stream; the
/// events stay in the stream's ring for a resume. At most the idle timeout.
const STALL_LIMIT: Duration = Duration::from_secs(30);

/// What every worker of one manager runs with, shared.
#[derive(Debug, Clone)]
pub(crate) struct WorkerSettings {
    pub(crate) session: SessionConfig,
    pub(crate) replay_capacity: usize,
    pub(crate) max_request_streams: usize,
    pub(crate) event_store: Option<Arc<dyn EventStore>>,
}

impl WorkerSettings {
    fn stall_limit(&self) -> Duration {
        self.session
            .keep_alive
            .unwrap_or(STALL_LIMIT)
            .min(STALL_LIMIT)
    }
}

/// A request from the HTTP side to a session's worker. Messages are boxed:
/// a channel allocates room for its events in blocks of 32, so a small event
/// keeps every session's queue small (a message is ten times the size of
/// the rest).
#[derive(Debug)]
enum SessionEvent {
    Initialize {
        request: Box<ClientJsonRpcMessage>,
        reply: oneshot::Sender<Result<ServerJsonRpcMessage, BoundedSessionError>>,
    },
    Request {
        request: Box<ClientJsonRpcMessage>,
        reply: oneshot::Sender<Result<SseStream, BoundedSessionError>>,
    },
    Accept {
        message: Box<ClientJsonRpcMessage>,
    },
    Standalone {
        reply: oneshot::Sender<Result<SseStream, BoundedSessionError>>,
    },
    Resume {
        last_seen: EventId,
        reply: oneshot::Sender<Result<SseStream, BoundedSessionError>>,
    },
    CloseStream {
        target: StreamTarget,
        retry: Option<Duration>,
        reply: oneshot::Sender<Result<(), BoundedSessionError>>,
    },
}

#[derive(Debug, Clone)]
enum StreamTarget {
    Standalone,
    Http(u64),
    Request(RequestId),
}

/// A handle on one live session's worker: what the manager uses on the
/// request path, and what a server uses to close a stream from its side.
///
/// Get one with
/// [`BoundedSessionManager::session`](crate::BoundedSessionManager::session).
/// Cloning is cheap (a channel sender); a handle outliving its session gets
/// "session not found" errors.
///
/// # Example
///
/// ```no_run
/// use std::time::Duration;
/// use mcp_bounded_session::{BoundedSessionManager, SessionConfig, SessionId};
///
/// # async fn demo(manager: &BoundedSessionManager, id: SessionId) -> Result<(), Box<dyn std::error::Error>> {
/// if let Some(session) = manager.session(&id) {
///     // Ask the client to reconnect to its GET stream in 1 s (SEP-1699 polling).
///     session.close_standalone_sse_stream(Some(Duration::from_secs(1))).await?;
/// }
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct SessionHandle {
    id: SessionId,
    events: mpsc::Sender<SessionEvent>,
}

impl SessionHandle {
    /// The session's id.
    ///
    /// ```no_run
    /// # use mcp_bounded_session::{BoundedSessionManager, SessionId};
    /// # fn demo(manager: &BoundedSessionManager, id: SessionId) {
    /// let session = manager.session(&id).expect("live");
    /// assert_eq!(session.id(), &id);
    /// # }
    /// ```
    pub fn id(&self) -> &SessionId {
        &self.id
    }

    fn gone(&self) -> BoundedSessionError {
        LocalSessionManagerError::SessionNotFound(self.id.clone()).into()
    }

    async fn send(&self, event: SessionEvent) -> Result<(), BoundedSessionError> {
        self.events.send(event).await.map_err(|_| self.gone())
    }

    async fn ask<T>(
        &self,
        event: impl FnOnce(oneshot::Sender<Result<T, BoundedSessionError>>) -> SessionEvent,
    ) -> Result<T, BoundedSessionError> {
        let (reply, answer) = oneshot::channel();
        self.send(event(reply)).await?;
        answer.await.map_err(|_| self.gone())?
    }

    pub(crate) async fn initialize(
        &self,
        request: ClientJsonRpcMessage,
    ) -> Result<ServerJsonRpcMessage, BoundedSessionError> {
        let request = Box::new(request);
        self.ask(|reply| SessionEvent::Initialize { request, reply })
            .await
    }

    pub(crate) async fn request(
        &self,
        request: ClientJsonRpcMessage,
    ) -> Result<SseStream, BoundedSessionError> {
        let request = Box::new(request);
        self.ask(|reply| SessionEvent::Request { request, reply })
            .await
    }

    pub(crate) async fn accept(
        &self,
        message: ClientJsonRpcMessage,
    ) -> Result<(), BoundedSessionError> {
        let message = Box::new(message);
        self.send(SessionEvent::Accept { message }).await
    }

    pub(crate) async fn standalone(&self) -> Result<SseStream, BoundedSessionError> {
        self.ask(|reply| SessionEvent::Standalone { reply }).await
    }

    pub(crate) async fn resume(
        &self,
        last_seen: EventId,
    ) -> Result<SseStream, BoundedSessionError> {
        self.ask(|reply| SessionEvent::Resume { last_seen, reply })
            .await
    }

    async fn close_stream(
        &self,
        target: StreamTarget,
        retry: Option<Duration>,
    ) -> Result<(), BoundedSessionError> {
        self.ask(|reply| SessionEvent::CloseStream {
            target,
            retry,
            reply,
        })
        .await
    }

    /// Closes the SSE stream of HTTP request `http_request_id` (the number
    /// after the `/` in its event ids), as rmcp's
    /// `LocalSessionHandle::close_sse_stream`: with `retry`, a last event
    /// tells the client when to reconnect. The request goes on; what it
    /// sends next is kept for the client's `GET` with `Last-Event-ID`.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropped before the worker took the request, nothing
    /// happens; after, the stream is closed all the same.
    ///
    /// ```no_run
    /// # use mcp_bounded_session::SessionHandle;
    /// # async fn demo(session: SessionHandle) -> Result<(), Box<dyn std::error::Error>> {
    /// session.close_sse_stream(0, None).await?;
    /// # Ok(()) }
    /// ```
    pub async fn close_sse_stream(
        &self,
        http_request_id: u64,
        retry: Option<Duration>,
    ) -> Result<(), BoundedSessionError> {
        self.close_stream(StreamTarget::Http(http_request_id), retry)
            .await
    }

    /// Closes the SSE stream that carries JSON-RPC request `request_id`
    /// (what a tool handler knows as its request's id), as
    /// [`Self::close_sse_stream`] does.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe, as [`Self::close_sse_stream`].
    ///
    /// ```no_run
    /// # use std::time::Duration;
    /// # use mcp_bounded_session::SessionHandle;
    /// # use rmcp::model::RequestId;
    /// # async fn demo(session: SessionHandle) -> Result<(), Box<dyn std::error::Error>> {
    /// session
    ///     .close_request_sse_stream(RequestId::Number(1), Some(Duration::from_millis(500)))
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub async fn close_request_sse_stream(
        &self,
        request_id: RequestId,
        retry: Option<Duration>,
    ) -> Result<(), BoundedSessionError> {
        self.close_stream(StreamTarget::Request(request_id), retry)
            .await
    }

    /// Closes the standalone (GET) SSE stream and every shadow stream, as
    /// rmcp's `LocalSessionHandle::close_standalone_sse_stream`. Later
    /// notifications are kept for the client's next `GET`.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe, as [`Self::close_sse_stream`].
    ///
    /// ```no_run
    /// # use mcp_bounded_session::SessionHandle;
    /// # async fn demo(session: SessionHandle) -> Result<(), Box<dyn std::error::Error>> {
    /// session.close_standalone_sse_stream(None).await?;
    /// # Ok(()) }
    /// ```
    pub async fn close_standalone_sse_stream(
        &self,
        retry: Option<Duration>,
    ) -> Result<(), BoundedSessionError> {
        self.close_stream(StreamTarget::Standalone, retry).await
    }
}

/// An event on its way to a client, with its index on its stream.
type Outgoing = (u64, ServerSseMessage);

/// The SSE stream handed to rmcp's service for one HTTP response: first the
/// replayed events (a plain list: replaying needs no channel round trip per
/// event), then the live ones.
///
/// It records the index of the last event it handed to the HTTP body, so a
/// standalone stream that replaces a dead one without `Last-Event-ID`
/// replays exactly what the dead one did not hand out.
#[derive(Debug)]
pub(crate) struct SseStream {
    replay: std::vec::IntoIter<Outgoing>,
    events: mpsc::Receiver<Outgoing>,
    handed_out: Option<Arc<AtomicU64>>,
}

impl SseStream {
    fn live(events: mpsc::Receiver<Outgoing>) -> Self {
        Self {
            replay: Vec::new().into_iter(),
            events,
            handed_out: None,
        }
    }
}

impl Stream for SseStream {
    type Item = ServerSseMessage;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        let event = match this.replay.next() {
            Some(event) => Poll::Ready(Some(event)),
            None => this.events.poll_recv(cx),
        };
        event.map(|event| {
            event.map(|(index, message)| {
                if let Some(handed_out) = &this.handed_out {
                    // Only the worker reads it, after this stream died.
                    handed_out.store(index, Ordering::Relaxed);
                }
                message
            })
        })
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.replay.len(), None)
    }
}

/// What a stream keeps of an event for replay: the message is shared with
/// the copy in flight, and the id is rebuilt from the index, so keeping an
/// event costs no allocation.
#[derive(Debug, Clone)]
struct Kept {
    message: Option<Arc<ServerJsonRpcMessage>>,
    retry: Option<Duration>,
}

/// One SSE stream: the sender of its current HTTP response (if any) and the
/// ring of its newest events.
#[derive(Debug)]
struct OutStream {
    /// `None` for the standalone stream, else the HTTP request's number.
    http_request_id: Option<u64>,
    sender: Option<mpsc::Sender<Outgoing>>,
    keeper: Keeper,
}

/// Who keeps a stream's events for replay.
#[derive(Debug)]
enum Keeper {
    /// The stream's own ring.
    Ring(ReplayBuffer<Kept>),
    /// An external event store, which names the events and replays them.
    Store {
        store: Arc<dyn EventStore>,
        /// The stream's id in the store.
        stream: String,
        /// The index the next event gets.
        next: u64,
    },
}

impl OutStream {
    /// A stream whose first event gets index `first` (see [`life_base`]).
    fn new(
        http_request_id: Option<u64>,
        first: u64,
        settings: &WorkerSettings,
        session: &SessionId,
    ) -> Self {
        let keeper = match &settings.event_store {
            None => Keeper::Ring(ReplayBuffer::starting_at(settings.replay_capacity, first)),
            Some(store) => Keeper::Store {
                store: store.clone(),
                // The standalone stream's name in the store is rmcp's, and
                // stable across restores of the session on any instance.
                stream: match http_request_id {
                    None => format!("{session}:common"),
                    Some(_) => random_id().to_string(),
                },
                next: first,
            },
        };
        Self {
            http_request_id,
            sender: None,
            keeper,
        }
    }

    /// With an event store: the stream's id there.
    fn store_stream(&self) -> Option<&str> {
        match &self.keeper {
            Keeper::Ring(_) => None,
            Keeper::Store { stream, .. } => Some(stream),
        }
    }

    fn event_id(&self, index: u64) -> String {
        EventId {
            index,
            stream: self.http_request_id,
        }
        .to_text()
    }

    fn is_connected(&self) -> bool {
        self.sender
            .as_ref()
            .is_some_and(|sender| !sender.is_closed())
    }

    /// Numbers the event, keeps it for replay and hands it to the client if
    /// one is connected. Waits while the client's buffer is full (the
    /// session's only backpressure); returns `false` if `cancel` fired
    /// meanwhile.
    async fn send(
        &mut self,
        message: Option<Arc<ServerJsonRpcMessage>>,
        retry: Option<Duration>,
        settings: &WorkerSettings,
        cancel: &CancellationToken,
    ) -> Result<bool, TransportError> {
        let mut event = ServerSseMessage::default();
        event.retry = retry;
        let index = match &mut self.keeper {
            Keeper::Ring(ring) => ring.push(Kept {
                message: message.clone(),
                retry,
            }),
            Keeper::Store {
                store,
                stream,
                next,
            } => {
                event.message = message.clone();
                let id = store
                    .store_event(stream, &event)
                    .await
                    .map_err(TransportError::EventStore)?;
                event.event_id = Some(id);
                *next += 1;
                *next - 1
            }
        };
        if event.event_id.is_none() {
            event.event_id = Some(self.event_id(index));
        }
        event.message = message;
        Ok(self.deliver((index, event), settings, cancel).await)
    }

    /// Hands an event to the connected client, if any. A full buffer is
    /// waited on for at most the stall limit, then the stream is
    /// disconnected (the event is in the ring for the client's resume).
    /// Returns `false` if `cancel` fired meanwhile.
    async fn deliver(
        &mut self,
        event: Outgoing,
        settings: &WorkerSettings,
        cancel: &CancellationToken,
    ) -> bool {
        let Some(sender) = &self.sender else {
            return true;
        };
        match sender.try_send(event) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Closed(_)) => {
                self.sender = None;
                true
            }
            Err(mpsc::error::TrySendError::Full(event)) => {
                let stall_limit = settings.stall_limit();
                tokio::select! {
                    sent = sender.send(event) => {
                        if sent.is_err() {
                            self.sender = None;
                        }
                        true
                    }
                    () = cancel.cancelled() => false,
                    () = tokio::time::sleep(stall_limit) => {
                        tracing::debug!(
                            stream = ?self.http_request_id,
                            "client stopped reading its stream; disconnected it (it can resume)"
                        );
                        self.sender = None;
                        true
                    }
                }
            }
        }
    }

    fn to_events(&self, replay: crate::replay_buffer::Replay<'_, Kept>) -> Vec<Outgoing> {
        replay
            .map(|(index, kept)| {
                let mut event = ServerSseMessage::default();
                event.event_id = Some(self.event_id(index));
                event.message = kept.message.clone();
                event.retry = kept.retry;
                (index, event)
            })
            .collect()
    }

    /// The kept events a client that last saw `last_seen` missed, and the
    /// index just before the first of them.
    ///
    /// If some were overwritten, it gives what is kept (the jump in the
    /// indices shows the gap) rather than nothing: a refusal would only make
    /// the client retry the same id forever. An id from before this life of
    /// the session (a restore starts its indices above any earlier ones, see
    /// [`life_base`]) or ahead of the standalone stream gets everything kept,
    /// none of which that client can have seen; a request stream's id ahead
    /// of it is refused, as no such event exists.
    fn missed_after(&self, last_seen: u64) -> Result<(Vec<Outgoing>, u64), ReplayError> {
        let Keeper::Ring(ring) = &self.keeper else {
            return Ok((Vec::new(), last_seen));
        };
        let replay = match ring.after(last_seen) {
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
        };
        let handed_before = replay.next_index() - 1;
        Ok((self.to_events(replay), handed_before))
    }

    /// Starts a new HTTP response for this stream (ending the previous one)
    /// that first carries the kept events the client missed after
    /// `last_seen` (see [`Self::missed_after`]).
    fn reconnect(
        &mut self,
        last_seen: u64,
        channel_capacity: usize,
        handed_out: Option<Arc<AtomicU64>>,
    ) -> Result<SseStream, ReplayError> {
        let (replayed, handed_before) = self.missed_after(last_seen)?;
        let (sender, events) = mpsc::channel(channel_capacity);
        if let Some(handed_out) = &handed_out {
            handed_out.store(handed_before, Ordering::Relaxed);
        }
        self.sender = Some(sender);
        Ok(SseStream {
            replay: replayed.into_iter(),
            events,
            handed_out,
        })
    }
}

#[derive(Debug)]
struct RequestStream {
    out: OutStream,
    /// The request's JSON-RPC id and progress token, routed to this stream
    /// until it completes.
    request_id: RequestId,
    progress_token: Option<ProgressToken>,
    completed: bool,
}

/// Where the session's worker stopped by itself, for the transport to
/// report as the close reason.
pub(crate) type EndCause = Arc<OnceLock<CloseReason>>;

/// The worker of one session; runs inside rmcp's `WorkerTransport`.
pub(crate) struct SessionWorker {
    id: SessionId,
    settings: Arc<WorkerSettings>,
    events: mpsc::Receiver<SessionEvent>,
    end_cause: EndCause,
    origin: Origin,
    next_http_request_id: u64,
    requests: HashMap<u64, RequestStream>,
    /// The in-flight requests' streams by JSON-RPC id and by progress token.
    /// Two maps keyed by what a message carries, so routing a message looks
    /// its key up by reference (no clone on the send path).
    by_request: HashMap<RequestId, u64>,
    by_progress: HashMap<ProgressToken, u64>,
    /// Completed request streams, in completion order, kept for late
    /// resumes until `completed_cache_ttl`.
    completed: VecDeque<(Instant, u64)>,
    standalone: OutStream,
    /// What the standalone stream's current response handed out.
    standalone_handed_out: Arc<AtomicU64>,
    /// Extra GET streams opened while the standalone one was connected,
    /// oldest first; the newest live one takes over when that one dies.
    shadows: Vec<Shadow>,
}

/// A GET stream waiting in reserve (see [`SessionWorker::open_standalone`]).
#[derive(Debug)]
struct Shadow {
    sender: mpsc::Sender<Outgoing>,
    handed_out: Arc<AtomicU64>,
    /// The client's `Last-Event-ID`, if it sent one.
    last_seen: Option<u64>,
}

impl std::fmt::Debug for SessionWorker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionWorker")
            .field("id", &self.id)
            .field("requests", &self.requests.len())
            .field("shadows", &self.shadows.len())
            .finish_non_exhaustive()
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

/// Where a restored session starts numbering its standalone events and its
/// POSTs: the milliseconds since 1970, above any index an earlier life of
/// the session can have reached (that would take a thousand events a second
/// since 1970). Ids a client kept from before the restore then name no
/// event of this life: its standalone stream replays everything kept, and a
/// request stream of the earlier life is unknown, instead of either being
/// mistaken for an event or a request of the new life.
fn life_base() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| {
            u64::try_from(since.as_millis()).unwrap_or(u64::MAX / 2)
        })
        .clamp(crate::replay_buffer::FIRST_INDEX, u64::MAX / 2)
}

/// A new session: the handle the registry keeps, the worker to spawn, and
/// where the worker will leave its end cause.
pub(crate) fn create(
    id: SessionId,
    settings: Arc<WorkerSettings>,
    origin: Origin,
) -> (SessionHandle, SessionWorker, EndCause) {
    let (events_tx, events) = mpsc::channel(settings.session.channel_capacity);
    let end_cause = EndCause::default();
    let first_index = match origin {
        Origin::Created => crate::replay_buffer::FIRST_INDEX,
        Origin::Restored => life_base(),
    };
    let handle = SessionHandle {
        id: id.clone(),
        events: events_tx,
    };
    let worker = SessionWorker {
        standalone: OutStream::new(None, first_index, &settings, &id),
        id,
        settings,
        events,
        end_cause: end_cause.clone(),
        origin,
        // A created session numbers its POSTs from 0, as rmcp's worker.
        next_http_request_id: match origin {
            Origin::Created => 0,
            Origin::Restored => first_index,
        },
        requests: HashMap::new(),
        by_request: HashMap::new(),
        by_progress: HashMap::new(),
        completed: VecDeque::new(),
        standalone_handed_out: Arc::new(AtomicU64::new(first_index - 1)),
        shadows: Vec::new(),
    };
    (handle, worker, end_cause)
}

type Quit = WorkerQuitReason<TransportError>;

impl SessionWorker {
    fn quit(&self, cause: CloseReason, reason: Quit) -> Quit {
        let _ = self.end_cause.set(cause);
        reason
    }

    /// Waits for `initialize`, hands it to the handler and answers the
    /// client with the handler's response. In a restored session, requests
    /// that arrive first (racing the handshake rmcp replays) are kept and
    /// returned, to be served right after, up to `channel_capacity` of them;
    /// anything else that arrives first is refused at once, not left
    /// waiting (no client can know a new session's id before its answer).
    async fn initialize(
        &mut self,
        context: &mut WorkerContext<Self>,
    ) -> Result<Vec<SessionEvent>, Quit> {
        let cancel = context.cancellation_token.clone();
        let deadline = self
            .settings
            .session
            .init_timeout
            .and_then(|timeout| Instant::now().checked_add(timeout));
        let init_timeout = async {
            match deadline {
                Some(deadline) => tokio::time::sleep_until(deadline).await,
                None => std::future::pending().await,
            }
        };
        tokio::pin!(init_timeout);
        let mut early = Vec::new();
        let (request, reply) = loop {
            let event = tokio::select! {
                () = cancel.cancelled() => return Err(Quit::Cancelled),
                () = &mut init_timeout => {
                    let timeout = self.settings.session.init_timeout.unwrap_or_default();
                    return Err(self.quit(
                        CloseReason::InitTimeout,
                        Quit::fatal(TransportError::InitTimeout(timeout), "waiting for initialize"),
                    ));
                }
                event = self.events.recv() => event,
            };
            match event {
                None => return Err(Quit::TransportClosed),
                Some(SessionEvent::Initialize { request, reply }) => break (*request, reply),
                Some(other)
                    if self.origin == Origin::Restored
                        && early.len() < self.settings.session.channel_capacity =>
                {
                    early.push(other);
                }
                Some(other) => refuse(other, BoundedSessionError::NotInitialized),
            }
        };
        let request_id = match &request {
            JsonRpcMessage::Request(request) => Some(request.id.clone()),
            _ => None,
        };
        tokio::select! {
            () = cancel.cancelled() => return Err(Quit::Cancelled),
            sent = context.send_to_handler(request) => sent.map_err(|quit| self.quit(CloseReason::HandlerEnded, quit))?,
        }
        loop {
            let from_handler = tokio::select! {
                () = cancel.cancelled() => return Err(Quit::Cancelled),
                // A handler that never answers the handshake ends the session
                // at the same deadline as a client that never sends it.
                () = &mut init_timeout => {
                    let timeout = self.settings.session.init_timeout.unwrap_or_default();
                    return Err(self.quit(
                        CloseReason::InitTimeout,
                        Quit::fatal(TransportError::InitTimeout(timeout), "waiting for the handler's initialize answer"),
                    ));
                }
                received = context.recv_from_handler() => received.map_err(|quit| self.quit(CloseReason::HandlerEnded, quit))?,
            };
            let answers_initialize = match &from_handler.message {
                JsonRpcMessage::Response(response) => Some(&response.id) == request_id.as_ref(),
                JsonRpcMessage::Error(error) => error.id.as_ref() == request_id.as_ref(),
                _ => false,
            };
            if !answers_initialize {
                // A notification before the handshake's answer (a log line,
                // say): the standalone stream keeps it for the first GET.
                let sent = self
                    .send_standalone(Some(Arc::new(from_handler.message)), &cancel)
                    .await;
                let _ = from_handler.responder.send(sent.map(|_| ()));
                continue;
            }
            if reply.send(Ok(from_handler.message)).is_err() {
                // The client gave up on its handshake: nobody knows this
                // session's id, so it ends now rather than at its timeout.
                let _ = from_handler
                    .responder
                    .send(Err(TransportError::SessionEnded));
                return Err(self.quit(
                    CloseReason::WorkerEnded,
                    Quit::fatal(TransportError::SessionEnded, "answering initialize"),
                ));
            }
            let _ = from_handler.responder.send(Ok(()));
            return Ok(early);
        }
    }

    async fn serve(&mut self, mut context: WorkerContext<Self>) -> Result<(), Quit> {
        // Boxed, as the per-request handling below: the loop's state stays
        // allocated for the session's whole life, so the rarely used states
        // are kept out of it and every idle session is smaller.
        let early = Box::pin(self.initialize(&mut context)).await?;
        let cancel = context.cancellation_token.clone();
        for event in early {
            if !Box::pin(self.on_session_event(event, &mut context, &cancel)).await? {
                return Err(Quit::Cancelled);
            }
        }
        let keep_alive = self.settings.session.keep_alive;
        let mut last_activity = Instant::now();
        let idle_deadline = |last: Instant| keep_alive.and_then(|idle| last.checked_add(idle));
        // One timer for the whole session, pushed back lazily when it fires:
        // resetting it on every message would touch the timer wheel each time.
        let idle_timer =
            tokio::time::sleep_until(idle_deadline(last_activity).unwrap_or_else(far_future));
        tokio::pin!(idle_timer);
        // Registered with the token once, not once per message.
        let cancelled = cancel.cancelled();
        tokio::pin!(cancelled);
        loop {
            tokio::select! {
                biased;
                () = &mut cancelled => return Err(Quit::Cancelled),
                received = context.from_handler_rx.recv() => {
                    let Some(request) = received else {
                        return Err(self.quit(CloseReason::HandlerEnded, Quit::HandlerTerminated));
                    };
                    let (message, responder) = (request.message, request.responder);
                    match self.on_server_message(message, &cancel).await {
                        Ok(true) => { let _ = responder.send(Ok(())); }
                        Ok(false) => {
                            let _ = responder.send(Err(TransportError::SessionEnded));
                            return Err(Quit::Cancelled);
                        }
                        Err(error) => { let _ = responder.send(Err(error)); }
                    }
                }
                received = self.events.recv() => {
                    let Some(event) = received else {
                        // The registry dropped its handle: the session was
                        // closed, and its cancellation is on its way.
                        return Err(Quit::TransportClosed);
                    };
                    if !Box::pin(self.on_session_event(event, &mut context, &cancel)).await? {
                        return Err(Quit::Cancelled);
                    }
                }
                // The standalone stream's client is gone and a shadow waits:
                // it takes over now, not at the next notification (a server
                // request waiting for the client's answer may be in the
                // dead stream's ring).
                () = standalone_gone(self.standalone.sender.as_ref()), if !self.shadows.is_empty() => {
                    if !self.promote_shadow(&cancel).await {
                        return Err(Quit::Cancelled);
                    }
                }
                () = &mut idle_timer => {
                    match idle_deadline(last_activity) {
                        Some(deadline) if deadline > Instant::now() => {
                            idle_timer.as_mut().reset(deadline);
                            continue;
                        }
                        _ => {
                            let idle = keep_alive.unwrap_or_default();
                            return Err(self.quit(CloseReason::IdleTimeout, Quit::IdleTimeout(idle)));
                        }
                    }
                }
            }
            last_activity = Instant::now();
            self.expire_completed(last_activity);
        }
    }

    /// Routes one message from the handler; `Ok(false)` if the session was
    /// cancelled while a client's buffer was full.
    async fn on_server_message(
        &mut self,
        message: ServerJsonRpcMessage,
        cancel: &CancellationToken,
    ) -> Result<bool, TransportError> {
        let (stream, completes) = self.route(&message);
        let message = Some(Arc::new(message));
        let Some(http_request_id) = stream else {
            return self.send_standalone(message, cancel).await;
        };
        let Some(request) = self.requests.get_mut(&http_request_id) else {
            return self.send_standalone(message, cancel).await;
        };
        let sent = request
            .out
            .send(message, None, &self.settings, cancel)
            .await;
        // Even if the event store failed: the request is over either way, and
        // its stream must end and its routes and count be released.
        if completes {
            self.complete(http_request_id);
        }
        sent
    }

    /// Sends on the standalone stream; if its client is gone but a shadow
    /// stream is alive, that one takes over first.
    async fn send_standalone(
        &mut self,
        message: Option<Arc<ServerJsonRpcMessage>>,
        cancel: &CancellationToken,
    ) -> Result<bool, TransportError> {
        if !self.standalone.is_connected() && !self.promote_shadow(cancel).await {
            return Ok(false);
        }
        self.standalone
            .send(message, None, &self.settings, cancel)
            .await
    }

    /// Makes the newest live shadow stream the standalone stream, replaying
    /// to it what the dead one did not hand out (or what followed the
    /// shadow's own `Last-Event-ID`). `false` if cancelled meanwhile.
    async fn promote_shadow(&mut self, cancel: &CancellationToken) -> bool {
        self.shadows.retain(|shadow| !shadow.sender.is_closed());
        let Some(shadow) = self.shadows.pop() else {
            return true;
        };
        let last_seen = shadow
            .last_seen
            .unwrap_or_else(|| self.standalone_handed_out.load(Ordering::Relaxed));
        // The standalone stream never refuses (see `missed_after`).
        let (missed, handed_before) = self
            .standalone
            .missed_after(last_seen)
            .unwrap_or((Vec::new(), last_seen));
        shadow.handed_out.store(handed_before, Ordering::Relaxed);
        self.standalone_handed_out = shadow.handed_out;
        self.standalone.sender = Some(shadow.sender);
        tracing::debug!(session_id = %self.id, "a shadow stream took over the standalone stream");
        for event in missed {
            if !self.standalone.deliver(event, &self.settings, cancel).await {
                return false;
            }
        }
        true
    }

    /// The request stream a server message belongs to (`None`: the
    /// standalone stream), and whether it is that request's last message.
    fn route(&self, message: &ServerJsonRpcMessage) -> (Option<u64>, bool) {
        let by_request = |id: &RequestId| self.by_request.get(id).copied();
        match message {
            JsonRpcMessage::Response(response) => (by_request(&response.id), true),
            JsonRpcMessage::Error(error) => (error.id.as_ref().and_then(by_request), true),
            JsonRpcMessage::Request(request) => {
                let originating = request.request.extensions().get::<OriginatingRequestId>();
                let stream = originating.and_then(|originating| by_request(&originating.0));
                if originating.is_some() && stream.is_none() {
                    tracing::debug!(
                        session_id = %self.id,
                        "originating request already answered; server request goes to the standalone stream"
                    );
                }
                (stream, false)
            }
            JsonRpcMessage::Notification(notification) => match &notification.notification {
                ServerNotification::ProgressNotification(progress) => (
                    self.by_progress
                        .get(&progress.params.progress_token)
                        .copied(),
                    false,
                ),
                ServerNotification::CancelledNotification(cancelled) => (
                    cancelled.params.request_id.as_ref().and_then(by_request),
                    false,
                ),
                _ => (None, false),
            },
        }
    }

    /// Requests in flight: every request stream not completed (completed
    /// ones stay in `requests`, and in `completed`, until they expire).
    fn in_flight(&self) -> usize {
        self.requests.len() - self.completed.len()
    }

    /// Ends a request stream's HTTP response and forgets its routes; keeps
    /// its ring for late resumes.
    fn complete(&mut self, http_request_id: u64) {
        let Some(request) = self.requests.get_mut(&http_request_id) else {
            return;
        };
        if request.completed {
            return;
        }
        request.completed = true;
        request.out.sender = None;
        self.by_request.remove(&request.request_id);
        // A token another in-flight request reuses now routes to that one.
        if let Some(token) = &request.progress_token
            && self.by_progress.get(token) == Some(&http_request_id)
        {
            self.by_progress.remove(token);
        }
        self.completed.push_back((Instant::now(), http_request_id));
        // Completed streams kept for resumes are bounded like open ones.
        while self.completed.len() > self.settings.max_request_streams {
            if let Some((_, oldest)) = self.completed.pop_front() {
                self.requests.remove(&oldest);
            }
        }
    }

    fn expire_completed(&mut self, now: Instant) {
        let ttl = self.settings.session.completed_cache_ttl;
        while let Some(&(at, http_request_id)) = self.completed.front() {
            if now.saturating_duration_since(at) < ttl {
                break;
            }
            self.completed.pop_front();
            self.requests.remove(&http_request_id);
        }
    }

    /// Handles one request from the HTTP side; `Ok(false)` if the session
    /// was cancelled meanwhile.
    async fn on_session_event(
        &mut self,
        event: SessionEvent,
        context: &mut WorkerContext<Self>,
        cancel: &CancellationToken,
    ) -> Result<bool, Quit> {
        match event {
            SessionEvent::Initialize { reply, .. } => {
                let _ = reply.send(Err(BoundedSessionError::AlreadyInitialized));
            }
            SessionEvent::Request { request, reply } => {
                let stream = match self.open_request_stream(&request, cancel).await {
                    Ok(stream) => stream,
                    Err(error) => {
                        let _ = reply.send(Err(error));
                        return Ok(true);
                    }
                };
                if reply.send(Ok(stream)).is_err() {
                    // The HTTP request went away before it got its stream;
                    // the handler still answers, into the ring.
                    tracing::debug!(session_id = %self.id, "request dropped before its stream opened");
                }
                return self.forward_to_handler(*request, context, cancel).await;
            }
            SessionEvent::Accept { message } => {
                if let JsonRpcMessage::Notification(notification) = &*message
                    && let ClientNotification::CancelledNotification(cancelled) =
                        &notification.notification
                    && let Some(request_id) = &cancelled.params.request_id
                    && let Some(&http_request_id) = self.by_request.get(request_id)
                {
                    self.complete(http_request_id);
                }
                return self.forward_to_handler(*message, context, cancel).await;
            }
            SessionEvent::Standalone { reply } => {
                let _ = reply.send(Ok(self.open_standalone(None)));
            }
            SessionEvent::Resume { last_seen, reply } => {
                let _ = reply.send(self.resume(last_seen));
            }
            SessionEvent::CloseStream {
                target,
                retry,
                reply,
            } => {
                let closed = self.close_stream(target, retry, cancel).await;
                let _ = reply.send(closed);
            }
        }
        Ok(true)
    }

    async fn forward_to_handler(
        &mut self,
        message: ClientJsonRpcMessage,
        context: &mut WorkerContext<Self>,
        cancel: &CancellationToken,
    ) -> Result<bool, Quit> {
        tokio::select! {
            sent = context.send_to_handler(message) => {
                sent.map_err(|quit| self.quit(CloseReason::HandlerEnded, quit))?;
                Ok(true)
            }
            () = cancel.cancelled() => Ok(false),
        }
    }

    async fn open_request_stream(
        &mut self,
        request: &ClientJsonRpcMessage,
        cancel: &CancellationToken,
    ) -> Result<SseStream, BoundedSessionError> {
        let JsonRpcMessage::Request(request) = request else {
            return Err(BoundedSessionError::NotARequest);
        };
        if self.by_request.contains_key(&request.id) {
            return Err(BoundedSessionError::DuplicateRequestId(request.id.clone()));
        }
        if self.in_flight() >= self.settings.max_request_streams {
            return Err(BoundedSessionError::TooManyStreams {
                limit: self.settings.max_request_streams,
            });
        }
        let http_request_id = self.next_http_request_id;
        self.next_http_request_id += 1;
        let mut out = OutStream::new(
            Some(http_request_id),
            crate::replay_buffer::FIRST_INDEX,
            &self.settings,
            &self.id,
        );
        let (sender, events) = mpsc::channel(self.settings.session.channel_capacity);
        out.sender = Some(sender);
        if let Some(retry) = self.settings.session.sse_retry {
            let priming = match (&self.settings.event_store, out.store_stream()) {
                (Some(store), Some(stream)) => {
                    let mut priming = ServerSseMessage::default();
                    priming.retry = Some(retry);
                    let id = store
                        .store_event(stream, &priming)
                        .await
                        .map_err(BoundedSessionError::EventStore)?;
                    priming.event_id = Some(id);
                    priming
                }
                _ => ServerSseMessage::priming(out.event_id(0), retry),
            };
            // The channel is new: room for the priming event.
            out.deliver((0, priming), &self.settings, cancel).await;
        }
        self.by_request.insert(request.id.clone(), http_request_id);
        let progress_token = request.request.get_meta().get_progress_token();
        if let Some(token) = &progress_token {
            self.by_progress.insert(token.clone(), http_request_id);
        }
        self.requests.insert(
            http_request_id,
            RequestStream {
                out,
                request_id: request.id.clone(),
                progress_token,
                completed: false,
            },
        );
        Ok(SseStream::live(events))
    }

    /// A `GET` without `Last-Event-ID` (`last_seen: None`) or with a
    /// standalone id. While the standalone stream is alive, a second `GET`
    /// becomes a keep-alive-only shadow stream (so two `EventSource`s of one
    /// client do not keep replacing each other); otherwise it takes over and
    /// first replays what the previous response did not hand out (or what
    /// followed `last_seen`).
    fn open_standalone(&mut self, last_seen: Option<u64>) -> SseStream {
        let capacity = self.settings.session.channel_capacity;
        self.shadows.retain(|shadow| !shadow.sender.is_closed());
        if self.standalone.is_connected() {
            if self.shadows.len() >= MAX_SHADOW_STREAMS {
                self.shadows.remove(0);
            }
            // Full size: it may take over (`promote_shadow`).
            let (sender, events) = mpsc::channel(capacity);
            let handed_out = Arc::new(AtomicU64::new(0));
            self.shadows.push(Shadow {
                sender,
                handed_out: handed_out.clone(),
                last_seen,
            });
            return SseStream {
                replay: Vec::new().into_iter(),
                events,
                handed_out: Some(handed_out),
            };
        }
        let missed_from =
            last_seen.unwrap_or_else(|| self.standalone_handed_out.load(Ordering::Relaxed));
        let handed_out = Arc::new(AtomicU64::new(missed_from));
        self.standalone_handed_out = handed_out.clone();
        // The standalone stream resumes from any index (see `reconnect`),
        // so the fallback, an ended stream, is never used.
        self.standalone
            .reconnect(missed_from, capacity, Some(handed_out))
            .unwrap_or_else(|_| SseStream::live(mpsc::channel(1).1))
    }

    fn resume(&mut self, last_seen: EventId) -> Result<SseStream, BoundedSessionError> {
        let Some(http_request_id) = last_seen.stream else {
            return Ok(self.open_standalone(Some(last_seen.index)));
        };
        let capacity = self.settings.session.channel_capacity;
        let request = self
            .requests
            .get_mut(&http_request_id)
            .ok_or(ReplayError::UnknownStream(http_request_id))?;
        let stream = request.out.reconnect(last_seen.index, capacity, None)?;
        if request.completed {
            // Nothing more will come: the replay is all, then the stream ends.
            request.out.sender = None;
        }
        Ok(stream)
    }

    async fn close_stream(
        &mut self,
        target: StreamTarget,
        retry: Option<Duration>,
        cancel: &CancellationToken,
    ) -> Result<(), BoundedSessionError> {
        let http_request_id = match target {
            StreamTarget::Standalone => {
                if let Some(retry) = retry {
                    self.standalone
                        .send(None, Some(retry), &self.settings, cancel)
                        .await
                        .map_err(BoundedSessionError::from)?;
                }
                self.standalone.sender = None;
                self.shadows.clear();
                return Ok(());
            }
            StreamTarget::Http(http_request_id) => http_request_id,
            StreamTarget::Request(request_id) => *self
                .by_request
                .get(&request_id)
                .ok_or(BoundedSessionError::UnknownRequest(request_id))?,
        };
        let request = self
            .requests
            .get_mut(&http_request_id)
            .ok_or(ReplayError::UnknownStream(http_request_id))?;
        if let Some(retry) = retry {
            request
                .out
                .send(None, Some(retry), &self.settings, cancel)
                .await
                .map_err(BoundedSessionError::from)?;
        }
        request.out.sender = None;
        Ok(())
    }
}

/// Resolves when the standalone stream has no connected client.
async fn standalone_gone(sender: Option<&mpsc::Sender<Outgoing>>) {
    if let Some(sender) = sender {
        sender.closed().await;
    }
}

/// Answers an event that cannot be served with `error`.
fn refuse(event: SessionEvent, error: BoundedSessionError) {
    match event {
        SessionEvent::Initialize { reply, .. } => {
            let _ = reply.send(Err(error));
        }
        SessionEvent::Request { reply, .. }
        | SessionEvent::Standalone { reply }
        | SessionEvent::Resume { reply, .. } => {
            let _ = reply.send(Err(error));
        }
        SessionEvent::CloseStream { reply, .. } => {
            let _ = reply.send(Err(error));
        }
        SessionEvent::Accept { .. } => {}
    }
}

fn far_future() -> Instant {
    // About 30 years, as tokio's own "never" deadlines.
    Instant::now() + Duration::from_secs(86_400 * 365 * 30)
}

impl Worker for SessionWorker {
    type Error = TransportError;
    type Role = RoleServer;

    fn err_closed() -> Self::Error {
        TransportError::SessionEnded
    }

    fn err_join(error: tokio::task::JoinError) -> Self::Error {
        TransportError::WorkerFailed(error.to_string())
    }

    fn config(&self) -> WorkerConfig {
        let mut config = WorkerConfig::default();
        config.channel_buffer_capacity = self.settings.session.channel_capacity;
        config
    }

    async fn run(self, context: WorkerContext<Self>) -> Result<(), Quit> {
        // The session loop lives in its own allocation: tokio moves a
        // spawned task's future by value several times while it creates and
        // later drops the task, and the loop's state is 3.2 KB. Boxed, this
        // future (the worker, its context and this pointer) is 400 bytes
        // instead of 3.9 KB.
        Box::pin(async move {
            let mut worker = self;
            let served = worker.serve(context).await;
            tracing::debug!(session_id = %worker.id, "session worker stopped");
            served
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;
    use rmcp::transport::Transport;
    use serde_json::json;

    const WAIT: Duration = Duration::from_secs(5);

    fn client(value: serde_json::Value) -> ClientJsonRpcMessage {
        serde_json::from_value(value).expect("a client message")
    }

    fn server(value: serde_json::Value) -> ServerJsonRpcMessage {
        serde_json::from_value(value).expect("a server message")
    }

    fn call(id: i64, progress_token: Option<&str>) -> ClientJsonRpcMessage {
        let mut params = json!({ "name": "work", "arguments": {} });
        if let Some(token) = progress_token {
            params["_meta"] = json!({ "progressToken": token });
        }
        client(json!({ "jsonrpc": "2.0", "id": id, "method": "tools/call", "params": params }))
    }

    fn answer(id: i64) -> ServerJsonRpcMessage {
        server(json!({ "jsonrpc": "2.0", "id": id, "result": {} }))
    }

    fn progress(token: &str, progress: u32) -> ServerJsonRpcMessage {
        server(json!({
            "jsonrpc": "2.0", "method": "notifications/progress",
            "params": { "progressToken": token, "progress": progress }
        }))
    }

    fn log_line(n: u32) -> ServerJsonRpcMessage {
        server(json!({
            "jsonrpc": "2.0", "method": "notifications/message",
            "params": { "level": "info", "data": n }
        }))
    }

    /// A session worker run by rmcp's `WorkerTransport`, initialized; the
    /// test plays both the HTTP side (`handle`) and the MCP handler
    /// (`handler`).
    struct Session {
        handle: SessionHandle,
        handler: rmcp::transport::WorkerTransport<SessionWorker>,
        end_cause: EndCause,
    }

    fn settings(config: impl FnOnce(&mut WorkerSettings)) -> Arc<WorkerSettings> {
        let mut settings = WorkerSettings {
            session: SessionConfig::default(),
            replay_capacity: 16,
            max_request_streams: 8,
            event_store: None,
        };
        config(&mut settings);
        Arc::new(settings)
    }

    async fn session(settings: Arc<WorkerSettings>) -> Session {
        session_from(settings, Origin::Created).await
    }

    async fn session_from(settings: Arc<WorkerSettings>, origin: Origin) -> Session {
        let (handle, worker, end_cause) = create("test".into(), settings, origin);
        let mut handler = rmcp::transport::WorkerTransport::spawn(worker);
        let initialize = client(json!({
            "jsonrpc": "2.0", "id": 0, "method": "initialize",
            "params": {
                "protocolVersion": "2025-06-18", "capabilities": {},
                "clientInfo": { "name": "test", "version": "0" }
            }
        }));
        let answered = {
            let handle = handle.clone();
            tokio::spawn(async move { handle.initialize(initialize).await })
        };
        let received = handler
            .receive()
            .await
            .expect("initialize reaches the handler");
        assert!(matches!(received, JsonRpcMessage::Request(_)));
        handler.send(answer(0)).await.unwrap();
        answered.await.unwrap().expect("initialize answered");
        Session {
            handle,
            handler,
            end_cause,
        }
    }

    impl Session {
        /// Sends a request and has the handler take it.
        async fn request(&mut self, request: ClientJsonRpcMessage) -> SseStream {
            let stream = self.handle.request(request).await.unwrap();
            self.handler
                .receive()
                .await
                .expect("the request reaches the handler");
            stream
        }
    }

    /// The next event's id and JSON-RPC id / method, or None at the end.
    async fn next(stream: &mut SseStream) -> Option<(String, String)> {
        let event = tokio::time::timeout(WAIT, stream.next())
            .await
            .expect("the stream neither sent nor ended")?;
        let what = match event.message.as_deref() {
            None => "priming".to_owned(),
            Some(JsonRpcMessage::Response(response)) => format!("answer {}", response.id),
            Some(JsonRpcMessage::Notification(notification)) => {
                let value = serde_json::to_value(notification).unwrap();
                match value["params"]["progress"].as_f64() {
                    Some(progress) => format!("progress {progress}"),
                    None => format!("log {}", value["params"]["data"]),
                }
            }
            Some(JsonRpcMessage::Request(request)) => format!("request {}", request.id),
            Some(JsonRpcMessage::Error(error)) => format!("error {:?}", error.id),
        };
        Some((event.event_id.unwrap_or_default(), what))
    }

    async fn assert_pending(stream: &mut SseStream) {
        let next = tokio::time::timeout(Duration::from_millis(50), stream.next()).await;
        assert!(next.is_err(), "expected nothing, got {next:?}");
    }

    fn ids(events: &[(String, String)]) -> Vec<&str> {
        events.iter().map(|(id, _)| id.as_str()).collect()
    }

    async fn drain(stream: &mut SseStream) -> Vec<(String, String)> {
        let mut events = Vec::new();
        while let Some(event) = next(stream).await {
            events.push(event);
        }
        events
    }

    #[tokio::test]
    async fn answers_and_progress_ride_their_request_stream_which_then_ends() {
        let mut session = session(settings(|_| {})).await;
        let mut stream = session.request(call(1, Some("tok"))).await;
        let mut standalone = session.handle.standalone().await.unwrap();
        session.handler.send(progress("tok", 1)).await.unwrap();
        session.handler.send(log_line(7)).await.unwrap();
        session.handler.send(answer(1)).await.unwrap();
        let events = drain(&mut stream).await;
        assert_eq!(
            events,
            [
                ("0/0".into(), "priming".into()),
                ("1/0".into(), "progress 1".into()),
                ("2/0".into(), "answer 1".into()),
            ]
        );
        assert_eq!(
            next(&mut standalone).await,
            Some(("1".into(), "log 7".into()))
        );
        // The progress token is forgotten with the request.
        session.handler.send(progress("tok", 2)).await.unwrap();
        assert_eq!(
            next(&mut standalone).await,
            Some(("2".into(), "progress 2".into()))
        );
    }

    #[tokio::test]
    async fn server_requests_ride_their_originating_request_stream_while_it_lasts() {
        let mut session = session(settings(|_| {})).await;
        let mut stream = session.request(call(1, None)).await;
        let mut standalone = session.handle.standalone().await.unwrap();
        let associated = |id: i64| {
            let mut request = server(json!({ "jsonrpc": "2.0", "id": id, "method": "ping" }));
            if let JsonRpcMessage::Request(request) = &mut request {
                request
                    .request
                    .extensions_mut()
                    .insert(OriginatingRequestId(RequestId::Number(1)));
            }
            request
        };
        session.handler.send(associated(100)).await.unwrap();
        let unassociated = server(json!({ "jsonrpc": "2.0", "id": 101, "method": "ping" }));
        session.handler.send(unassociated).await.unwrap();
        session.handler.send(answer(1)).await.unwrap();
        // Its request answered, an associated request falls back.
        session.handler.send(associated(102)).await.unwrap();
        let events = drain(&mut stream).await;
        let what: Vec<_> = events.iter().map(|(_, what)| what.as_str()).collect();
        assert_eq!(what, ["priming", "request 100", "answer 1"]);
        assert_eq!(next(&mut standalone).await.unwrap().1, "request 101");
        assert_eq!(next(&mut standalone).await.unwrap().1, "request 102");
    }

    #[tokio::test]
    async fn a_cancelled_request_ends_its_stream_and_a_late_answer_goes_standalone() {
        let mut session = session(settings(|_| {})).await;
        let mut stream = session.request(call(1, None)).await;
        let mut standalone = session.handle.standalone().await.unwrap();
        let cancel = client(json!({
            "jsonrpc": "2.0", "method": "notifications/cancelled",
            "params": { "requestId": 1 }
        }));
        session.handle.accept(cancel).await.unwrap();
        session
            .handler
            .receive()
            .await
            .expect("the handler hears of it");
        assert_eq!(
            drain(&mut stream).await.len(),
            1,
            "priming only, then the end"
        );
        session.handler.send(answer(1)).await.unwrap();
        assert_eq!(next(&mut standalone).await.unwrap().1, "answer 1");
        // The id is free again.
        let _again = session.request(call(1, None)).await;
    }

    #[tokio::test]
    async fn in_flight_ids_are_unique_and_bounded() {
        let mut session = session(settings(|s| s.max_request_streams = 2)).await;
        let _first = session.request(call(1, None)).await;
        assert!(matches!(
            session.handle.request(call(1, None)).await,
            Err(BoundedSessionError::DuplicateRequestId(RequestId::Number(
                1
            )))
        ));
        let _second = session.request(call(2, None)).await;
        assert!(matches!(
            session.handle.request(call(3, None)).await,
            Err(BoundedSessionError::TooManyStreams { limit: 2 })
        ));
        session.handler.send(answer(1)).await.unwrap();
        let _third = session.request(call(3, None)).await;
    }

    #[tokio::test]
    async fn answered_streams_kept_for_resumes_are_bounded_like_open_ones() {
        let mut session = session(settings(|s| s.max_request_streams = 2)).await;
        for id in 1..=3 {
            let _stream = session.request(call(id, None)).await;
            session.handler.send(answer(id)).await.unwrap();
        }
        let resume = |stream| EventId {
            index: 0,
            stream: Some(stream),
        };
        // The oldest answered stream made room for the third.
        assert!(matches!(
            session.handle.resume(resume(0)).await,
            Err(BoundedSessionError::Replay(ReplayError::UnknownStream(0)))
        ));
        assert!(session.handle.resume(resume(1)).await.is_ok());
        assert!(session.handle.resume(resume(2)).await.is_ok());
    }

    #[tokio::test]
    async fn shadow_streams_are_bounded_and_the_oldest_goes_first() {
        let session = session(settings(|_| {})).await;
        let _primary = session.handle.standalone().await.unwrap();
        let mut oldest = session.handle.standalone().await.unwrap();
        let mut kept = Vec::new();
        for _ in 0..MAX_SHADOW_STREAMS {
            kept.push(session.handle.standalone().await.unwrap());
        }
        assert_eq!(next(&mut oldest).await, None, "dropped to make room");
        for shadow in &mut kept {
            assert_pending(shadow).await;
        }
    }

    #[tokio::test]
    async fn a_resumed_request_stream_gets_exactly_what_followed() {
        let mut session = session(settings(|_| {})).await;
        let mut stream = session.request(call(1, Some("tok"))).await;
        session.handler.send(progress("tok", 1)).await.unwrap();
        assert_eq!(next(&mut stream).await.unwrap().0, "0/0");
        assert_eq!(next(&mut stream).await.unwrap().0, "1/0");
        // The connection drops; more progress and the answer arrive meanwhile.
        drop(stream);
        session.handler.send(progress("tok", 2)).await.unwrap();
        session.handler.send(progress("tok", 3)).await.unwrap();
        let resume = |index| EventId {
            index,
            stream: Some(0),
        };
        let mut resumed = session.handle.resume(resume(1)).await.unwrap();
        assert_eq!(
            next(&mut resumed).await,
            Some(("2/0".into(), "progress 2".into()))
        );
        assert_eq!(next(&mut resumed).await.unwrap().0, "3/0");
        assert_pending(&mut resumed).await;
        session.handler.send(answer(1)).await.unwrap();
        assert_eq!(next(&mut resumed).await.unwrap().1, "answer 1");
        assert_eq!(next(&mut resumed).await, None, "answered: the stream ends");

        // Completed, it can still be resumed (and ends after the replay).
        let mut late = session.handle.resume(resume(2)).await.unwrap();
        assert_eq!(ids(&drain(&mut late).await), ["3/0", "4/0"]);
        let mut nothing_missed = session.handle.resume(resume(4)).await.unwrap();
        assert_eq!(next(&mut nothing_missed).await, None);
        assert!(matches!(
            session.handle.resume(resume(5)).await,
            Err(BoundedSessionError::Replay(ReplayError::Ahead {
                last_seen: 5,
                newest: 4
            }))
        ));
        assert!(matches!(
            session
                .handle
                .resume(EventId {
                    index: 0,
                    stream: Some(9)
                })
                .await,
            Err(BoundedSessionError::Replay(ReplayError::UnknownStream(9)))
        ));
    }

    #[tokio::test]
    async fn a_resume_after_overwritten_events_replays_what_is_kept_with_the_gap_visible() {
        let mut session = session(settings(|s| s.replay_capacity = 2)).await;
        let stream = session.request(call(1, Some("tok"))).await;
        drop(stream);
        for n in 1..=5 {
            session.handler.send(progress("tok", n)).await.unwrap();
        }
        let resume = |index| EventId {
            index,
            stream: Some(0),
        };
        // 3 and earlier are gone: the client gets 4 and 5, and the jump from
        // its 2 to 4 in the ids shows what it lost (a refusal would only
        // make it retry the same id forever).
        let mut resumed = session.handle.resume(resume(2)).await.unwrap();
        assert_eq!(
            next(&mut resumed).await,
            Some(("4/0".into(), "progress 4".into()))
        );
        assert_eq!(next(&mut resumed).await.unwrap().0, "5/0");
        let mut exact = session.handle.resume(resume(3)).await.unwrap();
        assert_eq!(next(&mut exact).await.unwrap().0, "4/0");
        assert_eq!(next(&mut exact).await.unwrap().0, "5/0");
        // The answer still arrives live, and ends the stream.
        session.handler.send(answer(1)).await.unwrap();
        assert_eq!(next(&mut exact).await.unwrap().1, "answer 1");
        assert_eq!(next(&mut exact).await, None);
    }

    #[tokio::test(start_paused = true)]
    async fn completed_streams_expire_after_their_ttl() {
        let ttl = Duration::from_secs(60);
        let mut session = session(settings(|s| s.session.completed_cache_ttl = ttl)).await;
        let _stream = session.request(call(1, None)).await;
        session.handler.send(answer(1)).await.unwrap();
        let resume = EventId {
            index: 0,
            stream: Some(0),
        };
        tokio::time::advance(ttl - Duration::from_secs(1)).await;
        assert!(session.handle.resume(resume).await.is_ok(), "still kept");
        tokio::time::advance(Duration::from_secs(2)).await;
        // Expiry runs as the worker handles its next event.
        let _ = session.handle.standalone().await.unwrap();
        assert!(matches!(
            session.handle.resume(resume).await,
            Err(BoundedSessionError::Replay(ReplayError::UnknownStream(0)))
        ));
    }

    #[tokio::test]
    async fn a_second_get_is_a_shadow_that_takes_over_when_the_first_dies() {
        let mut session = session(settings(|_| {})).await;
        // Sent before any GET: kept for the first one.
        session.handler.send(log_line(1)).await.unwrap();
        let mut primary = session.handle.standalone().await.unwrap();
        assert_eq!(next(&mut primary).await, Some(("1".into(), "log 1".into())));
        let mut shadow = session.handle.standalone().await.unwrap();
        session.handler.send(log_line(2)).await.unwrap();
        assert_eq!(next(&mut primary).await.unwrap().0, "2");
        assert_pending(&mut shadow).await;
        // The primary dies: the shadow takes over, from what the primary
        // did not hand out.
        drop(primary);
        session.handler.send(log_line(3)).await.unwrap();
        session.handler.send(log_line(4)).await.unwrap();
        assert_eq!(next(&mut shadow).await.unwrap().0, "3");
        assert_eq!(next(&mut shadow).await.unwrap().0, "4");
        // No stream left: kept for the next GET, which replays just that.
        drop(shadow);
        session.handler.send(log_line(5)).await.unwrap();
        let mut next_get = session.handle.standalone().await.unwrap();
        assert_eq!(next(&mut next_get).await.unwrap().0, "5");
        assert_pending(&mut next_get).await;
        // A reconnect with Last-Event-ID while that one lives waits in
        // reserve, and takes over from its own Last-Event-ID.
        let mut resumed = session
            .handle
            .resume(EventId {
                index: 3,
                stream: None,
            })
            .await
            .unwrap();
        assert_pending(&mut resumed).await;
        drop(next_get);
        session.handler.send(log_line(6)).await.unwrap();
        for expected in ["4", "5", "6"] {
            assert_eq!(next(&mut resumed).await.unwrap().0, expected);
        }
        // Closing from the server side ends the stream and its shadows.
        let mut another_shadow = session.handle.standalone().await.unwrap();
        session
            .handle
            .close_standalone_sse_stream(Some(Duration::from_millis(10)))
            .await
            .unwrap();
        let (id, what) = next(&mut resumed).await.unwrap();
        assert_eq!((id.as_str(), what.as_str()), ("7", "priming"));
        assert_eq!(next(&mut resumed).await, None);
        assert_eq!(next(&mut another_shadow).await, None);
    }

    #[tokio::test]
    async fn a_shadow_with_the_largest_id_takes_over_without_overflow() {
        let mut session = session(settings(|_| {})).await;
        let primary = session.handle.standalone().await.unwrap();
        let mut shadow = session
            .handle
            .resume(EventId {
                index: u64::MAX,
                stream: None,
            })
            .await
            .unwrap();
        drop(primary);
        session.handler.send(log_line(1)).await.unwrap();
        assert_eq!(next(&mut shadow).await.unwrap().0, "1");
    }

    #[tokio::test]
    async fn a_shadow_takes_over_as_soon_as_the_standalone_client_is_gone() {
        let mut session = session(settings(|_| {})).await;
        let primary = session.handle.standalone().await.unwrap();
        let mut shadow = session.handle.standalone().await.unwrap();
        // An elicitation request, say, that the primary never hands out.
        session.handler.send(log_line(1)).await.unwrap();
        drop(primary);
        // No further notification is needed for the shadow to get it.
        assert_eq!(next(&mut shadow).await.unwrap().0, "1");

        // Likewise for a reconnect with Last-Event-ID that raced a dead
        // connection the server still thought alive.
        let mut primary = shadow;
        let mut reconnected = session
            .handle
            .resume(EventId {
                index: 1,
                stream: None,
            })
            .await
            .unwrap();
        session.handler.send(log_line(2)).await.unwrap();
        assert_eq!(next(&mut primary).await.unwrap().0, "2");
        drop(primary);
        assert_eq!(next(&mut reconnected).await.unwrap().0, "2");
    }

    #[tokio::test]
    async fn a_promoted_shadow_with_an_id_ahead_leaves_nothing_unreplayed() {
        let mut session = session(settings(|_| {})).await;
        let mut primary = session.handle.standalone().await.unwrap();
        session.handler.send(log_line(1)).await.unwrap();
        assert_eq!(next(&mut primary).await.unwrap().0, "1");
        let shadow = session
            .handle
            .resume(EventId {
                index: 57,
                stream: None,
            })
            .await
            .unwrap();
        drop(primary);
        session.handler.send(log_line(2)).await.unwrap();
        drop(shadow);
        session.handler.send(log_line(3)).await.unwrap();
        // The shadow's id named nothing this stream sent, so it was owed
        // everything kept; it handed out none of it, and 2 and 3 went to no
        // response at all: the next GET gets all three.
        let mut get = session.handle.standalone().await.unwrap();
        for expected in ["1", "2", "3"] {
            assert_eq!(next(&mut get).await.unwrap().0, expected);
        }
    }

    #[tokio::test]
    async fn ids_from_before_a_restore_name_nothing_of_the_new_life() {
        let mut session = session_from(settings(|_| {}), Origin::Restored).await;
        // Sent by the restored session before the client's GET came back.
        session.handler.send(log_line(1)).await.unwrap();
        let mut resumed = session
            .handle
            .resume(EventId {
                index: 57,
                stream: None,
            })
            .await
            .unwrap();
        let (first_id, what) = next(&mut resumed).await.unwrap();
        assert_eq!(what, "log 1", "the kept event of the new life is replayed");
        let first: u64 = first_id.parse().unwrap();
        assert!(first > 1_000_000_000_000, "numbered above any earlier life");
        // A request stream of the earlier life is unknown, not confused
        // with the new life's first request.
        let _stream = session.request(call(1, None)).await;
        assert!(matches!(
            session
                .handle
                .resume(EventId {
                    index: 0,
                    stream: Some(0),
                })
                .await,
            Err(BoundedSessionError::Replay(ReplayError::UnknownStream(0)))
        ));
    }

    #[tokio::test]
    async fn a_standalone_id_from_before_a_restore_resumes_live() {
        let mut session = session(settings(|_| {})).await;
        // The fresh worker never sent event 57; its client had it from the
        // session's previous life.
        let mut resumed = session
            .handle
            .resume(EventId {
                index: 57,
                stream: None,
            })
            .await
            .unwrap();
        session.handler.send(log_line(1)).await.unwrap();
        assert_eq!(next(&mut resumed).await.unwrap().0, "1");
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_that_stops_reading_is_disconnected_and_can_resume() {
        let mut session = session(settings(|s| s.session.channel_capacity = 2)).await;
        let mut unread = session.handle.standalone().await.unwrap();
        let mut stream = session.request(call(1, None)).await;
        assert_eq!(next(&mut stream).await.unwrap().1, "priming");
        let mut sends = Vec::new();
        for n in 1..=3 {
            sends.push(tokio::spawn(session.handler.send(log_line(n))));
            tokio::task::yield_now().await;
        }
        sends.push(tokio::spawn(session.handler.send(answer(1))));
        // Past the stall limit the unread stream is let go, and the answer
        // behind it reaches its own, read, stream.
        assert_pending(&mut stream).await;
        tokio::time::sleep(STALL_LIMIT).await;
        assert_eq!(next(&mut stream).await.unwrap().1, "answer 1");
        for send in sends {
            send.await.unwrap().unwrap();
        }
        // The unread stream ends after what it buffered; the rest is kept.
        assert_eq!(next(&mut unread).await.unwrap().0, "1");
        assert_eq!(next(&mut unread).await.unwrap().0, "2");
        assert_eq!(next(&mut unread).await, None);
        let mut resumed = session
            .handle
            .resume(EventId {
                index: 2,
                stream: None,
            })
            .await
            .unwrap();
        assert_eq!(next(&mut resumed).await.unwrap().0, "3");
    }

    #[tokio::test]
    async fn the_server_closes_a_request_stream_and_the_client_resumes_it() {
        let mut session = session(settings(|_| {})).await;
        let mut stream = session.request(call(1, Some("tok"))).await;
        session
            .handle
            .close_request_sse_stream(RequestId::Number(1), Some(Duration::from_millis(100)))
            .await
            .unwrap();
        let events = drain(&mut stream).await;
        assert_eq!(ids(&events), ["0/0", "1/0"]);
        session.handler.send(progress("tok", 1)).await.unwrap();
        session.handler.send(answer(1)).await.unwrap();
        let mut resumed = session
            .handle
            .resume(EventId {
                index: 1,
                stream: Some(0),
            })
            .await
            .unwrap();
        assert_eq!(ids(&drain(&mut resumed).await), ["2/0", "3/0"]);
        assert!(matches!(
            session
                .handle
                .close_request_sse_stream(RequestId::Number(1), None)
                .await,
            Err(BoundedSessionError::UnknownRequest(RequestId::Number(1)))
        ));
    }

    #[tokio::test]
    async fn a_client_that_stops_reading_stalls_only_until_the_session_is_closed() {
        let mut session = session(settings(|s| s.session.channel_capacity = 2)).await;
        let stream = session.request(call(1, Some("tok"))).await;
        let cancel = session.handler.cancel_token();
        // Priming + 1 fill the client's buffer; the next send waits.
        session.handler.send(progress("tok", 1)).await.unwrap();
        let blocked = session.handler.send(progress("tok", 2));
        let blocked = tokio::spawn(blocked);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!blocked.is_finished(), "backpressure from the client");
        cancel.cancel();
        assert!(
            tokio::time::timeout(WAIT, session.handler.receive())
                .await
                .expect("the worker ends")
                .is_none()
        );
        assert!(blocked.await.unwrap().is_err());
        drop(stream);
        assert!(
            session.end_cause.get().is_none(),
            "stopped, not ended by itself"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn idle_and_init_timeouts_are_reported_as_such() {
        let idle = Duration::from_secs(30);
        let mut session = session(settings(|s| s.session.keep_alive = Some(idle))).await;
        tokio::time::advance(idle / 2).await;
        let _ = session.handle.standalone().await.unwrap();
        tokio::time::advance(idle / 2 + Duration::from_secs(1)).await;
        assert!(session.end_cause.get().is_none(), "activity pushed it back");
        assert!(session.handler.receive().await.is_none());
        assert_eq!(session.end_cause.get(), Some(&CloseReason::IdleTimeout));

        let init = Duration::from_secs(10);
        let timeout = |s: &mut WorkerSettings| s.session.init_timeout = Some(init);
        let (handle, worker, end_cause) = create("t".into(), settings(timeout), Origin::Created);
        let mut handler = rmcp::transport::WorkerTransport::spawn(worker);
        // Anything but initialize is refused at once, not left waiting.
        assert!(matches!(
            handle.standalone().await,
            Err(BoundedSessionError::NotInitialized)
        ));
        assert!(handler.receive().await.is_none());
        assert_eq!(end_cause.get(), Some(&CloseReason::InitTimeout));

        // In a restored session, a request before the replayed handshake
        // waits for it; if the session ends instead, the request learns so.
        let (handle, worker, end_cause) = create("r".into(), settings(timeout), Origin::Restored);
        let mut handler = rmcp::transport::WorkerTransport::spawn(worker);
        let early = tokio::spawn(async move { handle.standalone().await });
        assert!(handler.receive().await.is_none());
        assert_eq!(end_cause.get(), Some(&CloseReason::InitTimeout));
        assert!(early.await.unwrap().unwrap_err().is_session_not_found());
    }

    /// An in-memory `EventStore` that names events `e1`, `e2`, ...
    #[derive(Default)]
    struct CountingStore {
        events: parking_lot::Mutex<Vec<(String, ServerSseMessage)>>,
    }

    #[async_trait::async_trait]
    impl EventStore for CountingStore {
        async fn store_event(
            &self,
            stream_id: &str,
            event: &ServerSseMessage,
        ) -> Result<String, rmcp::transport::streamable_http_server::session::EventStoreError>
        {
            let mut events = self.events.lock();
            events.push((stream_id.to_owned(), event.clone()));
            Ok(format!("e{}", events.len()))
        }

        async fn replay_events_after(
            &self,
            _last_event_id: &str,
        ) -> Result<
            rmcp::transport::streamable_http_server::session::EventStream,
            rmcp::transport::streamable_http_server::session::EventStoreError,
        > {
            Ok(Box::pin(futures::stream::empty()))
        }
    }

    #[tokio::test]
    async fn with_an_event_store_the_store_names_and_keeps_the_events() {
        let store = Arc::new(CountingStore::default());
        let mut session = session(settings(|s| s.event_store = Some(store.clone()))).await;
        let mut stream = session.request(call(1, Some("tok"))).await;
        session.handler.send(progress("tok", 1)).await.unwrap();
        session.handler.send(answer(1)).await.unwrap();
        let events = drain(&mut stream).await;
        assert_eq!(ids(&events), ["e1", "e2", "e3"]);
        let stored = store.events.lock();
        assert_eq!(stored.len(), 3);
        assert!(
            stored.iter().all(|(stream, _)| *stream == stored[0].0),
            "one stream id"
        );
        assert!(
            stored[0].1.message.is_none(),
            "the priming event is stored too"
        );
    }

    /// Fails its `fail_at`-th `store_event`, like a store losing its
    /// connection once.
    struct FlakyStore {
        calls: std::sync::atomic::AtomicUsize,
        fail_at: usize,
    }

    #[async_trait::async_trait]
    impl EventStore for FlakyStore {
        async fn store_event(
            &self,
            _stream_id: &str,
            _event: &ServerSseMessage,
        ) -> Result<String, rmcp::transport::streamable_http_server::session::EventStoreError>
        {
            let call = self.calls.fetch_add(1, Ordering::Relaxed) + 1;
            if call == self.fail_at {
                return Err("store unavailable".into());
            }
            Ok(format!("e{call}"))
        }

        async fn replay_events_after(
            &self,
            _last_event_id: &str,
        ) -> Result<
            rmcp::transport::streamable_http_server::session::EventStream,
            rmcp::transport::streamable_http_server::session::EventStoreError,
        > {
            Ok(Box::pin(futures::stream::empty()))
        }
    }

    #[tokio::test]
    async fn an_answer_the_store_failed_on_still_ends_its_request() {
        let store = Arc::new(FlakyStore {
            calls: Default::default(),
            fail_at: 2,
        });
        let mut session = session(settings(|s| {
            s.event_store = Some(store.clone());
            s.max_request_streams = 1;
        }))
        .await;
        let mut stream = session.request(call(1, None)).await;
        assert_eq!(next(&mut stream).await.unwrap().1, "priming");
        assert!(
            session.handler.send(answer(1)).await.is_err(),
            "the handler hears of it"
        );
        assert_eq!(next(&mut stream).await, None, "the stream ends");
        // Its slot among the requests in flight and its id are free again.
        let _again = session.request(call(1, None)).await;
    }

    #[test]
    fn the_standalone_stream_keeps_rmcps_name_in_an_event_store() {
        let store: Arc<dyn EventStore> = Arc::new(CountingStore::default());
        let settings = settings(|s| s.event_store = Some(store));
        let (_, first, _) = create("sid".into(), settings.clone(), Origin::Created);
        let (_, restored, _) = create("sid".into(), settings, Origin::Restored);
        assert_eq!(first.standalone.store_stream(), Some("sid:common"));
        assert_eq!(
            first.standalone.store_stream(),
            restored.standalone.store_stream()
        );
    }
}
