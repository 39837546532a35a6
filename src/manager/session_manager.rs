//! rmcp's `SessionManager` trait for [`BoundedSessionManager`]: what rmcp's
//! service calls for each HTTP request, mapped onto the registry, the
//! sessions and the admission checks of the parent module.

use std::sync::Arc;

use futures::{Stream, StreamExt};
use rmcp::model::{ClientJsonRpcMessage, ServerJsonRpcMessage};
use rmcp::transport::common::server_side_http::session_id;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManagerError;
use rmcp::transport::streamable_http_server::session::{
    EventStore, RestoreOutcome, ServerSseMessage, SessionId, SessionManager,
};

use super::BoundedSessionManager;
use super::restoring::{EndingWait, Restoring};
use crate::EventIdError;
use crate::close_reason::CloseReason;
use crate::error::{BoundedSessionError, TransportError};
use crate::event_id::EventId;
use crate::eviction::activity::BeginError;
use crate::eviction::activity::TrackedStream;
use crate::http;
use crate::refusal::Refusal;
use crate::session::{Origin, SessionHandle, SessionRegistry, SessionTransport};

impl SessionManager for BoundedSessionManager {
    type Error = BoundedSessionError;
    type Transport = SessionTransport;

    /// # Cancel safety
    ///
    /// Cancel safe. The only suspension point is waiting for a slot, which
    /// happens only while the cap is full and a close is in flight (its slot
    /// is about to be free); a creation that finds every slot held by
    /// sessions that are busy, or by other creations in progress, is
    /// refused at once. Dropping the future while it waits returns its
    /// rate-limit grants and quota unit and holds no slot.
    async fn create_session(&self) -> Result<(SessionId, Self::Transport), Self::Error> {
        loop {
            let admitted = self.admission().await?;
            let id = session_id();
            // A random 122-bit id that is already live would be returned
            // here; retrying is cheaper than a special error for it.
            if let Some(transport) = self.admit(admitted, id.clone(), Origin::Created, None) {
                return Ok((id, transport));
            }
        }
    }

    /// # Cancel safety
    ///
    /// Cancel safe: no lock or slot is held across its `.await`. Dropped
    /// before the request reached the session, the session waits for its
    /// handshake until `init_timeout`; dropped after, nobody can learn the
    /// session's id, so the session closes when the handler answers
    /// (`HandshakeAbandoned`), or at `init_timeout` (else at `max_lifetime`)
    /// if the handler never does: a timer task is left for that, as rmcp
    /// does not poll the transport while its handler runs `initialize`.
    /// With neither set, such a session stays until it is evicted (it is
    /// idle, so it is evicted first).
    async fn initialize_session(
        &self,
        id: &SessionId,
        message: ClientJsonRpcMessage,
    ) -> Result<ServerJsonRpcMessage, Self::Error> {
        let gone = Refusal::EvictedBeforeInitialized;
        // Busy until the handshake is answered (or this future is dropped);
        // a restore's request holds its copy busy longer, until the layer
        // answers it.
        let (handle, _busy) = self.begin(id, gone)?;
        let _abandoned = self.handshake_deadline(id, &handle);
        let answered = handle.initialize(message).await;
        if answered.is_err() && handle.shared().ended() == Some(CloseReason::InitTimeout) {
            // The handler never answered: its transport, not polled while
            // it runs `initialize`, cannot close the entry itself.
            self.registry.close(id, None, CloseReason::InitTimeout);
        }
        // With parking in memory: its entry, which rmcp fills with the
        // session's state next.
        if answered.is_ok()
            && let Some(store) = self.memory_parking()
            && let Some((generation, owner)) =
                self.registry.with_activity(id, |session, activity| {
                    (activity.generation(), session.owner.clone())
                })
        {
            store.expect(id, generation, owner, handle.shared().lifetime_end);
            // Ended in between (a DELETE, its handler): its end found no
            // entry to forget, so it is forgotten here.
            if !self.holds_generation(id, generation) {
                store.inner.closed(id, generation, false, None);
            }
        }
        answered.map_err(|error| refused(error, gone))
    }

