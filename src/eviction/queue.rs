//! A FIFO of queue entries with lazy deletion and amortised compaction.
//!
//! # Invariant kept here
//!
//! The queue holds each idle session's current entry (and possibly a busy
//! session's) plus a bounded number of *stale* entries: entries whose
//! session ended, or moved to the tail under a newer number, and that
//! nobody has popped yet. At most `2 * current + slack` entries (the slack
//! is [`compaction_slack`] of the cap, at most [`COMPACTION_SLACK`]),
//! plus the few whose staleness is announced but not yet visible.
//!
//! # Why lazy deletion
//!
//! Removing an arbitrary element from a FIFO costs O(n) or a lock over the
//! whole queue. Instead, a session that moves or ends leaves its old entry
//! in place; whoever pops it sees (from the session's own state word, see
//! [`super::activity`]) that it is not the current one and skips it.
//! Numbers are unique per push, so an id that comes back through
//! `restore_session` is not confused with its old entries.
//!
//! # Why stale entries stay bounded
//!
//! Skipping only happens when a creation evicts, so a server below its cap
//! would never pop anything and the queue would grow with every request and
//! every closed session. Every change that leaves a stale entry is counted
//! in `stale`; once stale entries outnumber current ones (plus the
//! slack), the thread that left the last one compacts: it
//! pops every entry and pushes the current ones back, in order. Compaction
//! is O(queue length) and happens only after at least `current + slack`
//! stale entries were left, so it is amortised O(1) per
//! re-queue or close.
//!
//! # Why a gate
//!
//! Compaction pops and re-pushes; a push or pop by another thread in the
//! middle of it would interleave with the re-pushed entries and break the
//! order. Pushes and pops therefore hold the shared side of an `RwLock<()>`
//! and compaction the exclusive side, taken with `try_write` so it never
//! waits. The shared side is one uncontended atomic; lookups never touch
//! the gate. A push that meets a compaction waits for it (rare: amortised
//! above).
//!
//! # The stale counter
//!
//! A thread that is about to make an entry stale increments `stale` *before*
//! the change becomes visible (and takes the increment back if the change
//! did not happen). Compaction drops only entries that already are stale,
//! so every entry it drops was counted first and `stale` never underflows.

use std::sync::Arc;

use super::activity::Activity;
use crate::sync::{AtomicUsize, Fifo, Ordering, RwLock};

/// Stale entries tolerated on top of one per current entry before
/// compacting, at most: keeps a server with few sessions from compacting on
/// every close. A registry uses [`compaction_slack`] of its cap.
pub(crate) const COMPACTION_SLACK: usize = 64;

/// The slack of a registry of `max_sessions`: an eighth of the cap, at most
/// [`COMPACTION_SLACK`]. Compaction stays amortised O(1) whatever the slack
/// (it runs after at least `current + slack` stale entries were left, and
/// costs `2 * current + slack`); deriving it from the cap, as the recency
/// tolerance is (see [`super::activity`]), means the same code runs at the
/// small caps the loom models can explore: none below a cap of 8, one at 8.
pub(crate) fn compaction_slack(max_sessions: usize) -> usize {
    (max_sessions / 8).min(COMPACTION_SLACK)
}

/// One queued session, under the number of the push.
#[derive(Debug, Clone)]
pub(crate) struct QueueEntry {
    /// Unique, increasing push number (the low 48 bits).
    pub(crate) seq: u64,
    /// The session's standing, to tell a current entry from a stale one.
    pub(crate) session: Arc<Activity>,
}

/// FIFO with lazy deletion and amortised compaction.
#[derive(Debug)]
pub(crate) struct EvictionQueue {
    entries: Fifo<QueueEntry>,
    stale: AtomicUsize,
    gate: RwLock<()>,
    /// Stale entries tolerated beyond one per current entry.
    slack: usize,
}

impl EvictionQueue {
    /// An empty queue that tolerates `slack` stale entries beyond one per
    /// current entry.
    pub(crate) fn new(slack: usize) -> Self {
        Self {
            entries: Fifo::new(),
            stale: AtomicUsize::new(0),
            gate: RwLock::new(()),
            slack,
        }
    }

    /// Appends an entry. Its session must already be in the registry, so
    /// that an evictor popping it right away finds it.
    pub(crate) fn push(&self, entry: QueueEntry) {
        let _shared = self.gate.read();
        self.entries.push(entry);
    }

    /// Removes and returns the oldest entry, current or stale. A caller that
    /// finds it stale must call [`Self::popped_stale`].
    pub(crate) fn pop(&self) -> Option<QueueEntry> {
        let _shared = self.gate.read();
        self.entries.pop()
    }

    /// Records that a popped entry was stale.
    pub(crate) fn popped_stale(&self) {
        self.stale.fetch_sub(1, Ordering::Relaxed);
    }

    /// Announces that an entry is about to become stale. Must precede the
    /// change (see the module docs).
    pub(crate) fn will_leave_stale(&self) {
        self.stale.fetch_add(1, Ordering::Relaxed);
    }

    /// Takes back [`Self::will_leave_stale`] when the change did not happen.
    pub(crate) fn left_nothing(&self) {
        self.stale.fetch_sub(1, Ordering::Relaxed);
    }

    /// Compacts when stale entries exceed current ones plus the slack. Returns the number of stale entries dropped (0
    /// when another thread was already compacting or there was nothing to
    /// do).
    pub(crate) fn compact_if_needed(&self) -> usize {
        let stale = self.stale.load(Ordering::Relaxed);
        let current = self.entries.len().saturating_sub(stale);
        if stale <= current.saturating_add(self.slack) {
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
            if entry.session.is_current(entry.seq) {
                self.entries.push(entry);
            } else {
                dropped += 1;
            }
        }
        self.stale.fetch_sub(dropped, Ordering::Relaxed);
        dropped
    }

    /// Runs `hook` in the thread whose next pop finds this queue empty.
    #[cfg(all(test, mcp_bounded_session_loom))]
    pub(crate) fn on_next_empty_pop(&self, hook: crate::sync::EmptyPopHook) {
        self.entries.on_next_empty_pop(hook);
    }

    /// Entries currently queued, current and stale.
    pub(crate) fn queued(&self) -> usize {
        self.entries.len()
    }

    /// Stale entries currently counted.
    pub(crate) fn stale(&self) -> usize {
        self.stale.load(Ordering::Relaxed)
    }
}

#[cfg(all(test, mcp_bounded_session_loom))]
mod loom_tests;
