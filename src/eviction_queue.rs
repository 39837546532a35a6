//! Creation-order queue for oldest-first eviction, with lazy deletion.
//!
//! # Invariant kept here (DESIGN invariant 3)
//!
//! The queue holds one entry for every live session, in the order the
//! sessions were admitted, plus a bounded number of *stale* entries: entries
//! whose session was closed by some other path (DELETE, expiry, its worker
//! ending) and that nobody has popped yet.
//!
//! # Why lazy deletion
//!
//! Removing an arbitrary element from a FIFO costs O(n) or a lock over the
//! whole queue. Instead, closing a session leaves its `(seq, id)` entry in
//! place; an evictor that pops it sees that the registry no longer holds that
//! `(seq, id)` pair and skips it. `seq` is unique per admission, so an id that
//! comes back through `restore_session` is not confused with its old entry.
//!
//! # Why stale entries stay bounded
//!
//! Skipping only happens when a creation evicts, so a server that creates and
//! closes sessions below its cap would never pop anything and the queue would
//! grow with every session ever created. Every removal that leaves a stale
//! entry is counted in `stale`; once stale entries outnumber live sessions
//! (plus [`COMPACTION_SLACK`]), the closing thread compacts the queue: it pops
//! every entry and pushes the live ones back. Compaction is O(queue length)
//! and happens only after at least `live + COMPACTION_SLACK` closes, so it is
//! amortised O(1) per close, and the queue length stays at most
//! `2 * live + COMPACTION_SLACK` plus closes in flight.
//!
//! # Why a gate
//!
//! Compaction pops and re-pushes; a push or pop by another thread in the
//! middle of it would interleave with the re-pushed entries and break the
//! creation order. Pushes and pops therefore hold the shared side of an
//! `RwLock<()>` and compaction the exclusive side, taken with `try_write` so
//! it never waits. The shared side is one uncontended atomic on the creation
//! path; lookups never touch the gate.
//!
//! # The stale counter
//!
//! A closing thread increments `stale` *before* it removes the session from
//! the registry (and takes the increment back if the removal found nothing).
//! Compaction drops only entries whose session is already gone, so every
//! entry it drops was counted first and `stale` never underflows.

use rmcp::transport::streamable_http_server::session::SessionId;

use crate::sync::{AtomicUsize, Fifo, Ordering, RwLock};

/// Stale entries tolerated on top of one per live session before compacting;
/// keeps a server with very few live sessions from compacting on every close.
#[cfg(not(mcp_bounded_session_loom))]
pub const COMPACTION_SLACK: usize = 64;
/// Under loom, compaction must happen within the few operations a model can
/// explore, so it triggers as soon as stale entries outnumber live ones.
#[cfg(mcp_bounded_session_loom)]
pub const COMPACTION_SLACK: usize = 0;

/// One admission, in creation order.
#[derive(Debug, Clone)]
pub struct QueueEntry {
    /// Unique, increasing admission number.
    pub seq: u64,
    /// The admitted session.
    pub id: SessionId,
}

/// FIFO of admissions with lazy deletion and amortised compaction.
#[derive(Debug)]
pub struct EvictionQueue {
    entries: Fifo<QueueEntry>,
    stale: AtomicUsize,
    gate: RwLock<()>,
}

impl Default for EvictionQueue {
    fn default() -> Self {
        Self::new()
    }
}

impl EvictionQueue {
    /// An empty queue.
    pub fn new() -> Self {
        Self {
            entries: Fifo::new(),
            stale: AtomicUsize::new(0),
            gate: RwLock::new(()),
        }
    }

    /// Appends a newly admitted session. Its registry entry must already be
    /// visible, so that an evictor popping it right away finds it live.
    pub fn push(&self, seq: u64, id: SessionId) {
        let _shared = self.gate.read();
        self.entries.push(QueueEntry { seq, id });
    }

