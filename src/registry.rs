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
//! 2. **Oldest-first, at most once.** When no slot is free, a creator pops
//!    the oldest entry from the [`EvictionQueue`] and removes exactly that
//!    admission (`remove_if` on its `seq`) from the map. Only one thread can
//!    pop a given entry and only one `remove_if` can succeed, so a session is
//!    evicted at most once and two creators never pick the same victim. The
//!    evicted session's slot goes straight to the creator that evicted it,
//!    never through the semaphore, so a third creator cannot take it and make
//!    the burst overshoot.
//!
//!    A creator evicts only when, as it looks, no slot is free *and none is
//!    on its way*: a close counts itself in `closing` before it removes its
//!    session and uncounts itself after it released the slot. A creator that
//!    sees a close in flight waits for that slot instead of evicting, so a
//!    DELETE already under way never costs a second session its place.
//!    (Found by the loom model `eviction_takes_the_oldest_live_session`.)
//!    Reading `closing` before trying the semaphore makes the look exact: if
//!    the creator reads 0, every close that removed a session already
//!    released its slot. A close that *starts and finishes* between the look
//!    and the eviction is not undone: its slot stays free, and the evicted
//!    session was still the oldest live one when it went (loom model
//!    `eviction_racing_compaction_takes_the_oldest_live_session`).
//! 3. **Every live session is queued once** (kept by [`EvictionQueue`]): an
//!    admission is inserted into the map before its entry is pushed, so an
//!    evictor never mistakes a new entry for a stale one.
//! 4. **An ended session holds nothing.** Every removal path (eviction,
//!    [`Registry::close`] from DELETE, expiry or the end of the worker) takes
//!    the entry out of the map, cancels its worker and frees or hands over
//!    its slot in the same synchronous step.
//! 5. **No lock across `.await`, lookups never wait for admission.** Lookups
//!    are single `DashMap` reads, which at most wait out one insert or
//!    removal in the same shard. The only `.await` in admission is waiting
//!    for a slot, which holds nothing; everything else is synchronous.
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
//! A creator waits when no slot is free and either a close is in flight or
//! the queue holds no live session (every slot is owned by a creation
//! between its slot and its push, a synchronous window). It waits for a
//! `changed` notification, sent by a push, the end of a close, or a slot
//! given back unused. A Dekker-style pair of `SeqCst` fences (waiter: count
//! itself, then look; notifier: change, then look for waiters) guarantees
//! that one of them sees the other, so no waiter sleeps through a change.

use rmcp::transport::streamable_http_server::session::SessionId;
use tokio::time::Instant;

use crate::close_reason::CloseReason;
use crate::eviction_queue::{EvictionQueue, QueueEntry};
use crate::sync::{AtomicU64, AtomicUsize, ConcurrentMap, Notify, Ordering, Semaphore, fence};

/// What the registry keeps per session: something the request path clones
/// out, and a way to stop the session's worker.
pub trait Stop {
    /// Stops the session's worker, which ends its SSE streams. Called once,
    /// right after the session left the map.
    fn stop(&self);
}

/// Proof that the holder owns one slot, between taking it and admitting a
/// session with it (never across an `.await`). Dropping it unused, even
/// while unwinding from a panic, gives the slot back to the semaphore.
#[must_use = "dropping a Slot gives it back"]
#[derive(Debug)]
pub struct Slot<'a> {
    slots: &'a Slots,
}

impl Slot<'_> {
    /// The slot now belongs to a session in the map.
    fn into_session(self) {
        std::mem::forget(self);
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.slots.release();
    }
}

/// Slot accounting: the free slots, the closes in flight, and the creators
/// waiting for either to change.
///
/// Creators never queue on the semaphore (only `try_acquire` and
/// `add_permits` are used): a queued acquirer would be handed a released
/// permit directly, leaving a slot neither free nor owned while other
/// creators decide whether to evict. Waiting is on `changed` alone.
#[derive(Debug)]
struct Slots {
    free: Semaphore,
    closing: AtomicUsize,
    waiters: AtomicUsize,
    changed: Notify,
}

impl Slots {
    fn try_take(&self) -> Option<Slot<'_>> {
        let permit = self.free.try_acquire().ok()?;
        permit.forget();
        Some(Slot { slots: self })
    }

    /// Frees a slot that no session owns.
    fn release(&self) {
        self.free.add_permits(1);
        self.wake_waiters();
    }

    /// Wakes creators waiting for a change (see the module docs).
    fn wake_waiters(&self) {
        fence(Ordering::SeqCst);
        if self.waiters.load(Ordering::Relaxed) > 0 {
            self.changed.notify_waiters();
        }
    }
}