    /// Whether session `id` is live here (and its client's, when sessions
    /// are bound); one that a close or eviction claimed is not. Under the
    /// HTTP layer, a live session found here is held busy for the rest of
    /// the request (see `http::hold`): what rmcp does with the request
    /// next reaches it, however soon `park_after` or an eviction would
    /// otherwise have ended it; with parking, a session not live here is
    /// listed as awaited by the request, which rmcp then restores or
    /// waits for (see `parking`).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it never suspends.
    async fn has_session(&self, id: &SessionId) -> Result<bool, Self::Error> {
        let found = self.registry.with_activity(id, |session, activity| {
            self.is_owner(session).then(|| activity.clone())
        });
        if !http::can_hold() {
            return Ok(found
                .flatten()
                .is_some_and(|activity| !activity.is_claimed()));
        }
        let live = match found {
            // Another client's: unknown to this one, and nothing to await.
            Some(None) => return Ok(false),
            None => false,
            Some(Some(activity)) => match activity.begin() {
                Ok(busy) => {
                    http::hold(busy);
                    true
                }
                Err(BeginError::Gone) => false,
                // Live: the request is refused when it reaches the session.
                Err(BeginError::Saturated) => true,
            },
        };
        if !live && let Some(parking) = &self.settings.parking {
            // Parked by another client, with sessions bound: answered as
            // present, so that rmcp goes straight to the session, which
            // answers `404`, instead of trying a restore, whose refusal
            // rmcp would pass on to the owner's requests for the id
            // arriving meanwhile.
            if self.bind_to_client
                && let Some(store) = &parking.memory
                && store
                    .inner
                    .parked_owner(id)
                    .is_some_and(|owner| owner != http::current_client())
            {
                return Ok(true);
            }
            // Not live: rmcp restores it next (or waits for a restore of
            // it under way), and the request then reaches it (see
            // `parking`).
            http::await_session(parking.awaiting(id, self.bind_to_client));
        }
        Ok(live)
    }

    /// Closes the session at once: removes it, frees its slot and ends it
    /// (its SSE streams end, its handler's next `receive` returns `None`). Closing an unknown or already
    /// closed session succeeds and does nothing.
    ///
    /// rmcp's service also calls this when a session's handler has ended;
    /// that call is recognised and closes nothing, so it cannot close a
    /// session restored under the same id meanwhile (see `session.rs`).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it never suspends.
    async fn close_session(&self, id: &SessionId) -> Result<(), Self::Error> {
        // A DELETE from another client of a bound session is a DELETE of an
        // unknown one: 404, and rmcp then leaves its session store alone.
        if self.bind_to_client
            && let Some(client) = http::request_client()
            && self
                .registry
                .with_session(id, |session| session.owner != client)
                == Some(true)
        {
            http::record(Refusal::SessionGone);
            return Err(LocalSessionManagerError::SessionNotFound(id.clone()).into());
        }
        // Likewise for a parked one: rmcp leaves it in the store.
        if self.bind_to_client
            && let Some(client) = http::request_client()
            && let Some(store) = self.memory_parking()
            && store
                .inner
                .parked_owner(id)
                .is_some_and(|owner| owner != client)
        {
            http::record(Refusal::SessionGone);
            return Err(LocalSessionManagerError::SessionNotFound(id.clone()).into());
        }
        // A DELETE (rmcp's own closing call runs outside the layer)
        // forgets a parked entry before it closes the live copy, which
        // rmcp's DELETE otherwise does after: a restore that took the
        // entry before then either finds it gone when it commits, or has
        // its copy in the registry by now, closed just below.
        if http::can_hold()
            && let Some(store) = self.memory_parking()
        {
            store.inner.remove(id);
        }
        if !self.late_close_markers.take(id) {
            self.registry.close(id, None, CloseReason::Closed);
        }
        Ok(())
    }

