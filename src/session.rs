//! The transport handed to rmcp for each session, and the lease that ties the
//! session's registry entry to it.
//!
//! # Invariant kept here
//!
//! A session whose worker ended, for any reason, is out of the registry and
//! its slot is free, at once, without a polling interval.
//!
//! # Why the transport
//!
//! `StreamableHttpService` moves the transport returned by `create_session`
//! into the task that runs the MCP handler, and that task lives exactly as
//! long as the session can do anything:
//! - when the worker stops by itself (idle `keep_alive`, `init_timeout`, an
//!   error), the transport's `receive` returns `None`; the lease closes the
//!   session right there, with the reason the worker left behind;
//! - when the handler stops (it returned or panicked, or the server shuts
//!   down), the transport is dropped and the lease closes the session;
//! - the maximum lifetime is a deadline raced against `receive`, so it needs
//!   no task or timer wheel entry of its own.
//!
//! Closing goes through [`Registry::close`] with this admission's `seq`, so a
//! lease that fires after an eviction or a DELETE (which already removed the
//! entry and cancelled the worker) does nothing, and one can never close a
//! later session that reuses the id through `restore_session`.
//!
//! # rmcp's closing call
//!
//! When a handler task ends, rmcp's service calls `close_session(id)`, by id
//! only, possibly seconds later (it first lets in-flight tool calls finish).
//! If the session was evicted and its id restored from a `SessionStore` in
//! the meantime, that call would close the *restored* session. So every
//! lease that ends leaves a marker in [`EndedHandlers`], and the manager's
//! `close_session` that finds a marker consumes it and closes nothing. A
//! client DELETE racing that call still closes the current session: of the
//! two calls, whichever comes second finds no marker. Markers count per id
//! (an id evicted twice owes two calls) and expire after a minute, so one
//! left behind by a direct user of the manager cannot swallow a later
//! DELETE.

use std::borrow::Cow;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;

use rmcp::RoleServer;
use rmcp::service::{RxJsonRpcMessage, TxJsonRpcMessage};
use rmcp::transport::streamable_http_server::session::SessionId;
use rmcp::transport::{Transport, WorkerTransport};
use tokio::time::{Instant, Sleep};
use tokio_util::sync::CancellationToken;

use crate::clients::ClientKey;
use crate::close_reason::CloseReason;
use crate::error::TransportError;
use crate::manager::Membership;
use crate::registry::{Registry, Stop};
use crate::worker::{EndCause, SessionHandle, SessionWorker};

/// What the registry keeps for a live session: the handle the request path
/// clones, and the token that stops the worker.
#[derive(Debug)]
pub(crate) struct LiveSession {
    pub(crate) handle: SessionHandle,
    pub(crate) cancel: CancellationToken,
    /// The client that created it (anonymous without the HTTP layer).
    pub(crate) owner: ClientKey,
    /// Its place in the per-client table, freed the moment the session
    /// leaves the registry (`Stop::left_registry`).
    pub(crate) membership: Option<Membership>,
}

impl Stop for LiveSession {
    fn stop(&self) {
        self.cancel.cancel();
    }

    fn left_registry(&mut self) {
        // Frees the client's quota unit now, before the slot.
        self.membership = None;
    }
}

pub(crate) type SessionRegistry = Registry<LiveSession>;

/// Ids whose handler ended and whose closing call from rmcp's service has not
/// arrived yet (see the module docs): per id, how many such calls are due and
/// when the last handler ended.
#[derive(Debug)]
pub(crate) struct EndedHandlers {
    ended: DashMap<SessionId, (u32, Instant)>,
    /// When the markers were last scanned for expiry; a full map is scanned
    /// at most once per `PRUNE_EVERY`, so recording stays O(1) amortised.
    last_prune: parking_lot::Mutex<Option<Instant>>,
    /// Markers kept at most: rmcp's closing call consumes each marker right
    /// after it is made, so only direct users of the manager that never call
    /// `close_session` leave markers behind; those expire after `WAIT`.
    limit: usize,
}

impl EndedHandlers {
    /// How long a marker waits for rmcp's closing call, which follows the
    /// handler's end after at most rmcp's 5-second drain of in-flight calls.
    const WAIT: Duration = Duration::from_secs(60);
    const PRUNE_EVERY: Duration = Duration::from_secs(1);

    pub(crate) fn new(max_sessions: usize) -> Self {
        Self {
            ended: DashMap::new(),
            last_prune: parking_lot::Mutex::new(None),
            limit: max_sessions.saturating_mul(2).max(1024),
        }
    }

    fn record(&self, id: SessionId) {
        let now = Instant::now();
        if self.ended.len() >= self.limit {
            let pruned_lately = self.last_prune.try_lock().is_none_or(|mut last| {
                let lately = last.is_some_and(|at| now.duration_since(at) < Self::PRUNE_EVERY);
                if !lately {
                    *last = Some(now);
                }
                lately
            });
            if !pruned_lately {
                self.ended
                    .retain(|_, (_, ended_at)| now.duration_since(*ended_at) < Self::WAIT);
            }
            if self.ended.len() >= self.limit {
                // Every marker is recent: keep them and skip this one, so the
                // memory stays bounded and only this session loses the
                // protection.
                return;
            }
        }
        let mut marker = self.ended.entry(id).or_insert((0, now));
        marker.0 += 1;
        marker.1 = now;
    }

