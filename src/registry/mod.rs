//! The registry of live sessions and the admission of new ones.
//!
//! # Invariants kept here
//!
//! 1. **Exact cap.** Live sessions never exceed `max_sessions`, at any
//!    instant. There are exactly `max_sessions` *slots*. A slot is either a
//!    permit in the `free` semaphore, or owned by one session in the map, or
//!    held for a few instructions by the thread moving it between the two
//!    (a [`Slot`] value, never held across an `.await`). A session enters the
//!    map only with a slot and gives it back only after it left the map.
//!    A slot taken out of the map is a `Slot` before the caller's code
//!    ([`Stop::left_registry`]) runs, so a panic there frees it instead of
//!    losing it for good.
//! 2. **The victim is idle, claimed once, and its slot is handed over.**
//!    When no slot is free, a creator takes the next session of the
//!    [`EvictionOrder`] whose claim succeeds (an idle one: see
//!    [`crate::eviction::activity`]); only the claimer removes it from the
//!    map, so a session is evicted at most once and two creators never pick
//!    the same victim. The evicted session's slot goes straight to the
//!    creator that evicted it, never through the semaphore, so a third
//!    creator cannot take it and make the burst overshoot. Nothing
//!    evictable (every session busy, or [`AtCapacity::Refuse`]): the
//!    creation is refused at once.
//!
//!    A creator evicts only when, as it looks, no slot is free *and none is
//!    on its way*: a close counts itself in `closing` before it claims its
//!    session and uncounts itself after it released the slot (a guard does
//!    it, so that a panic never leaves a close counted and every creator at
//!    the cap waiting for it). A creator that sees a close in flight waits
//!    for that slot instead of evicting, so a DELETE already under way never
//!    costs a second session its place. (Found by the loom model
//!    `eviction_takes_the_oldest_live_session`.) The same holds for a
//!    creator that found nothing evictable: it looks at `closing` again
//!    before it refuses (loom model
//!    `a_creator_that_found_only_busy_sessions_waits_for_a_close_in_flight`).
//!    Reading `closing` before trying the semaphore makes the look exact: if
//!    the creator reads 0, every close that removed a session already
//!    released its slot. A close that *starts and finishes* between the look
//!    and the eviction is not undone: its slot stays free, and the evicted
//!    session was still the first in the order when it went (loom model
//!    `eviction_racing_compaction_takes_the_oldest_live_session`).
//! 3. **Every idle session is queued once**: an admission is inserted into
//!    the map before its entry is pushed, so an evictor never pops an entry
//!    whose session it cannot find.
//! 4. **An ended session holds nothing.** Every removal path (eviction,
//!    [`Registry::close`] from DELETE, expiry or the end of the transport)
//!    claims the session, takes the entry out of the map, ends the session
//!    and frees or hands over its slot in the same synchronous step.
//! 5. **No lock across `.await`, lookups never wait for admission.** Lookups
//!    are single `DashMap` reads, which at most wait out one insert or
//!    removal in the same shard. The only `.await` in admission is waiting
//!    for a close in flight, which holds nothing; everything else is
//!    synchronous.
//!
//! # The live counter
//!
//! `live` counts sessions in the map, for a cheap `session_count()`. It is
//! incremented while the incrementing thread holds a slot, before the map
//! insert, and decremented after the map removal, before the slot is
//! released or handed over. Slot hand-offs through the semaphore order a
//! release before the next acquire, so every prefix of `live`'s modification
//! order has at most `max_sessions` more increments than decrements: a
//! reader never sees more than the cap, even with `Relaxed` accesses.
//!
//! # Waiting
//!
//! A creator waits only when no slot is free and a close is in flight (a
//! synchronous step, so the wait is short). It waits for a `changed`
//! notification, sent by the end of a close or a slot given back unused. A
//! Dekker-style pair of `SeqCst` fences (waiter: count itself, then look;
//! notifier: change, then look for waiters) guarantees that one of them sees
//! the other, so no waiter sleeps through a change.

use std::sync::Arc;

use rmcp::transport::streamable_http_server::session::SessionId;
use tokio::time::Instant;

use crate::close_reason::CloseReason;
use crate::eviction::activity::Activity;
use crate::eviction::{AtCapacity, EvictionOrder, EvictionPolicy, Popped};
use crate::observe::{CloseHook, Observer};
use crate::sync::{
    AtomicBool, AtomicU64, AtomicUsize, ConcurrentMap, Notify, Ordering, Semaphore, fence,
};

