//! Slots: the cap's units, and the creators waiting for one (see the
//! parent module's invariants 1 and 2 and its "Waiting" section).

use crate::sync::{AtomicUsize, Notify, Ordering, Semaphore, fence};

/// Proof that the holder owns one slot, between taking it and admitting a
/// session with it (never across an `.await`). Dropping it unused, even
/// while unwinding from a panic, gives the slot back to the semaphore.
#[must_use = "dropping a Slot gives it back"]
#[derive(Debug)]
pub struct Slot<'a> {
    pub(super) slots: &'a Slots,
}

impl Slot<'_> {
    /// The slot now belongs to a session in the map.
    pub(super) fn into_session(self) {
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
pub enum NoSlot {
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