/// One live session.
#[derive(Debug)]
struct SessionEntry<H> {
    /// Unique admission number: tells this admission from an earlier one of
    /// the same id (restore) and matches it to its queue entry.
    seq: u64,
    session: H,
    created_at: Instant,
}

/// Live sessions, their slots and their creation order.
#[derive(Debug)]
pub struct Registry<H> {
    max_sessions: usize,
    sessions: ConcurrentMap<SessionId, SessionEntry<H>>,
    queue: EvictionQueue,
    slots: Slots,
    live: AtomicUsize,
    next_seq: AtomicU64,
}

/// Counts a waiting creator for as long as it waits, even if its future is
/// dropped.
struct WaiterGuard<'a>(&'a AtomicUsize);

impl<'a> WaiterGuard<'a> {
    fn new(waiters: &'a AtomicUsize) -> Self {
        waiters.fetch_add(1, Ordering::SeqCst);
        Self(waiters)
    }
}

impl Drop for WaiterGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl<H: Stop> Registry<H> {
    /// A registry with `max_sessions` free slots.
    ///
    /// # Panics
    ///
    /// Panics if `max_sessions` is 0 or above the semaphore's limit.
    pub fn new(max_sessions: usize) -> Self {
        Self::validate(max_sessions);
        Self {
            max_sessions,
            sessions: ConcurrentMap::new(),
            queue: EvictionQueue::new(),
            slots: Slots {
                free: Semaphore::new(max_sessions),
                closing: AtomicUsize::new(0),
                waiters: AtomicUsize::new(0),
                changed: Notify::new(),
            },
            live: AtomicUsize::new(0),
            next_seq: AtomicU64::new(0),
        }
    }

    /// Panics with an actionable message unless `max_sessions` is a usable cap.
    pub fn validate(max_sessions: usize) {
        assert!(max_sessions >= 1, "max_sessions must be at least 1, got 0");
        assert!(
            max_sessions <= Semaphore::MAX_PERMITS,
            "max_sessions must be at most {}, got {max_sessions}",
            Semaphore::MAX_PERMITS
        );
    }

    /// The cap.
    pub fn max_sessions(&self) -> usize {
        self.max_sessions
    }

    /// Live sessions, without locking anything.
    pub fn live(&self) -> usize {
        self.live.load(Ordering::Relaxed)
    }

    /// Whether `id` is live.
    pub fn contains(&self, id: &SessionId) -> bool {
        self.sessions.contains_key(id)
    }

    /// Reads the live session `id` (typically clones a handle out); the map
    /// is not locked after `read` returns.
    pub fn with_session<R>(&self, id: &SessionId, read: impl FnOnce(&H) -> R) -> Option<R> {
        self.sessions.with(id, |entry| read(&entry.session))
    }