mod slots;
mod stats;

pub(crate) use self::slots::{NoSlot, Slot};
use self::slots::{Slots, WaiterGuard};
pub use self::stats::SessionStats;

/// What the registry keeps per session: something the request path clones
/// out, and a way to end the session.
pub(crate) trait Stop {
    /// Ends the session (its transport and SSE streams), admitted as
    /// `generation`, for `reason`. Called once, right after the session
    /// left the map.
    fn stop(&self, reason: CloseReason, generation: u64);

    /// Runs `claim` (the session's claim if no request is in flight) only
    /// if no stream of the session is open, atomically with respect to one
    /// opening: for parking, which must not take a session that holds a
    /// stream. Returns whether it claimed.
    fn claim_if_quiet(&self, claim: &mut dyn FnMut() -> bool) -> bool {
        claim()
    }

    /// Gives up, as soon as the session left the map and before its slot
    /// is free, whatever must not outlive its place there (a client's
    /// quota unit: a creation that sees the slot free must see the unit
    /// free too).
    fn left_registry(&mut self) {}
}

/// One live session.
#[derive(Debug)]
struct SessionEntry<H> {
    /// Its standing in the eviction order; its generation tells this
    /// life of the id from an earlier one (restore).
    activity: Arc<Activity>,
    session: H,
    created_at: Instant,
    /// Set by a close that found the session already claimed by another
    /// thread (which removes it in a moment): from then on lookups treat it
    /// as gone, so that the losing close is, to every later lookup, a close
    /// that happened. Kept in the entry, not read from `activity`, so that
    /// a lookup stays one read of the map's bucket.
    ending: AtomicBool,
}

/// Live sessions, their slots and their eviction order.
pub(crate) struct Registry<H> {
    max_sessions: usize,
    at_capacity: AtCapacity,
    sessions: ConcurrentMap<SessionId, SessionEntry<H>>,
    order: Arc<EvictionOrder>,
    slots: Slots,
    session_count: AtomicUsize,
    next_generation: AtomicU64,
    observer: Observer,
}

impl<H: std::fmt::Debug> std::fmt::Debug for Registry<H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("max_sessions", &self.max_sessions)
            .field("at_capacity", &self.at_capacity)
            .field("session_count", &self.session_count)
            .field("order", &self.order)
            .finish_non_exhaustive()
    }
}

impl<H> Drop for Registry<H> {
    fn drop(&mut self) {
        // Queue entries hold their sessions' standing, which holds the
        // order: break the cycle, or the last entries and the order leak.
        self.order.clear();
    }
}

impl<H: Stop> Registry<H> {
    /// A registry with `max_sessions` free slots that evicts the least
    /// recently active idle session when full.
    ///
    /// # Panics
    ///
    /// Panics if `max_sessions` is 0 or above the semaphore's limit.
    #[cfg(test)]
    pub(crate) fn new(max_sessions: usize) -> Self {
        Self::with_policy(
            max_sessions,
            EvictionPolicy::default(),
            AtCapacity::default(),
            None,
        )
    }

    /// A registry with the given eviction policy, behaviour at the cap and
    /// hook for ended sessions (see [`Observer`]).
    ///
    /// # Panics
    ///
    /// Panics if `max_sessions` is 0 or above the semaphore's limit.
    pub(crate) fn with_policy(
        max_sessions: usize,
        policy: EvictionPolicy,
        at_capacity: AtCapacity,
        on_close: Option<CloseHook>,
    ) -> Self {
        Self::validate(max_sessions);
        Self {
            max_sessions,
            at_capacity,
            sessions: ConcurrentMap::new(),
            order: Arc::new(EvictionOrder::new(policy, max_sessions)),
            slots: Slots {
                free: Semaphore::new(max_sessions),
                closing: AtomicUsize::new(0),
                waiters: AtomicUsize::new(0),
                changed: Notify::new(),
            },
            session_count: AtomicUsize::new(0),
            next_generation: AtomicU64::new(0),
            observer: Observer::new(max_sessions, on_close),
        }
    }

