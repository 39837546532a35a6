//! What ties a live session's registry entry to its transport: the entry
//! the registry keeps, and the lease that closes the entry when the
//! transport ends.
//!
//! # Invariant kept here
//!
//! A session whose transport ended, for any reason, is out of the registry
//! and its slot is free, at once, without a polling interval.
//!
//! Closing goes through [`Registry::close`] with this admission's number, so
//! a lease that fires after an eviction or a DELETE (which already removed
//! the entry and ended the session) does nothing, and one can never close a
//! later session that reuses the id through `restore_session`.
//!
//! # rmcp's closing call
//!
//! When a handler task ends, rmcp's service calls `close_session(id)`, by id
//! only, possibly seconds later (it first lets in-flight tool calls finish).
//! If the session was evicted and its id restored from a `SessionStore` in
//! the meantime, that call would close the *restored* session. So every
//! lease that ends leaves a marker in [`LateCloseMarkers`], and the manager's
//! `close_session` that finds a marker consumes it and closes nothing. A
//! client DELETE racing that call still closes the current session: of the
//! two calls, whichever comes second finds no marker. Markers count per id
//! (an id evicted twice owes two calls) and expire after a minute, so one
//! left behind by a direct user of the manager cannot swallow a later
//! DELETE.

use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use rmcp::transport::streamable_http_server::session::SessionId;
use tokio::time::Instant;

use super::SessionHandle;
use crate::clients::ClientKey;
use crate::close_reason::CloseReason;
use crate::manager::Membership;
use crate::registry::{Registry, Stop};

/// What the registry keeps for a live session: the handle the request path
/// clones, which also ends the session.
#[derive(Debug)]
pub(crate) struct LiveSession {
    pub(crate) handle: SessionHandle,
    /// The client that created it (anonymous without the HTTP layer).
    pub(crate) owner: ClientKey,
    /// Its place in the per-client table, freed the moment the session
    /// leaves the registry (`Stop::left_registry`).
    pub(crate) membership: Option<Membership>,
}

impl Stop for LiveSession {
    fn stop(&self, reason: CloseReason, generation: u64) {
        let shared = self.handle.shared();
        shared.end(reason);
        // With parking, the session store hears how this copy ended.
        if let Some(parking) = &shared.settings.parking {
            parking.closed(&shared.id, generation, reason, shared.restorable_until());
        }
    }

    fn claim_if_quiet(&self, claim: &mut dyn FnMut() -> bool) -> bool {
        let shared = self.handle.shared();
        // A request on its way to it, from a lookup that found it parked.
        if let Some(parking) = &shared.settings.parking
            && parking.is_awaited(&shared.id)
        {
            return false;
        }
        shared.claim_if_quiet(claim)
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
pub(crate) struct LateCloseMarkers {
    /// Hashed with foldhash, as the registry's map (see `crate::sync`):
    /// its keys are ids of sessions that existed, which clients do not
    /// choose.
    ended: DashMap<SessionId, (u32, Instant), foldhash::fast::RandomState>,
    /// When the markers were last scanned for expiry; a full map is scanned
    /// at most once per `PRUNE_EVERY`, so recording stays O(1) amortised.
    last_prune: parking_lot::Mutex<Option<Instant>>,
    /// Markers kept at most: rmcp's closing call consumes each marker right
    /// after it is made, so only direct users of the manager that never call
    /// `close_session` leave markers behind; those expire after `WAIT`.
    limit: usize,
}

impl LateCloseMarkers {
    /// How long a marker waits for rmcp's closing call, which follows the
    /// handler's end after at most rmcp's 5-second drain of in-flight calls.
    const WAIT: Duration = Duration::from_secs(60);
    const PRUNE_EVERY: Duration = Duration::from_secs(1);

    pub(crate) fn new(max_sessions: usize) -> Self {
        Self {
            ended: DashMap::default(),
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

/// Closes admission `seq` of `id` exactly once: explicitly with a reason, or
/// on drop as [`CloseReason::HandlerEnded`].
#[derive(Debug)]
pub(crate) struct Lease {
    registry: Arc<SessionRegistry>,
    late_close_markers: Arc<LateCloseMarkers>,
    id: SessionId,
    seq: u64,
    ended: bool,
}

impl Lease {
    pub(crate) fn new(
        registry: Arc<SessionRegistry>,
        late_close_markers: Arc<LateCloseMarkers>,
        id: SessionId,
        seq: u64,
    ) -> Self {
        Self {
            registry,
            late_close_markers,
            id,
            seq,
            ended: false,
        }
    }

    pub(crate) fn end(&mut self, reason: CloseReason) {
        if !self.ended {
            self.ended = true;
            self.registry.close(&self.id, Some(self.seq), reason);
            self.late_close_markers.record(self.id.clone());
        }
    }

    /// Parks the session ([`SessionRegistry::park`]) unless a request of
    /// it is in flight or a stream of it open; whether it did (then the
    /// lease is over).
    pub(crate) fn park(&mut self) -> bool {
        if self.ended || !self.registry.park(&self.id, self.seq) {
            return false;
        }
        self.ended = true;
        self.late_close_markers.record(self.id.clone());
        true
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.end(CloseReason::HandlerEnded);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn each_ended_handler_excuses_one_close_for_a_while() {
        let ended = LateCloseMarkers::new(4);
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
        tokio::time::advance(LateCloseMarkers::WAIT).await;
        assert!(!ended.take(&id));
    }

    #[tokio::test(start_paused = true)]
    async fn markers_stay_bounded() {
        let ended = LateCloseMarkers::new(1);
        for n in 0..5_000 {
            ended.record(format!("s{n}").into());
        }
        assert!(ended.ended.len() <= ended.limit);
        tokio::time::advance(LateCloseMarkers::WAIT).await;
        ended.record("late".into());
        assert!(ended.ended.len() <= 1, "expired markers are dropped");
    }
}