    /// Obtains a slot: a free one, else the oldest live session's.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: the only `.await` waits for a notification and holds
    /// nothing; the waiter count is restored on drop.
    pub async fn acquire_slot(&self) -> Slot<'_> {
        loop {
            if let Some(slot) = self.try_acquire_slot() {
                return slot;
            }
            let _waiting = WaiterGuard::new(&self.slots.waiters);
            // A `Notified` is woken by every `notify_waiters` after its
            // creation, polled or not: creating it before looking suffices.
            let changed = self.slots.changed.notified();
            fence(Ordering::SeqCst);
            if let Some(slot) = self.try_acquire_slot() {
                return slot;
            }
            changed.await;
        }
    }

    /// A free slot, else the slot of the oldest live session, evicted;
    /// `None` when a close is about to free a slot or every slot belongs to
    /// a creation in progress (the caller waits).
    pub fn try_acquire_slot(&self) -> Option<Slot<'_>> {
        loop {
            // Read before trying the semaphore: reading 0 means every close
            // that removed its session has released its slot already.
            let closing = self.slots.closing.load(Ordering::SeqCst);
            if let Some(slot) = self.slots.try_take() {
                return Some(slot);
            }
            if closing > 0 {
                return None;
            }
            let oldest = self.queue.pop()?;
            if let Some((id, entry)) = self
                .sessions
                .remove_if(&oldest.id, |entry| entry.seq == oldest.seq)
            {
                self.live.fetch_sub(1, Ordering::Relaxed);
                // The slot exists before anything that could panic runs.
                let slot = Slot { slots: &self.slots };
                Self::finish_close(&id, &entry, CloseReason::Evicted);
                return Some(slot);
            }
            self.queue.popped_stale();
        }
    }

    /// Admits a session with the slot; returns its admission number. Returns
    /// the slot and the session if `id` is already live (a concurrent
    /// restore), without touching the existing session.
    pub fn insert<'a>(
        &'a self,
        slot: Slot<'a>,
        id: SessionId,
        session: H,
    ) -> Result<u64, (Slot<'a>, H)> {
        let seq = self.next_seq.fetch_add(1, Ordering::Relaxed);
        self.live.fetch_add(1, Ordering::Relaxed);
        let entry = SessionEntry {
            seq,
            session,
            created_at: Instant::now(),
        };
        if let Err(entry) = self.sessions.insert_if_vacant(id.clone(), entry) {
            self.live.fetch_sub(1, Ordering::Relaxed);
            return Err((slot, entry.session));
        }
        slot.into_session();
        // Nothing that can panic between the map insert and the push: a
        // mapped session that is not queued could never be evicted.
        self.queue.push(seq, id.clone());
        self.slots.wake_waiters();
        tracing::info!(session_id = %id, "session created");
        Ok(seq)
    }

    /// Removes the session (only admission `seq`, if given), stops its worker
    /// and frees its slot. Returns whether it was live.
    pub fn close(&self, id: &SessionId, seq: Option<u64>, reason: CloseReason) -> bool {
        // Unknown ids (a DELETE with garbage) touch no shared counter.
        if !self.sessions.contains_key(id) {
            return false;
        }
        self.slots.closing.fetch_add(1, Ordering::SeqCst);
        self.queue.will_leave_stale();
        let removed = match seq {
            Some(seq) => self.sessions.remove_if(id, |entry| entry.seq == seq),
            None => self.sessions.remove(id),
        };
        let Some((id, entry)) = removed else {
            self.queue.left_nothing();
            self.slots.closing.fetch_sub(1, Ordering::SeqCst);
            // A creator may be waiting for the slot this close announced.
            self.slots.wake_waiters();
            return false;
        };
        let live = self.live.fetch_sub(1, Ordering::Relaxed) - 1;
        self.slots.free.add_permits(1);
        self.slots.closing.fetch_sub(1, Ordering::SeqCst);
        // Wake only once `closing` has dropped: a waiter that looked while
        // this close was in flight waits for it, and the freed slot may go
        // to a creator that never waited. (Found by the loom model
        // `close_racing_eviction_racing_creation_*`.)
        self.slots.wake_waiters();
        Self::finish_close(&id, &entry, reason);
        self.queue
            .compact_if_needed(live, |queued| self.is_current(queued));
        true
    }

    fn is_current(&self, queued: &QueueEntry) -> bool {
        self.sessions
            .with(&queued.id, |entry| entry.seq == queued.seq)
            .unwrap_or(false)
    }

    fn finish_close(id: &SessionId, entry: &SessionEntry<H>, reason: CloseReason) {
        entry.session.stop();
        tracing::info!(
            session_id = %id,
            duration_secs = entry.created_at.elapsed().as_secs_f64(),
            reason = %reason,
            "session closed"
        );
    }

    /// Reads every counter; see [`SessionStats`].
    pub fn census(&self) -> SessionStats {
        SessionStats {
            max_sessions: self.max_sessions,
            live: self.live(),
            mapped: self.sessions.len(),
            free_slots: self.slots.free.available_permits(),
            queued: self.queue.queued(),
            stale: self.queue.stale(),
        }
    }
}

/// A snapshot of the manager's internal counters, for metrics and checks.
///
/// Each field is read separately, so the snapshot is only consistent while no
/// session is being created or closed. At rest, `live == mapped`,
/// `live + free_slots == max_sessions` and `queued == live + stale`.
///
/// # Example
///
/// ```
/// use mcp_bounded_session::{BoundedSessionManager, SessionConfig};
///
/// let manager = BoundedSessionManager::new(SessionConfig::default(), 10);
/// let stats = manager.stats();
/// assert_eq!(stats.live, 0);
/// assert_eq!(stats.free_slots, 10);
/// assert_eq!(stats.queued, 0);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct SessionStats {
    /// The cap.
    pub max_sessions: usize,
    /// The live-session counter (what `session_count()` returns).
    pub live: usize,
    /// Entries in the session map.
    pub mapped: usize,
    /// Slots not owned by any session.
    pub free_slots: usize,
    /// Entries in the eviction queue, live and stale.
    pub queued: usize,
    /// Entries in the eviction queue whose session already ended.
    pub stale: usize,
}