    /// Panics with an actionable message unless `max_sessions` is a usable cap.
    pub(crate) fn validate(max_sessions: usize) {
        assert!(max_sessions >= 1, "max_sessions must be at least 1, got 0");
        assert!(
            max_sessions <= Semaphore::MAX_PERMITS,
            "max_sessions must be at most {}, got {max_sessions}",
            Semaphore::MAX_PERMITS
        );
    }

    /// The cap.
    pub(crate) fn max_sessions(&self) -> usize {
        self.max_sessions
    }

    /// The eviction policy.
    pub(crate) fn policy(&self) -> EvictionPolicy {
        self.order.policy
    }

    /// What a creation does at the cap.
    pub(crate) fn at_capacity(&self) -> AtCapacity {
        self.at_capacity
    }

    /// Live sessions, without locking anything.
    pub(crate) fn session_count(&self) -> usize {
        self.session_count.load(Ordering::Relaxed)
    }

    /// Whether `id` is live: mapped and not marked by a close that found it
    /// claimed by another thread, which removes it in a moment (so that a
    /// close that found the session already claimed is, to every later
    /// lookup, a close that happened).
    #[cfg(any(test, feature = "redis"))]
    pub(crate) fn contains(&self, id: &SessionId) -> bool {
        self.sessions
            .with(id, |entry| !entry.ending.load(Ordering::Acquire))
            .unwrap_or(false)
    }

    /// Reads the live session `id` (typically clones a handle out); the map
    /// is not locked after `read` returns.
    pub(crate) fn with_session<R>(&self, id: &SessionId, read: impl FnOnce(&H) -> R) -> Option<R> {
        self.sessions.with(id, |entry| read(&entry.session))
    }

    /// Reads the live session `id` and its standing in the eviction order.
    pub(crate) fn with_activity<R>(
        &self,
        id: &SessionId,
        read: impl FnOnce(&H, &Arc<Activity>) -> R,
    ) -> Option<R> {
        self.sessions
            .with(id, |entry| read(&entry.session, &entry.activity))
    }

