//! Which stream each server message belongs to, and the request streams
//! themselves.
//!
//! # Invariants kept here
//!
//! - Every server message goes to exactly one stream: a response or error to
//!   the stream of the request it answers (which it then completes), a
//!   progress notification to the stream of its progress token, a request
//!   marked with rmcp's `OriginatingRequestId` to its originating request's
//!   stream (SEP-2260), anything else, or anything whose stream is gone, to
//!   the standalone stream.
//! - At most `max_request_streams` request streams are open, and as many
//!   completed ones are kept for late resumes, each at most
//!   `completed_cache_ttl`: a session's memory stays bounded whatever its
//!   client sends.
//! - A request the client cancelled keeps its id until the handler's late
//!   answer arrives or its stream expires: the handler may have answered
//!   before it saw the cancellation, and that answer must end on the
//!   cancelled request's stream (kept for resumes, read by nobody), not on
//!   a new request that reused the id. The protocol forbids reusing an id
//!   within a session; a client that does so this early is refused as for
//!   a duplicate id.

use std::collections::{HashMap, VecDeque};

use rmcp::model::{
    ClientJsonRpcMessage, GetExtensions, GetMeta, JsonRpcMessage, ProgressToken, RequestId,
    ServerJsonRpcMessage, ServerNotification,
};
use rmcp::service::OriginatingRequestId;
use rmcp::transport::streamable_http_server::session::SessionId;
use tokio::time::Instant;

use super::SessionSettings;
use super::event_stream::EventStream;
use crate::error::BoundedSessionError;

#[derive(Debug)]
pub(crate) struct RequestStream {
    pub(crate) events: EventStream,
    /// The request's JSON-RPC id and progress token, routed to this stream
    /// until it completes.
    pub(crate) request_id: RequestId,
    progress_token: Option<ProgressToken>,
    pub(crate) completed: bool,
}

/// Where a server message goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Route {
    Standalone,
    /// The stream of HTTP request number `n`; `completes` if the message is
    /// that request's last (its response or error).
    Request {
        http_request_id: u64,
        completes: bool,
    },
}

/// The session's request streams and the routes to them.
#[derive(Debug)]
pub(crate) struct RequestRoutes {
    next_http_request_id: u64,
    pub(crate) streams: HashMap<u64, RequestStream>,
    /// The in-flight requests' streams by JSON-RPC id and by progress token.
    /// Two maps keyed by what a message carries, so routing a message looks
    /// its key up by reference (no clone on the send path).
    by_request: HashMap<RequestId, u64>,
    by_progress: HashMap<ProgressToken, u64>,
    /// Completed request streams, in completion order, kept for late
    /// resumes until `completed_cache_ttl`.
    completed: VecDeque<(Instant, u64)>,
}

impl RequestRoutes {
    /// Routes for a session whose first HTTP request gets number `first`.
    pub(crate) fn new(first: u64) -> Self {
        Self {
            next_http_request_id: first,
            streams: HashMap::new(),
            by_request: HashMap::new(),
            by_progress: HashMap::new(),
            completed: VecDeque::new(),
        }
    }

    /// Requests in flight: every request stream not completed (completed
    /// ones stay in `streams`, and in `completed`, until they expire).
    fn in_flight(&self) -> usize {
        self.streams.len() - self.completed.len()
    }

    /// The HTTP request number of JSON-RPC request `id`, while in flight.
    pub(crate) fn in_flight_request(&self, id: &RequestId) -> Option<u64> {
        self.by_request.get(id).copied()
    }

    /// Checks that `message` may open a request stream now.
    pub(crate) fn check_new(
        &self,
        message: &ClientJsonRpcMessage,
        settings: &SessionSettings,
    ) -> Result<(), BoundedSessionError> {
        let JsonRpcMessage::Request(request) = message else {
            return Err(BoundedSessionError::NotARequest);
        };
        if self.by_request.contains_key(&request.id) {
            return Err(BoundedSessionError::DuplicateRequestId(request.id.clone()));
        }
        if self.in_flight() >= settings.max_request_streams {
            return Err(BoundedSessionError::TooManyStreams {
                limit: settings.max_request_streams,
            });
        }
        Ok(())
    }

