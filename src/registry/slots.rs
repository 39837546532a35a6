//! Slots: the cap's units, and the creators waiting for one (see the
//! parent module's invariants 1 and 2 and its "Waiting" section).

use crate::sync::{AtomicUsize, Notify, Ordering, Semaphore, fence};

/// Proof that the holder owns one slot, between taking it and admitting a
/// session with it (never across an `.await`). Dropping it unused, even
/// while unwinding from a panic, gives the slot back to the semaphore.
#[must_use = "dropping a Slot gives it back"]
#[derive(Debug)]
pub(crate) struct Slot<'a> {
    pub(super) slots: &'a Slots,
}

impl Slot<'_> {
    /// The slot now belongs to a session in the map.
    pub(super) fn into_session(self) {
        std::mem::forget(self);
    }

    /// Frees the slot without waking waiters: for a close, whose
    /// [`Closing`] guard wakes them once `closing` has dropped.
    pub(super) fn free_for_close(self) {
        self.slots.free.add_permits(1);
        std::mem::forget(self);
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.slots.release();
    }
}

/// Why no slot could be had.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NoSlot {
    /// Every slot is taken and nothing may be evicted: every session is
    /// busy, or the registry never evicts.
    Full,
    /// A close is in flight: its slot is about to be free.
    CloseInFlight,
}

/// Slot accounting: the free slots, the closes in flight, and the creators
/// waiting for either to change.
///
/// Creators never queue on the semaphore (only `try_acquire` and
/// `add_permits` are used): a queued acquirer would be handed a released
/// permit directly, leaving a slot neither free nor owned while other
/// creators decide whether to evict. Waiting is on `changed` alone.
#[derive(Debug)]
pub(super) struct Slots {
    pub(super) free: Semaphore,
    pub(super) closing: AtomicUsize,
    pub(super) waiters: AtomicUsize,
    pub(super) changed: Notify,
}

impl Slots {
    /// Counts a close in flight until the guard drops, even by a panic
    /// (a count left behind would make every creator at the cap wait
    /// forever for a slot that never comes).
    pub(super) fn begin_close(&self) -> Closing<'_> {
        self.closing.fetch_add(1, Ordering::SeqCst);
        Closing(self)
    }

    /// The slot of a session this thread just took out of the map.
    pub(super) fn of_removed_session(&self) -> Slot<'_> {
        Slot { slots: self }
    }

    pub(super) fn try_take(&self) -> Option<Slot<'_>> {
        let permit = self.free.try_acquire().ok()?;
        permit.forget();
        Some(Slot { slots: self })
    }

    /// Frees a slot that no session owns.
    pub(super) fn release(&self) {
        self.free.add_permits(1);
        self.wake_waiters();
    }

    /// Wakes creators waiting for a change (see the module docs).
    pub(super) fn wake_waiters(&self) {
        fence(Ordering::SeqCst);
        if self.waiters.load(Ordering::Relaxed) > 0 {
            self.changed.notify_waiters();
        }
    }
}

/// A close in flight (see [`Slots::begin_close`]). Dropping it uncounts
/// the close, then wakes waiters: only once `closing` has dropped, since a
/// waiter that looked while the close was in flight waits for it, and the
/// freed slot may go to a creator that never waited. (Found by the loom
/// model `close_racing_eviction_racing_creation_*`.)
#[must_use = "dropping the guard ends the close"]
pub(super) struct Closing<'a>(&'a Slots);

impl Drop for Closing<'_> {
    fn drop(&mut self) {
        self.0.closing.fetch_sub(1, Ordering::SeqCst);
        self.0.wake_waiters();
    }
}

/// Counts a waiting creator for as long as it waits, even if its future is
/// dropped.
pub(super) struct WaiterGuard<'a>(&'a AtomicUsize);

impl<'a> WaiterGuard<'a> {
    pub(super) fn new(waiters: &'a AtomicUsize) -> Self {
        waiters.fetch_add(1, Ordering::SeqCst);
        Self(waiters)
    }
}

impl Drop for WaiterGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}
