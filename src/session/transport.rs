//! The transport handed to rmcp's service for each session: the MCP
//! handler's side of the session.
//!
//! # Invariants kept here
//!
//! - The session ends with the right reason at its first deadline: no
//!   `initialize` answered within `init_timeout`, no message for the idle
//!   timeout, the maximum lifetime. One timer serves all three, pushed back
//!   lazily when it fires, so a message costs no timer-wheel update.
//! - When the session ends for any reason, `receive` returns `None`, which
//!   ends rmcp's handler task; when that task ends (the handler returned or
//!   panicked, the server shuts down), the transport is dropped and the
//!   session closes.
//!
//! # Why no task of its own
//!
//! rmcp's service already runs one task per session, which polls `receive`
//! and calls `send` in the handler's order. Routing inside `send` (see
//! [`Shared::route_from_handler`]) and reading the inbox inside `receive`
//! need nothing more: no worker task, no channel between it and the
//! handler, and one task crossing less for every message.

use std::borrow::Cow;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use rmcp::RoleServer;
use rmcp::service::{RxJsonRpcMessage, TxJsonRpcMessage};
use rmcp::transport::Transport;
use rmcp::transport::streamable_http_server::session::SessionId;
use tokio::time::{Instant, Sleep};

use super::live::Lease;
use super::shared::{Deadline, Shared};
use crate::close_reason::CloseReason;
use crate::error::TransportError;

/// The per-session transport that [`BoundedSessionManager`] gives to rmcp's
/// `StreamableHttpService`; users do not handle it directly.
///
/// It carries messages between the MCP handler and the session's streams,
/// and closes the session in the manager when either side ends or the
/// session reaches a deadline. It must be driven the way rmcp's service
/// drives it (`receive` until `None`, then drop): that is how the deadlines
/// are noticed.
///
/// # Example
///
/// ```no_run
/// use mcp_bounded_session::{BoundedSessionManager, SessionConfig};
/// use rmcp::transport::streamable_http_server::session::SessionManager;
///
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// let manager = BoundedSessionManager::new(SessionConfig::default(), 10);
/// // What StreamableHttpService does on `initialize`:
/// let (id, transport) = manager.create_session().await?;
/// assert!(manager.has_session(&id).await?);
/// drop(transport); // the handler went away: the session is closed
/// assert!(!manager.has_session(&id).await?);
/// # Ok(()) }
/// ```
///
/// [`BoundedSessionManager`]: crate::BoundedSessionManager
pub struct SessionTransport {
    shared: Arc<Shared>,
    /// `None` only in unit tests that run a session without a registry.
    lease: Option<Lease>,
    /// The earliest deadline not yet checked; re-armed when it fires.
    timer: Pin<Box<Sleep>>,
    max_lifetime_at: Option<Instant>,
}

impl std::fmt::Debug for SessionTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionTransport")
            .field("session_id", &self.shared.id)
            .field("ended", &self.shared.ended())
            .finish_non_exhaustive()
    }
}

impl SessionTransport {
    pub(crate) fn new(shared: Arc<Shared>, lease: Option<Lease>) -> Self {
        let max_lifetime_at = shared.lifetime_end;
        let mut transport = Self {
            shared,
            lease,
            timer: Box::pin(tokio::time::sleep_until(far_future())),
            max_lifetime_at,
        };
        match transport.check_deadlines(Instant::now()) {
            Deadline::CheckAt(first) => transport.timer.as_mut().reset(first),
            // Noticed at the first `receive`.
            Deadline::Passed(_) | Deadline::Park => transport.timer.as_mut().reset(Instant::now()),
            Deadline::Never => {}
        }
        transport
    }

    /// The session this transport serves.
    ///
    /// ```no_run
    /// # use mcp_bounded_session::{BoundedSessionManager, SessionConfig};
    /// # use rmcp::transport::streamable_http_server::session::SessionManager;
    /// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
    /// # let manager = BoundedSessionManager::new(SessionConfig::default(), 10);
    /// let (id, transport) = manager.create_session().await?;
    /// assert_eq!(transport.session_id(), &id);
    /// # Ok(()) }
    /// ```
    pub fn session_id(&self) -> &SessionId {
        &self.shared.id
    }

