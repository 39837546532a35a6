//! Parking: a session the manager lets go of while its client may come
//! back (evicted, or idle for `park_after`) stays in a session store, and
//! its next request restores it through rmcp's restore path instead of
//! answering `404`.
//!
//! # Invariants kept here
//!
//! - A session is parked only when its live copy ended by eviction,
//!   `park_after` or a drain; every other end (idle timeout, maximum
//!   lifetime, DELETE, its handler stopping) forgets it: those are ends
//!   for good. A parked entry is restorable until the session's idle
//!   deadline or the end of its lifetime, and a restored copy keeps its
//!   first copy's lifetime end (the memory store keeps it with the
//!   entry): parking cannot extend a lifetime.
//! - `park_after` never parks a session with a request in flight or a
//!   stream open: the registry claims it only if no request is in flight
//!   (one word with the claim bit, `eviction::activity`), under the
//!   session's lock and only if no `GET` response is open (a `GET` opens
//!   its response under that lock while its request holds the session
//!   busy; `Shared::claim_if_quiet`). Behind the HTTP layer, a request is
//!   in flight from the moment rmcp finds its session (`has_session`) or
//!   restores it: the request holds the session busy until its stream
//!   takes the mark over or the layer answers (`http::hold`), so the
//!   session cannot be parked or evicted between rmcp's lookup and the
//!   request reaching it (which would answer `404` for a session that was
//!   live). A request that finds its session not live (parked, or being
//!   parked) either restores it or waits for another request's restore of
//!   it (rmcp runs one restore of an id at a time), then reaches it: from
//!   its lookup until it ends, it is listed as awaiting the session
//!   (`Parking::awaiting`), and `park_after` does not park a session
//!   awaited by a request (`Parking::is_awaited`, looked at when the park
//!   claims the session). A waiter wakes when the restore is complete,
//!   and may reach the session after the restoring request is done with
//!   it: without the list, an idle restored copy could be parked again in
//!   between. And rmcp forgets a finished restore only in a task of its
//!   own, until which a request for the id is told the session was
//!   restored without a restore of its own: a restored copy's
//!   `park_after` is 100 ms at least (`RESTORED_STAYS`, in
//!   `session::shared`), so such a request finds it. An eviction at a
//!   full cap can still take an idle restored copy a waiter has not
//!   reached (it is the most recently active session, so evicted last).
//! - A restore that finds the session's copy still ending (out of the
//!   registry, not yet parked) waits for it to be parked, by time, not by
//!   a number of yields: the ending thread may be preempted in between.
//! - A restore takes the parked entry out of the store's bound and
//!   deadline (`Pin`) before it is admitted, and gives it back if
//!   refused: a refused restore (`429`, `503`) loses nothing, and the
//!   client's next try can succeed. With sessions bound to their client,
//!   only the client that created a parked session restores or DELETEs
//!   it.
//! - The hooks run after the store changed, outside its locks, and a
//!   panicking hook is logged and changes nothing.

use std::panic::{self, AssertUnwindSafe};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use dashmap::DashMap;
use rmcp::transport::streamable_http_server::session::SessionId;
use tokio::time::Instant;

use crate::close_reason::CloseReason;
use crate::store::MemorySessionStore;
use crate::store::memory_sessions::Parked;

/// The hook called with each parked session.
pub(crate) type ParkHook = Arc<dyn Fn(&SessionId, CloseReason) + Send + Sync>;
/// The hook called with each restored session.
pub(crate) type RestoreHook = Arc<dyn Fn(&SessionId) + Send + Sync>;

/// A manager's parking settings and store.
pub(crate) struct Parking {
    /// The in-memory store; `None` when the Redis stores keep parked
    /// sessions (their key outlives the live copy by itself).
    pub(crate) memory: Option<MemorySessionStore>,
    pub(crate) park_after: Option<Duration>,
    pub(crate) on_park: Option<ParkHook>,
    pub(crate) on_restore: Option<RestoreHook>,
    /// Whether the warning about a store rmcp was not given was logged.
    warned_no_state: AtomicBool,
    /// Requests on their way to each session that was not live when they
    /// looked it up (module docs). Keyed by ids requests name, so hashed
    /// with the standard library's keyed hasher.
    awaited: DashMap<SessionId, usize>,
}

