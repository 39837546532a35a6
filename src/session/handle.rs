//! The public handle on a live session, for the request path and for a
//! server that closes a stream from its side.

use std::sync::Arc;
use std::time::Duration;

use rmcp::model::{ClientJsonRpcMessage, RequestId, ServerJsonRpcMessage};

use super::StreamTarget;
use super::connection::SseResponse;
use super::shared::Shared;
use crate::SessionId;
use crate::error::BoundedSessionError;
use crate::event_id::EventId;

/// A handle on one live session: what the manager uses on the request
/// path, and what a server uses to close a stream from its side.
///
/// Get one with
/// [`BoundedSessionManager::session`](crate::BoundedSessionManager::session).
/// Cloning is cheap (a reference count); a handle outliving its session
/// gets "session not found" errors.
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
    shared: Arc<Shared>,
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
        &self.shared.id
    }

    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }

    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    pub(crate) async fn initialize(
        &self,
        request: ClientJsonRpcMessage,
    ) -> Result<ServerJsonRpcMessage, BoundedSessionError> {
        self.shared.initialize(request).await
    }

    pub(crate) async fn request(
        &self,
        request: ClientJsonRpcMessage,
    ) -> Result<SseResponse, BoundedSessionError> {
        self.shared.request(request).await
    }

    pub(crate) async fn accept(
        &self,
        message: ClientJsonRpcMessage,
    ) -> Result<(), BoundedSessionError> {
        self.shared.accept(message).await
    }

    pub(crate) async fn standalone(&self) -> Result<SseResponse, BoundedSessionError> {
        self.shared.standalone().await
    }

    pub(crate) async fn resume(
        &self,
        last_seen: EventId,
    ) -> Result<SseResponse, BoundedSessionError> {
        self.shared.resume(last_seen).await
    }

    /// Queues on the standalone stream an event another instance stored
    /// there (Redis stores: `store::redis::relay`); `false` if the
    /// client's queue was full and the event was dropped here. See
    /// `Shared::push_stored_elsewhere`.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn push_stored_elsewhere(
        &self,
        event: rmcp::transport::streamable_http_server::session::ServerSseMessage,
    ) -> bool {
        self.shared.push_stored_elsewhere(event)
    }

    /// Closes the SSE stream of HTTP request `http_request_id` (the number
    /// after the `/` in its event ids), as rmcp's
    /// `LocalSessionHandle::close_sse_stream`: with `retry`, a last event
    /// tells the client when to reconnect. The request goes on; what it
    /// sends next is kept for the client's `GET` with `Last-Event-ID`.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: without `retry` it does not wait. With `retry`, dropped
    /// while it waits, the stream stays open and the `retry` event stays
    /// routed: queued to the client already if it waited for a slow client
    /// to make room (at most the stall limit); with an event store, queued
    /// for the store, and stored and sent by the session's next send (an
    /// ended session drops it).
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
        self.shared
            .close_stream(StreamTarget::Http(http_request_id), retry)
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
        self.shared
            .close_stream(StreamTarget::Request(request_id), retry)
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
        self.shared
            .close_stream(StreamTarget::Standalone, retry)
            .await
    }
}