    /// Opens the request's SSE stream and hands the request to the session,
    /// under the session's lock, without waiting on any task.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: no lock or slot is held across its `.await`. Dropped
    /// after the session took the request, the request still runs and its
    /// answers are kept for a resume (`Last-Event-ID`).
    async fn create_stream(
        &self,
        id: &SessionId,
        message: ClientJsonRpcMessage,
    ) -> Result<impl Stream<Item = ServerSseMessage> + Send + Sync + 'static, Self::Error> {
        let gone = Refusal::SessionGone;
        let (handle, busy) = self.begin_stream(id, gone)?;
        let stream = handle
            .request(message)
            .await
            .map_err(|error| refused(error, gone))?;
        Ok(TrackedStream::busy(stream, busy))
    }

    /// # Cancel safety
    ///
    /// Cancel safe: no lock or slot is held across its `.await`; the message
    /// is delivered or not at all.
    async fn accept_message(
        &self,
        id: &SessionId,
        message: ClientJsonRpcMessage,
    ) -> Result<(), Self::Error> {
        let gone = Refusal::SessionGone;
        let (handle, _busy) = self.begin(id, gone)?;
        handle
            .accept(message)
            .await
            .map_err(|error| refused(error, gone))
    }

    /// The standalone (GET) stream. If the previous one is still connected,
    /// this one is a shadow that only gets keep-alives (as rmcp's local
    /// session manager);
    /// otherwise it takes over and first replays the kept notifications the
    /// previous one did not hand out.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: no lock or slot is held across its `.await`.
    async fn create_standalone_stream(
        &self,
        id: &SessionId,
    ) -> Result<impl Stream<Item = ServerSseMessage> + Send + Sync + 'static, Self::Error> {
        let gone = Refusal::SessionGone;
        let (handle, busy) = self.begin_stream(id, gone)?;
        let stream = handle
            .standalone()
            .await
            .map_err(|error| refused(error, gone))?;
        Ok(TrackedStream::listening(stream, busy.into_listening()))
    }

    /// Replays the kept events that followed `last_event_id` on its stream,
    /// then goes on with that stream (a completed request's stream ends
    /// after the replay); see README's "Replay and memory" for late and
    /// ahead ids. A malformed id, an unknown request stream or an id ahead
    /// of a request stream is an error, which rmcp answers with an empty
    /// stream. With an external `EventStore`, the store replays instead,
    /// and only ids of this session's own streams (another session's id is
    /// an error).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: no lock or slot is held across its `.await`.
    async fn resume(
        &self,
        id: &SessionId,
        last_event_id: String,
    ) -> Result<impl Stream<Item = ServerSseMessage> + Send + Sync + 'static, Self::Error> {
        if let Some(store) = &self.settings.event_store {
            // A resume is activity, for the eviction order and the idle
            // timeout alike (a client polling a long, silent call keeps its
            // session). A session bound to another client is unknown here
            // as everywhere, and so is one that ended after rmcp's
            // `has_session`: its events are not replayed any more.
            let owned = self
                .registry
                .with_activity(id, |session, activity| {
                    self.is_owner(session)
                        .then(|| (session.handle.clone(), activity.clone()))
                })
                .flatten();
            let Some((handle, activity)) = owned else {
                http::record(Refusal::SessionGone);
                return Err(LocalSessionManagerError::SessionNotFound(id.clone()).into());
            };
            activity.touch();
            handle.shared().note_activity();
            // The stores' ids begin with their stream's name, and a
            // session's streams' names with its id and a colon: an id
            // without one is no stored id at all.
            if !last_event_id.contains(':') {
                return Err(EventIdError::Malformed.into());
            }
            if !crate::session::is_event_of(id, &last_event_id) {
                return Err(EventIdError::OtherSession.into());
            }
            let replay = store
                .store()
                .replay_events_after(&last_event_id)
                .await
                .map_err(TransportError::EventStore)?;
            return Ok(replay.left_stream());
        }
        let gone = Refusal::SessionGone;
        let last_seen = EventId::parse(&last_event_id)?;
        let (handle, busy) = self.begin_stream(id, gone)?;
        let stream = handle
            .resume(last_seen)
            .await
            .map_err(|error| refused(error, gone))?;
        // A request's stream keeps the session busy while it lasts; the
        // standalone stream is a stream like a GET's.
        let stream = match last_seen.stream {
            Some(_) => TrackedStream::busy(stream, busy),
            None => TrackedStream::listening(stream, busy.into_listening()),
        };
        Ok(stream.right_stream())
    }

    /// Re-admits a session known to rmcp's `SessionStore`. It is admitted
    /// like a creation: it takes a slot (evicting an idle session when
    /// full) and counts against the rate limits and its client's quota, so
    /// replaying stored ids cannot evict sessions faster than creating new
    /// ones could.
    ///
    /// One restore of an id runs at a time: a second one while the first is
    /// under way answers `AlreadyPresent` at once, without admitting
    /// anything (rmcp's service never does this: it serializes restores of
    /// an id itself). Two admissions for one id would each take a slot,
    /// evicting for it at a full cap, and only one could keep it: a
    /// refused restore would have cost another session its place. A
    /// session that a close is removing at this very moment counts as gone
    /// (as for [`SessionManager::has_session`]): the restore waits for
    /// that removal, then admits the id anew.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe, as [`SessionManager::create_session`]; the id is free
    /// for another restore once the future is dropped.
    async fn restore_session(
        &self,
        id: SessionId,
    ) -> Result<RestoreOutcome<Self::Transport>, Self::Error> {
        let Some(_restoring) = Restoring::claim(&self.restoring, &id) else {
            return Ok(RestoreOutcome::AlreadyPresent);
        };
        // A DELETE on this instance since rmcp loaded the session wins (a
        // copy restored anyway, by a DELETE racing this check, is ended by
        // the stores' upkeep).
        #[cfg(feature = "redis")]
        if self.store_refuses_restore(&id) {
            http::record(Refusal::SessionGone);
            return Err(LocalSessionManagerError::SessionNotFound(id).into());
        }
        let mut ending = EndingWait::new();
        loop {
            match self.registry.with_activity(&id, |session, activity| {
                (self.is_owner(session), activity.is_claimed())
            }) {
                None => break,
                // Live, but bound to another client: as unknown as can be.
                Some((false, _)) => {
                    http::record(Refusal::SessionGone);
                    return Err(LocalSessionManagerError::SessionNotFound(id).into());
                }
                Some((true, false)) => return Ok(RestoreOutcome::AlreadyPresent),
                // Claimed by a close or a park that removes it in a
                // moment, within one synchronous step of another thread
                // (unless that thread is preempted: `EndingWait`).
                Some((true, true)) => {
                    // Still mapped after the wait: answered as present
                    // rather than admitted, which could evict a session
                    // for an insert that would fail.
                    if !ending.wait().await {
                        return Ok(RestoreOutcome::AlreadyPresent);
                    }
                }
            }
        }
        // Parked in memory: taken out of the store's bound and deadline
        // until admitted (given back if refused), and only by its owner
        // when sessions are bound.
        let pin = match self.memory_parking() {
            Some(store) => Some(self.pin_parked(store, &id).await?),
            None => None,
        };
        let admitted = self.admission().await?;
        // A parked session keeps its first copy's lifetime: parking and
        // restoring it does not extend it.
        let lifetime_end = pin.as_ref().and_then(|pin| pin.lifetime_end());
        Ok(
            match self.admit(admitted, id.clone(), Origin::Restored, lifetime_end) {
                Some(transport) => {
                    // The request that restores it is on its way to it.
                    if http::can_hold()
                        && let Some(Ok(busy)) = self
                            .registry
                            .with_activity(&id, |_, activity| activity.begin())
                    {
                        http::hold(busy);
                    }
                    if let Some(pin) = pin
                        && let Some(generation) = self
                            .registry
                            .with_activity(&id, |_, activity| activity.generation())
                    {
                        // Deleted while admitted (rmcp's DELETE closed the
                        // live copy, found none yet, then removed the
                        // entry): the DELETE wins.
                        if !pin.commit(generation) {
                            self.registry
                                .close(&id, Some(generation), CloseReason::Closed);
                            http::record(Refusal::SessionGone);
                            return Err(LocalSessionManagerError::SessionNotFound(id).into());
                        }
                        // Evicted before the commit (idle in its handshake, at
                        // a full cap; only outside the layer, which holds it
                        // busy): its end found the entry still the restore's
                        // and left it, so it is parked here.
                        if !self.holds_generation(&id, generation)
                            && let Some(store) = self.memory_parking()
                        {
                            store.inner.closed(&id, generation, true, lifetime_end);
                        }
                        if let Some(parking) = &self.settings.parking {
                            parking.restored(&id);
                        }
                    }
                    RestoreOutcome::Restored(transport)
                }
                // Only under a caller that restores outside rmcp's own
                // serialization, racing an insert: everything went back.
                None => RestoreOutcome::AlreadyPresent,
            },
        )
    }

    /// The store of every stream (the builder's `event_store` or `redis`),
    /// else the store of stateless streams only
    /// (`stateless_event_store`), if any. rmcp uses it for the streams of
    /// protocol 2026-07-28 only (sessions use the first one directly); its
    /// replays never return a session's events.
    fn event_store(&self) -> Option<Arc<dyn EventStore>> {
        self.stateless_event_store.clone()
    }
}