    /// Obtains a slot: a free one, else an idle session's (evicted), else,
    /// while a close is in flight, waits for its slot; `None` when the cap is
    /// full and nothing may be evicted ([`NoSlot::Full`]).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: the only `.await` waits for a notification and holds
    /// nothing; the waiter count is restored on drop.
    pub(crate) async fn acquire_slot(&self) -> Option<Slot<'_>> {
        loop {
            match self.try_acquire_slot() {
                Ok(slot) => return Some(slot),
                Err(NoSlot::Full) => return None,
                Err(NoSlot::CloseInFlight) => {}
            }
            let _waiting = WaiterGuard::new(&self.slots.waiters);
            // A `Notified` is woken by every `notify_waiters` after its
            // creation, polled or not: creating it before looking suffices.
            let changed = self.slots.changed.notified();
            fence(Ordering::SeqCst);
            match self.try_acquire_slot() {
                Ok(slot) => return Some(slot),
                Err(NoSlot::Full) => return None,
                Err(NoSlot::CloseInFlight) => {}
            }
            changed.await;
        }
    }

    /// A free slot, else the slot of the next idle session in the eviction
    /// order, evicted.
    pub(crate) fn try_acquire_slot(&self) -> Result<Slot<'_>, NoSlot> {
        loop {
            // Read before trying the semaphore: reading 0 means every close
            // that removed its session has released its slot already.
            let closing = self.slots.closing.load(Ordering::SeqCst);
            if let Some(slot) = self.slots.try_take() {
                return Ok(slot);
            }
            if closing > 0 {
                return Err(NoSlot::CloseInFlight);
            }
            if self.at_capacity == AtCapacity::Refuse {
                return Err(NoSlot::Full);
            }
            match self.order.pop_next() {
                Popped::Claimed(victim) => {
                    if let Some(slot) = self.take_claimed(&victim, CloseReason::Evicted) {
                        return Ok(slot);
                    }
                }
                // Look again: a close that claimed the session of this entry
                // counted itself in `closing` first.
                Popped::Skipped => {}
                Popped::Empty => {
                    // Same: a close may have claimed a session this creator
                    // skipped; it shows in `closing`, or its slot is free.
                    if self.slots.closing.load(Ordering::SeqCst) > 0 {
                        return Err(NoSlot::CloseInFlight);
                    }
                    return self.slots.try_take().ok_or(NoSlot::Full);
                }
            }
        }
    }

    /// Evicts `victim` (one of a client's own sessions) if it is idle, and
    /// hands its slot over; `None` if it is busy or already ended.
    ///
    /// `claimed` runs once the claim succeeded and before the session leaves
    /// the map: from then on the eviction is certain (only the claimer
    /// removes a session), so it may take over what the victim holds (its
    /// client's quota unit) before the victim's end gives it back to anyone.
    pub(crate) fn evict_idle(
        &self,
        victim: &Arc<Activity>,
        claimed: impl FnOnce(),
    ) -> Option<Slot<'_>> {
        if !victim.claim(true) {
            return None;
        }
        claimed();
        let slot = self.take_claimed(victim, CloseReason::Evicted);
        victim.compact_after_claim();
        slot
    }

    /// Removes a session this thread claimed and keeps its slot.
    fn take_claimed(&self, victim: &Arc<Activity>, reason: CloseReason) -> Option<Slot<'_>> {
        let (id, mut entry) = self.sessions.remove_if(victim.id(), |entry| {
            entry.activity.generation() == victim.generation()
        })?;
        let live = self.session_count.fetch_sub(1, Ordering::Relaxed) - 1;
        // The slot exists before anything that could panic runs
        // (`left_registry` is the caller's code): unwinding frees it.
        let slot = self.slots.of_removed_session();
        entry.session.left_registry();
        self.finish_close(&id, &entry, reason, live);
        Some(slot)
    }

    /// Every live session's id and generation, and whether a request is
    /// in flight in it (not a snapshot: sessions may come and go during
    /// the walk, which takes one shard's lock at a time).
    pub(crate) fn sessions(&self) -> Vec<(SessionId, u64, bool)> {
        self.sessions.filter_map(|id, entry| {
            Some((
                id.clone(),
                entry.activity.generation(),
                !entry.activity.is_idle(),
            ))
        })
    }

    /// Whether a request is in flight in any live session.
    pub(crate) fn any_busy(&self) -> bool {
        !self
            .sessions
            .filter_map(|_, entry| (!entry.activity.is_idle()).then_some(()))
            .is_empty()
    }

    /// A fresh generation: it tells one life of an id from any other (a
    /// restore) and is given to [`Self::insert`].
    pub(crate) fn draw_generation(&self) -> u64 {
        self.next_generation.fetch_add(1, Ordering::Relaxed)
    }

    /// Admits a session with the slot under `generation` (from
    /// [`Self::draw_generation`]), idle and at the tail of the order;
    /// returns its standing. Returns the slot and the session if `id`
    /// is already live (a concurrent restore), without touching the
    /// existing session.
    pub(crate) fn insert<'a>(
        &'a self,
        slot: Slot<'a>,
        id: SessionId,
        generation: u64,
        session: H,
    ) -> Result<Arc<Activity>, (Slot<'a>, H)> {
        let first_entry = self.order.draw();
        let activity = Arc::new(Activity::new(
            id.clone(),
            generation,
            first_entry,
            self.order.clone(),
        ));
        let live = self.session_count.fetch_add(1, Ordering::Relaxed) + 1;
        let entry = SessionEntry {
            activity: activity.clone(),
            session,
            created_at: Instant::now(),
            ending: AtomicBool::new(false),
        };
        if let Err(entry) = self.sessions.insert_if_vacant(id.clone(), entry) {
            self.session_count.fetch_sub(1, Ordering::Relaxed);
            return Err((slot, entry.session));
        }
        slot.into_session();
        // Nothing that can panic between the map insert and the push: a
        // mapped session that is not queued would be evicted only after it
        // was used once.
        activity.enqueue_first(first_entry);
        tracing::info!(session_id = %id, "session created");
        self.observer.created(live);
        Ok(activity)
    }

    /// Removes the session (only generation `generation`, if given), ends it
    /// and frees its slot. Returns whether it was live.
    pub(crate) fn close(
        &self,
        id: &SessionId,
        generation: Option<u64>,
        reason: CloseReason,
    ) -> bool {
        self.remove_claimed(id, generation, reason, false)
    }

    /// Parks generation `generation` of session `id`: removes, ends and
    /// frees it as [`Self::close`] does ([`CloseReason::Parked`]), only if
    /// no request of it is in flight and no stream of it is open. Returns
    /// whether it did.
    pub(crate) fn park(&self, id: &SessionId, generation: u64) -> bool {
        self.remove_claimed(id, Some(generation), CloseReason::Parked, true)
    }

    fn remove_claimed(
        &self,
        id: &SessionId,
        generation: Option<u64>,
        reason: CloseReason,
        only_if_idle: bool,
    ) -> bool {
        // Unknown ids (a DELETE with garbage) touch no shared counter.
        if !self.sessions.contains_key(id) {
            return false;
        }
        // Uncounted (and waiters woken) when it drops, on every path out,
        // a panic in `left_registry` included.
        let closing = self.slots.begin_close();
        let claimed = self
            .sessions
            .with(id, |entry| {
                if generation.is_some_and(|generation| entry.activity.generation() != generation) {
                    return None;
                }
                if only_if_idle {
                    // Busy, or holding a stream: it stays.
                    let claimed = entry
                        .session
                        .claim_if_quiet(&mut || entry.activity.claim(true));
                    return claimed.then(|| entry.activity.clone());
                }
                if entry.activity.claim(false) {
                    return Some(entry.activity.clone());
                }
                // Claimed by another thread, which is removing it.
                entry.ending.store(true, Ordering::Release);
                None
            })
            .flatten();
        let removed = claimed.as_ref().and_then(|activity| {
            self.sessions.remove_if(id, |entry| {
                entry.activity.generation() == activity.generation()
            })
        });
        // Dropping `closing` wakes a creator that may be waiting for the
        // slot this close announced.
        let Some((id, mut entry)) = removed else {
            return false;
        };
        let live = self.session_count.fetch_sub(1, Ordering::Relaxed) - 1;
        // Held before `left_registry` runs: a panic there frees the slot.
        let slot = self.slots.of_removed_session();
        entry.session.left_registry();
        slot.free_for_close();
        // Uncounts the close, then wakes (see `Closing`).
        drop(closing);
        self.finish_close(&id, &entry, reason, live);
        entry.activity.compact_after_claim();
        true
    }

    fn finish_close(
        &self,
        id: &SessionId,
        entry: &SessionEntry<H>,
        reason: CloseReason,
        live_after: usize,
    ) {
        entry.session.stop(reason, entry.activity.generation());
        let lived = entry.created_at.elapsed();
        tracing::info!(
            session_id = %id,
            duration_secs = lived.as_secs_f64(),
            reason = %reason,
            "session closed"
        );
        self.observer.closed(id, reason, lived, live_after);
    }

    /// Counts a close in flight until the guard drops, as
    /// [`Self::close`] does while it runs: creators at a full cap then wait
    /// instead of evicting (for tests that need a creation to wait).
    #[cfg(test)]
    pub(crate) fn close_in_flight(&self) -> impl Drop + '_ {
        self.slots.begin_close()
    }

    /// Creators waiting for a close in flight (for cancel-safety tests).
    #[cfg(test)]
    pub(crate) fn waiters(&self) -> usize {
        self.slots.waiters.load(Ordering::SeqCst)
    }

    /// Runs `hook`, once, in the thread whose next pop finds the quiet tier
    /// empty: where a creator has found nothing to evict and not yet
    /// decided to refuse (a loom model acts there).
    #[cfg(all(test, mcp_bounded_session_loom))]
    pub(crate) fn on_next_empty_pop(&self, hook: impl FnOnce() + Send + 'static) {
        self.order.quiet.on_next_empty_pop(Box::new(hook));
    }

    /// Reports sessions' creations, closes and refusals.
    pub(crate) fn observer(&self) -> &Observer {
        &self.observer
    }

    /// Reads every counter; see [`SessionStats`].
    pub(crate) fn stats(&self) -> SessionStats {
        SessionStats {
            max_sessions: self.max_sessions,
            session_count: self.session_count(),
            mapped: self.sessions.len(),
            free_slots: self.slots.free.available_permits(),
            queued: self.order.queued(),
            stale: self.order.stale(),
            queue_pushes: self.order.pushes(),
        }
    }
}

#[cfg(all(test, mcp_bounded_session_loom))]
pub(crate) mod loom_support;
#[cfg(all(test, mcp_bounded_session_loom))]
mod loom_tests;
#[cfg(test)]
mod tests;