    /// Consumes one due closing call for `id`; true if one was due.
    pub(crate) fn take(&self, id: &SessionId) -> bool {
        let now = Instant::now();
        let mut due = false;
        self.ended.remove_if_mut(id, |_, (count, ended_at)| {
            due = now.duration_since(*ended_at) < Self::WAIT;
            *count -= 1;
            !due || *count == 0
        });
        due
    }
}

/// The per-session transport that [`BoundedSessionManager`] gives to rmcp's
/// `StreamableHttpService`; users do not handle it directly.
///
/// It carries messages between the MCP handler and the session worker, and
/// closes the session in the manager when either side ends or the session
/// reaches its maximum lifetime. It must be driven the way rmcp's service
/// drives it (`receive` until `None`, then drop): that is how the end of the
/// worker is noticed.
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
    inner: WorkerTransport<SessionWorker>,
    lease: Lease,
    lifetime: Option<Pin<Box<Sleep>>>,
    end_cause: EndCause,
}

impl std::fmt::Debug for SessionTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionTransport")
            .field("session_id", &self.lease.id)
            .field("ended", &self.lease.ended)
            .finish_non_exhaustive()
    }
}

/// Closes admission `seq` of `id` exactly once: explicitly with a reason, or
/// on drop as [`CloseReason::HandlerEnded`].
pub(crate) struct Lease {
    registry: Arc<SessionRegistry>,
    ended_handlers: Arc<EndedHandlers>,
    id: SessionId,
    seq: u64,
    ended: bool,
}

impl Lease {
    pub(crate) fn new(
        registry: Arc<SessionRegistry>,
        ended_handlers: Arc<EndedHandlers>,
        id: SessionId,
        seq: u64,
    ) -> Self {
        Self {
            registry,
            ended_handlers,
            id,
            seq,
            ended: false,
        }
    }

    fn end(&mut self, reason: CloseReason) {
        if !self.ended {
            self.ended = true;
            self.registry.close(&self.id, Some(self.seq), reason);
            self.ended_handlers.record(self.id.clone());
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.end(CloseReason::HandlerEnded);
    }
}

impl SessionTransport {
    pub(crate) fn new(
        inner: WorkerTransport<SessionWorker>,
        end_cause: EndCause,
        lease: Lease,
        max_lifetime: Option<Duration>,
    ) -> Self {
        Self {
            inner,
            lease,
            // A lifetime too long to add to the clock never ends.
            lifetime: max_lifetime
                .and_then(|lifetime| Instant::now().checked_add(lifetime))
                .map(|deadline| Box::pin(tokio::time::sleep_until(deadline))),
            end_cause,
        }
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
        &self.lease.id
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
        self.inner.send(item)
    }

    async fn receive(&mut self) -> Option<RxJsonRpcMessage<RoleServer>> {
        let received = match self.lifetime.as_mut() {
            Some(deadline) => tokio::select! {
                received = self.inner.receive() => received,
                () = deadline.as_mut() => {
                    self.lease.end(CloseReason::MaxLifetime);
                    return None;
                }
            },
            None => self.inner.receive().await,
        };
        if received.is_none() {
            // The worker says why it stopped by itself; if it was stopped
            // (closed, evicted), the registry already knows and this is a
            // no-op.
            let reason = self
                .end_cause
                .get()
                .copied()
                .unwrap_or(CloseReason::WorkerEnded);
            self.lease.end(reason);
        }
        received
    }

    async fn close(&mut self) -> Result<(), Self::Error> {
        self.lease.end(CloseReason::HandlerEnded);
        self.inner.close().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn each_ended_handler_excuses_one_close_for_a_while() {
        let ended = EndedHandlers::new(4);
        let id: SessionId = "a".into();
        assert!(!ended.take(&id), "nothing ended: a close is a DELETE");
        // Evicted, restored and evicted again: two late closes are due.
        ended.record(id.clone());
        ended.record(id.clone());
        assert!(ended.take(&id));
        assert!(ended.take(&id));
        assert!(!ended.take(&id));
        // A marker nobody consumed does not swallow a DELETE much later.
        ended.record(id.clone());
        tokio::time::advance(EndedHandlers::WAIT).await;
        assert!(!ended.take(&id));
    }

    #[tokio::test(start_paused = true)]
    async fn markers_stay_bounded() {
        let ended = EndedHandlers::new(1);
        for n in 0..5_000 {
            ended.record(format!("s{n}").into());
        }
        assert!(ended.ended.len() <= ended.limit);
        tokio::time::advance(EndedHandlers::WAIT).await;
        ended.record("late".into());
        assert!(ended.ended.len() <= 1, "expired markers are dropped");
    }
}