impl BoundedSessionManager {
    /// Whether the registry holds copy `generation` of `id`.
    fn holds_generation(&self, id: &SessionId, generation: u64) -> bool {
        self.registry
            .with_activity(id, |_, activity| activity.generation() == generation)
            == Some(true)
    }

    /// The in-memory store sessions are parked in, if any.
    fn memory_parking(&self) -> Option<&crate::store::MemorySessionStore> {
        self.settings.parking.as_ref()?.memory.as_ref()
    }

    /// Takes parked session `id` for its restore (see `parking`): waits
    /// briefly for a copy that is ending to be parked (`EndingWait`); refuses (as
    /// unknown) one that is not parked, or was created by another client
    /// when sessions are bound to their client.
    async fn pin_parked(
        &self,
        store: &crate::store::MemorySessionStore,
        id: &SessionId,
    ) -> Result<crate::store::memory_sessions::Pin, BoundedSessionError> {
        use crate::store::memory_sessions::NotParked;
        let gone = || {
            http::record(Refusal::SessionGone);
            BoundedSessionError::from(LocalSessionManagerError::SessionNotFound(id.clone()))
        };
        let mut ending = EndingWait::new();
        let pin = loop {
            match store.inner.pin(id) {
                Ok(pin) => break pin,
                Err(NotParked::Live) if ending.wait().await => {}
                Err(_) => return Err(gone()),
            }
        };
        if self.bind_to_client && *pin.owner() != http::current_client() {
            return Err(gone());
        }
        Ok(pin)
    }