impl SessionStats {
    /// Whether the counters agree: every slot is free or owned by exactly one
    /// mapped session, and the queue holds each live session plus the stale
    /// entries counted. Meaningful only while nothing is in flight.
    ///
    /// ```
    /// use mcp_bounded_session::{BoundedSessionManager, SessionConfig};
    ///
    /// let manager = BoundedSessionManager::new(SessionConfig::default(), 10);
    /// assert!(manager.stats().is_consistent());
    /// ```
    pub fn is_consistent(&self) -> bool {
        self.live == self.mapped
            && self.live + self.free_slots == self.max_sessions
            && self.queued == self.live + self.stale
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use tokio_util::sync::CancellationToken;

    use super::*;
    use crate::eviction_queue::COMPACTION_SLACK;

    impl Stop for CancellationToken {
        fn stop(&self) {
            self.cancel();
        }
    }

    type TestRegistry = Registry<CancellationToken>;

    fn admit(registry: &TestRegistry, slot: Slot<'_>, n: usize) -> (SessionId, CancellationToken) {
        let id: SessionId = format!("s{n}").into();
        let cancel = CancellationToken::new();
        registry
            .insert(slot, id.clone(), cancel.clone())
            .map_err(|_| "duplicate id")
            .unwrap();
        (id, cancel)
    }

    fn assert_conserved(registry: &TestRegistry) {
        let census = registry.census();
        assert!(census.is_consistent(), "{census:?}");
    }

    #[tokio::test]
    async fn evicts_oldest_and_hands_over_its_slot() {
        let registry = TestRegistry::new(3);
        let mut admitted = Vec::new();
        for n in 0..3 {
            let slot = registry.acquire_slot().await;
            admitted.push(admit(&registry, slot, n));
        }
        assert_eq!(registry.census().free_slots, 0);
        let slot = registry.acquire_slot().await;
        assert!(admitted[0].1.is_cancelled(), "oldest session evicted");
        assert!(!registry.contains(&admitted[0].0));
        assert!(registry.contains(&admitted[1].0));
        admit(&registry, slot, 3);
        assert_eq!(registry.live(), 3);
        assert_conserved(&registry);
    }

    #[tokio::test]
    async fn closed_sessions_are_skipped_and_free_their_slot() {
        let registry = TestRegistry::new(2);
        let a = admit(&registry, registry.acquire_slot().await, 0);
        let b = admit(&registry, registry.acquire_slot().await, 1);
        assert!(registry.close(&a.0, None, CloseReason::Closed));
        assert!(
            !registry.close(&a.0, None, CloseReason::Closed),
            "closed once"
        );
        // The freed slot is used; b is not evicted.
        admit(&registry, registry.acquire_slot().await, 2);
        assert!(registry.contains(&b.0));
        assert!(!b.1.is_cancelled());
        assert_conserved(&registry);
        // Now full: the next creation evicts b (a's stale entry is skipped).
        let slot = registry.acquire_slot().await;
        assert!(b.1.is_cancelled());
        admit(&registry, slot, 3);
        assert_conserved(&registry);
    }

    #[tokio::test]
    async fn close_with_old_seq_does_not_touch_a_restored_session() {
        let registry = TestRegistry::new(2);
        let id: SessionId = "same".into();
        let first = registry
            .insert(
                registry.acquire_slot().await,
                id.clone(),
                CancellationToken::new(),
            )
            .map_err(|_| "duplicate")
            .unwrap();
        assert!(registry.close(&id, Some(first), CloseReason::Closed));
        let second_cancel = CancellationToken::new();
        let second = registry
            .insert(
                registry.acquire_slot().await,
                id.clone(),
                second_cancel.clone(),
            )
            .map_err(|_| "duplicate")
            .unwrap();
        assert_ne!(first, second);
        assert!(!registry.close(&id, Some(first), CloseReason::WorkerEnded));
        assert!(registry.contains(&id));
        assert!(!second_cancel.is_cancelled());
        assert_conserved(&registry);
    }

    #[tokio::test]
    async fn duplicate_insert_returns_the_slot() {
        let registry = TestRegistry::new(2);
        let id: SessionId = "dup".into();
        registry
            .insert(
                registry.acquire_slot().await,
                id.clone(),
                CancellationToken::new(),
            )
            .map_err(|_| "duplicate")
            .unwrap();
        let slot = registry.acquire_slot().await;
        let (slot, _) = registry
            .insert(slot, id, CancellationToken::new())
            .unwrap_err();
        drop(slot);
        assert_conserved(&registry);
        assert_eq!(registry.live(), 1);
    }

    #[tokio::test]
    async fn churn_below_cap_keeps_the_queue_bounded() {
        let registry = TestRegistry::new(1_000);
        let keeper = admit(&registry, registry.acquire_slot().await, usize::MAX);
        for n in 0..100_000 {
            let (id, _) = admit(&registry, registry.acquire_slot().await, n);
            assert!(registry.close(&id, None, CloseReason::Closed));
            let census = registry.census();
            assert!(
                census.queued <= 2 * census.live + COMPACTION_SLACK + 1,
                "{census:?}"
            );
        }
        assert!(
            registry.contains(&keeper.0),
            "a live session survives compaction"
        );
        assert_conserved(&registry);
        // The old keeper is still the oldest: the compactions kept the order.
        let slots: Vec<Slot<'_>> = (0..999)
            .map(|_| registry.slots.try_take().unwrap())
            .collect();
        let slot = registry.acquire_slot().await;
        assert!(keeper.1.is_cancelled());
        admit(&registry, slot, usize::MAX - 1);
        drop(slots);
        assert_conserved(&registry);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_creators_never_exceed_cap() {
        let registry = Arc::new(TestRegistry::new(4));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let sampler = {
            let registry = registry.clone();
            let stop = stop.clone();
            tokio::task::spawn_blocking(move || {
                let mut max_seen = 0;
                while !stop.load(Ordering::Relaxed) {
                    max_seen = max_seen.max(registry.live());
                }
                max_seen
            })
        };
        let tasks: Vec<_> = (0..64)
            .map(|t| {
                let registry = registry.clone();
                tokio::spawn(async move {
                    for n in 0..200 {
                        let slot = registry.acquire_slot().await;
                        let id: SessionId = format!("{t}-{n}").into();
                        registry
                            .insert(slot, id.clone(), CancellationToken::new())
                            .map_err(|_| "duplicate")
                            .unwrap();
                        if n % 3 == 0 {
                            registry.close(&id, None, CloseReason::Closed);
                        }
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
        stop.store(true, Ordering::Relaxed);
        assert!(sampler.await.unwrap() <= 4);
        assert_eq!(registry.live(), 4);
        assert_conserved(&registry);
    }

    #[tokio::test]
    async fn dropped_waiter_holds_nothing() {
        let registry = TestRegistry::new(1);
        // The only slot is held by a creation "in progress": nothing to evict.
        let in_progress = registry.acquire_slot().await;
        let mut waiter = Box::pin(registry.acquire_slot());
        assert!(futures::poll!(waiter.as_mut()).is_pending());
        assert_eq!(registry.slots.waiters.load(Ordering::SeqCst), 1);
        drop(waiter);
        assert_eq!(registry.slots.waiters.load(Ordering::SeqCst), 0);
        drop(in_progress);
        assert_conserved(&registry);
        assert_eq!(registry.census().free_slots, 1);
    }

    /// A task that waits for a slot and admits session `n` with it.
    fn spawn_creator(
        registry: &Arc<TestRegistry>,
        n: usize,
    ) -> tokio::task::JoinHandle<(SessionId, CancellationToken)> {
        let registry = registry.clone();
        tokio::spawn(async move {
            let slot = registry.acquire_slot().await;
            admit(&registry, slot, n)
        })
    }

    #[tokio::test]
    async fn waiter_wakes_to_evict_a_new_admission() {
        let registry = Arc::new(TestRegistry::new(1));
        let in_progress = registry.acquire_slot().await;
        let waiter = spawn_creator(&registry, 1);
        tokio::task::yield_now().await;
        let (_, first_cancel) = admit(&registry, in_progress, 0);
        let (second, _) = waiter.await.unwrap();
        assert!(
            first_cancel.is_cancelled(),
            "the waiter evicted the new oldest"
        );
        assert!(registry.contains(&second));
        assert_conserved(&registry);
    }

    #[tokio::test]
    async fn waiter_takes_a_released_slot() {
        let registry = Arc::new(TestRegistry::new(1));
        let in_progress = registry.acquire_slot().await;
        let waiter = spawn_creator(&registry, 0);
        tokio::task::yield_now().await;
        drop(in_progress);
        waiter.await.unwrap();
        assert_conserved(&registry);
    }

    #[tokio::test]
    async fn eviction_at_cap_pops_exactly_one_entry() {
        // Creation at a full cap is O(1): one pop, one push, no scan.
        let registry = TestRegistry::new(10_000);
        for n in 0..10_000 {
            admit(&registry, registry.acquire_slot().await, n);
        }
        for n in 10_000..30_000 {
            let slot = registry.acquire_slot().await;
            assert_eq!(registry.census().queued, 9_999, "exactly one entry popped");
            admit(&registry, slot, n);
        }
        assert_conserved(&registry);
    }
}