    /// Opens the stream of a request [`Self::check_new`] accepted and
    /// routes its id and progress token to it.
    ///
    /// # Panics
    ///
    /// Panics if `message` is not a request (`check_new` refuses those).
    pub(crate) fn open(
        &mut self,
        message: &ClientJsonRpcMessage,
        settings: &SessionSettings,
        session: &SessionId,
    ) -> &mut RequestStream {
        let JsonRpcMessage::Request(request) = message else {
            unreachable!("check_new accepts only requests");
        };
        let http_request_id = self.next_http_request_id;
        self.next_http_request_id += 1;
        self.by_request.insert(request.id.clone(), http_request_id);
        let progress_token = request.request.get_meta().get_progress_token();
        if let Some(token) = &progress_token {
            self.by_progress.insert(token.clone(), http_request_id);
        }
        self.streams
            .entry(http_request_id)
            .or_insert(RequestStream {
                events: EventStream::new(
                    Some(http_request_id),
                    crate::replay_buffer::FIRST_INDEX,
                    settings,
                    session,
                ),
                request_id: request.id.clone(),
                progress_token,
                completed: false,
            })
    }

    /// The stream a server message belongs to.
    pub(crate) fn route(&self, message: &ServerJsonRpcMessage, session: &SessionId) -> Route {
        let by_request = |id: &RequestId| self.by_request.get(id).copied();
        let to = |stream: Option<u64>, completes: bool| match stream {
            Some(http_request_id) => Route::Request {
                http_request_id,
                completes,
            },
            None => Route::Standalone,
        };
        match message {
            JsonRpcMessage::Response(response) => to(by_request(&response.id), true),
            JsonRpcMessage::Error(error) => to(error.id.as_ref().and_then(by_request), true),
            JsonRpcMessage::Request(request) => {
                let originating = request.request.extensions().get::<OriginatingRequestId>();
                let stream = originating.and_then(|originating| by_request(&originating.0));
                if originating.is_some() && stream.is_none() {
                    tracing::debug!(
                        session_id = %session,
                        "originating request already answered; server request goes to the standalone stream"
                    );
                }
                to(stream, false)
            }
            JsonRpcMessage::Notification(notification) => match &notification.notification {
                ServerNotification::ProgressNotification(progress) => to(
                    self.by_progress
                        .get(&progress.params.progress_token)
                        .copied(),
                    false,
                ),
                ServerNotification::CancelledNotification(cancelled) => to(
                    cancelled.params.request_id.as_ref().and_then(by_request),
                    false,
                ),
                _ => Route::Standalone,
            },
        }
    }

    /// Ends a request stream's HTTP response and forgets its routes; keeps
    /// its ring for late resumes.
    pub(crate) fn complete(&mut self, http_request_id: u64, settings: &SessionSettings) {
        self.finish(http_request_id, settings, false);
    }

    /// The client cancelled the request: its stream completes, but its id
    /// keeps routing to it (see the module docs).
    pub(crate) fn cancel(&mut self, http_request_id: u64, settings: &SessionSettings) {
        self.finish(http_request_id, settings, true);
    }

    fn finish(&mut self, http_request_id: u64, settings: &SessionSettings, keep_id: bool) {
        let Some(request) = self.streams.get_mut(&http_request_id) else {
            return;
        };
        if request.completed {
            // The late answer of a cancelled request: its id is free now.
            if !keep_id && self.by_request.get(&request.request_id) == Some(&http_request_id) {
                self.by_request.remove(&request.request_id);
            }
            return;
        }
        request.completed = true;
        request.events.connection = None;
        if !keep_id {
            self.by_request.remove(&request.request_id);
        }
        // A token another in-flight request reuses now routes to that one.
        if let Some(token) = &request.progress_token
            && self.by_progress.get(token) == Some(&http_request_id)
        {
            self.by_progress.remove(token);
        }
        self.completed.push_back((Instant::now(), http_request_id));
        // Completed streams kept for resumes are bounded like open ones.
        while self.completed.len() > settings.max_request_streams {
            if let Some((_, oldest)) = self.completed.pop_front() {
                self.forget(oldest);
            }
        }
    }

    /// Drops a completed stream, and the id of a cancelled request still
    /// routed to it.
    fn forget(&mut self, http_request_id: u64) {
        if let Some(request) = self.streams.remove(&http_request_id)
            && self.by_request.get(&request.request_id) == Some(&http_request_id)
        {
            self.by_request.remove(&request.request_id);
        }
    }

    /// Forgets the completed streams older than `completed_cache_ttl`.
    pub(crate) fn expire_completed(&mut self, now: Instant, settings: &SessionSettings) {
        let ttl = settings.session.completed_cache_ttl;
        while let Some(&(at, http_request_id)) = self.completed.front() {
            if now.saturating_duration_since(at) < ttl {
                break;
            }
            self.completed.pop_front();
            self.forget(http_request_id);
        }
    }
}