    /// What ends session `id` at its handshake's deadline if its
    /// `initialize_session` future is dropped while the handler hangs in
    /// `initialize`; `None` without a deadline.
    fn handshake_deadline(
        &self,
        id: &SessionId,
        handle: &SessionHandle,
    ) -> Option<HandshakeDeadline> {
        let shared = handle.shared();
        let at = match (shared.init_deadline(), shared.lifetime_end) {
            (Some(init), Some(lifetime)) => init.min(lifetime),
            (at, None) | (None, at) => at?,
        };
        let generation = self
            .registry
            .with_activity(id, |_, activity| activity.generation())?;
        Some(HandshakeDeadline {
            registry: self.registry.clone(),
            handle: handle.clone(),
            generation,
            at,
        })
    }
}

/// Armed while a handshake is awaited: dropped with the future before the
/// answer (the client hung up), it leaves a timer that ends the session at
/// `at` unless the handshake completed by then.
struct HandshakeDeadline {
    registry: Arc<SessionRegistry>,
    handle: SessionHandle,
    generation: u64,
    at: tokio::time::Instant,
}

impl Drop for HandshakeDeadline {
    fn drop(&mut self) {
        if !self.handle.shared().handshake_pending() {
            return;
        }
        // No runtime (dropped outside one): the session stays until evicted.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let (registry, handle, generation, at) = (
            self.registry.clone(),
            self.handle.clone(),
            self.generation,
            self.at,
        );
        runtime.spawn(async move {
            tokio::time::sleep_until(at).await;
            if handle.shared().handshake_pending() {
                let reason = CloseReason::InitTimeout;
                handle.shared().end(reason);
                registry.close(handle.id(), Some(generation), reason);
            }
        });
    }
}

/// Records for the HTTP layer why the session refused a request: a session
/// that is gone means it ended under the request (answered as `gone`).
fn refused(error: BoundedSessionError, gone: Refusal) -> BoundedSessionError {
    if let Some(refusal) = Refusal::of_session_error(&error, gone) {
        http::record(refusal);
    }
    error
}