    /// Removes and returns the oldest entry, live or stale. A caller that
    /// finds it stale must call [`Self::popped_stale`].
    pub fn pop(&self) -> Option<QueueEntry> {
        let _shared = self.gate.read();
        self.entries.pop()
    }

    /// Records that a popped entry was stale.
    pub fn popped_stale(&self) {
        self.stale.fetch_sub(1, Ordering::Relaxed);
    }

    /// Announces that a session is about to be removed by a path that leaves
    /// its entry behind. Must precede the removal (see the module docs).
    pub fn will_leave_stale(&self) {
        self.stale.fetch_add(1, Ordering::Relaxed);
    }

    /// Takes back [`Self::will_leave_stale`] when the removal found nothing.
    pub fn left_nothing(&self) {
        self.stale.fetch_sub(1, Ordering::Relaxed);
    }

    /// Compacts when stale entries exceed `live + COMPACTION_SLACK`.
    ///
    /// `is_live` tells whether an entry's admission is still in the registry.
    /// Returns the number of stale entries dropped (0 when another thread was
    /// already compacting or there was nothing to do).
    pub fn compact_if_needed(&self, live: usize, is_live: impl Fn(&QueueEntry) -> bool) -> usize {
        if self.stale.load(Ordering::Relaxed) <= live.saturating_add(COMPACTION_SLACK) {
            return 0;
        }
        let Some(_exclusive) = self.gate.try_write() else {
            return 0;
        };
        // No push or pop runs while the gate is held exclusively, so rotating
        // exactly `len` entries through the queue keeps their order.
        let mut dropped = 0;
        for _ in 0..self.entries.len() {
            let Some(entry) = self.entries.pop() else {
                break;
            };
            if is_live(&entry) {
                self.entries.push(entry);
            } else {
                dropped += 1;
            }
        }
        self.stale.fetch_sub(dropped, Ordering::Relaxed);
        dropped
    }

    /// Entries currently queued, live and stale.
    pub fn queued(&self) -> usize {
        self.entries.len()
    }

    /// Stale entries currently counted.
    pub fn stale(&self) -> usize {
        self.stale.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    fn id(n: u64) -> SessionId {
        n.to_string().into()
    }

    #[test]
    fn pops_in_push_order() {
        let queue = EvictionQueue::new();
        for n in 0..5 {
            queue.push(n, id(n));
        }
        let popped: Vec<u64> = std::iter::from_fn(|| queue.pop().map(|e| e.seq)).collect();
        assert_eq!(popped, vec![0, 1, 2, 3, 4]);
    }

    #[test]
    fn compaction_drops_only_stale_entries_and_keeps_order() {
        let queue = EvictionQueue::new();
        let total = 3 * COMPACTION_SLACK as u64;
        for n in 0..total {
            queue.push(n, id(n));
        }
        // Close every session except multiples of 7.
        let live: HashSet<u64> = (0..total).filter(|n| n % 7 == 0).collect();
        for _ in 0..(total as usize - live.len()) {
            queue.will_leave_stale();
        }
        let dropped = queue.compact_if_needed(live.len(), |e| live.contains(&e.seq));
        assert_eq!(dropped, total as usize - live.len());
        assert_eq!(queue.stale(), 0);
        let popped: Vec<u64> = std::iter::from_fn(|| queue.pop().map(|e| e.seq)).collect();
        let mut expected: Vec<u64> = live.into_iter().collect();
        expected.sort_unstable();
        assert_eq!(popped, expected);
    }

    #[test]
    fn no_compaction_below_threshold() {
        let queue = EvictionQueue::new();
        for n in 0..10 {
            queue.push(n, id(n));
            queue.will_leave_stale();
        }
        assert_eq!(queue.compact_if_needed(0, |_| false), 0);
        assert_eq!(queue.queued(), 10);
        assert_eq!(queue.stale(), 10);
    }

    #[test]
    fn left_nothing_undoes_the_announcement() {
        let queue = EvictionQueue::new();
        queue.will_leave_stale();
        queue.left_nothing();
        assert_eq!(queue.stale(), 0);
    }
}