impl std::fmt::Debug for Parking {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Parking")
            .field("memory", &self.memory.is_some())
            .field("park_after", &self.park_after)
            .finish_non_exhaustive()
    }
}

impl Parking {
    pub(crate) fn new(
        memory: Option<MemorySessionStore>,
        park_after: Option<Duration>,
        on_park: Option<ParkHook>,
        on_restore: Option<RestoreHook>,
    ) -> Self {
        Self {
            memory,
            park_after,
            on_park,
            on_restore,
            warned_no_state: AtomicBool::new(false),
            awaited: DashMap::new(),
        }
    }

    /// Lists the current request as awaiting session `id` until the
    /// returned guard drops.
    /// `owner_only`: whether sessions are bound to their client.
    pub(crate) fn awaiting(self: &Arc<Self>, id: &SessionId, owner_only: bool) -> Awaiting {
        *self.awaited.entry(id.clone()).or_insert(0) += 1;
        Awaiting {
            parking: self.clone(),
            id: id.clone(),
            owner_only,
        }
    }

    /// Whether a request is on its way to session `id` (module docs).
    pub(crate) fn is_awaited(&self, id: &SessionId) -> bool {
        self.awaited.contains_key(id)
    }

    /// Copy `generation` of session `id` ended for `reason`, idle until
    /// `idle_deadline` at most: parked or forgotten (module docs).
    pub(crate) fn closed(
        &self,
        id: &SessionId,
        generation: u64,
        reason: CloseReason,
        idle_deadline: Option<Instant>,
    ) {
        let parks = matches!(
            reason,
            CloseReason::Evicted | CloseReason::Parked | CloseReason::Drained
        );
        let parked = match &self.memory {
            Some(store) => match store.inner.closed(id, generation, parks, idle_deadline) {
                Parked::Yes => true,
                Parked::NotHere => false,
                Parked::NoState => {
                    if !self.warned_no_state.swap(true, Ordering::Relaxed) {
                        tracing::warn!(
                            session_id = %id,
                            "a session could not be parked: its state never reached the \
                             MemorySessionStore (give the store to rmcp's \
                             StreamableHttpServerConfig::session_store too)"
                        );
                    }
                    false
                }
            },
            // The Redis stores keep the session's key after its copy ends.
            None => parks,
        };
        if parked {
            tracing::debug!(session_id = %id, %reason, "session parked");
            call_hook("on_park", id, || {
                if let Some(hook) = &self.on_park {
                    hook(id, reason);
                }
            });
        }
    }

    /// A parked session was restored.
    pub(crate) fn restored(&self, id: &SessionId) {
        tracing::debug!(session_id = %id, "parked session restored");
        call_hook("on_restore", id, || {
            if let Some(hook) = &self.on_restore {
                hook(id);
            }
        });
    }
}

/// A request listed as awaiting a session (see [`Parking::awaiting`]).
pub(crate) struct Awaiting {
    parking: Arc<Parking>,
    id: SessionId,
    /// Whether sessions are bound to their client.
    owner_only: bool,
}

impl Awaiting {
    /// Whether the memory store still keeps the session (parked and
    /// restorable, being restored, or live again), for `client` when
    /// sessions are bound to their client: a request answered as if the
    /// session were gone then only waited for a restore that was refused
    /// (see `Refusal::RestoreRefused`). `false` with the Redis stores,
    /// which this does not ask.
    pub(crate) fn still_kept(&self, client: &crate::clients::ClientKey) -> bool {
        self.parking.memory.as_ref().is_some_and(|store| {
            store
                .inner
                .is_kept_for(&self.id, self.owner_only.then_some(client))
        })
    }
}

impl Drop for Awaiting {
    fn drop(&mut self) {
        // The entry goes with its last request: the list holds only ids
        // requests are on their way to.
        self.parking.awaited.remove_if_mut(&self.id, |_, count| {
            *count -= 1;
            *count == 0
        });
    }
}

fn call_hook(name: &str, id: &SessionId, call: impl FnOnce()) {
    // Unwind safety: the hook gets shared references only; the store's
    // change is complete before it runs.
    if panic::catch_unwind(AssertUnwindSafe(call)).is_err() {
        tracing::error!(session_id = %id, hook = name, "a parking hook panicked");
    }
}