    /// Whether the session reached a deadline by `now`, else when to look
    /// again.
    fn check_deadlines(&self, now: Instant) -> Deadline {
        let lifetime = match self.max_lifetime_at {
            Some(at) if at <= now => return Deadline::Passed(CloseReason::MaxLifetime),
            lifetime => lifetime,
        };
        match (self.shared.timeout_check(now), lifetime) {
            (Deadline::CheckAt(at), Some(end)) => Deadline::CheckAt(at.min(end)),
            (Deadline::Never, Some(end)) => Deadline::CheckAt(end),
            (other, _) => other,
        }
    }

    /// Ends the session, the registry entry included.
    fn end(&mut self, reason: CloseReason) {
        self.shared.end(reason);
        // The registry hears the reason the session ended with (it may have
        // ended before, by its handshake, say).
        let reason = self.shared.ended().unwrap_or(reason);
        if let Some(lease) = &mut self.lease {
            lease.end(reason);
        }
    }

    /// Whether a deadline has passed (then the session has ended); else
    /// the timer is armed for the next one.
    fn deadline_passed(&mut self, cx: &mut std::task::Context<'_>) -> bool {
        while self.timer.as_mut().poll(cx).is_ready() {
            match self.check_deadlines(Instant::now()) {
                Deadline::Passed(reason) => {
                    tracing::debug!(session_id = %self.shared.id, %reason, "session reached a deadline");
                    self.end(reason);
                    return true;
                }
                Deadline::Park => {
                    if self.lease.as_mut().is_some_and(Lease::park) {
                        tracing::debug!(session_id = %self.shared.id, "idle session parked");
                        return true;
                    }
                    // Busy or listening: look again a park interval later,
                    // or at the idle timeout or the maximum lifetime if
                    // sooner.
                    let after = self
                        .shared
                        .settings
                        .parking
                        .as_ref()
                        .and_then(|parking| parking.park_after)
                        .unwrap_or(Duration::from_secs(1));
                    let again = [self.shared.idle_deadline(), self.max_lifetime_at]
                        .into_iter()
                        .flatten()
                        .fold(Instant::now() + after, Instant::min);
                    self.timer.as_mut().reset(again);
                }
                Deadline::CheckAt(at) => self.timer.as_mut().reset(at),
                Deadline::Never => self.timer.as_mut().reset(far_future()),
            }
        }
        false
    }
}

impl Transport<RoleServer> for SessionTransport {
    type Error = TransportError;

    fn name() -> Cow<'static, str> {
        "BoundedSessionTransport".into()
    }

    fn send(
        &mut self,
        item: TxJsonRpcMessage<RoleServer>,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send + 'static {
        // Routed now, in the handler's order; only the wait is left to the
        // future, which rmcp may run as a task of its own.
        let routed = self.shared.route_from_handler(item);
        let shared = self.shared.clone();
        async move { shared.finish_send(routed).await }
    }

    /// # Cancel safety
    ///
    /// Cancel safe (rmcp's service drops it whenever another event comes
    /// first): a message leaves the inbox only when this returns it.
    async fn receive(&mut self) -> Option<RxJsonRpcMessage<RoleServer>> {
        std::future::poll_fn(|cx| {
            // Deadlines first: a client that keeps the inbox full must not
            // outlive them.
            if self.deadline_passed(cx) {
                return Poll::Ready(None);
            }
            if let Poll::Ready(received) = self.shared.poll_receive(cx) {
                if received.is_none() {
                    // Ended from outside (closed, evicted: then the registry
                    // knows already and this is a no-op) or by its handshake.
                    let reason = self.shared.ended().unwrap_or(CloseReason::HandlerEnded);
                    self.end(reason);
                }
                return Poll::Ready(received);
            }
            Poll::Pending
        })
        .await
    }

    async fn close(&mut self) -> Result<(), Self::Error> {
        self.end(CloseReason::HandlerEnded);
        Ok(())
    }
}

impl Drop for SessionTransport {
    fn drop(&mut self) {
        self.end(CloseReason::HandlerEnded);
    }
}

fn far_future() -> Instant {
    // About 30 years, as tokio's own "never" deadlines.
    Instant::now() + Duration::from_secs(86_400 * 365 * 30)
}
