//! Whom to evict when the cap is full: the order, and what may never be
//! evicted.
//!
//! - [`activity`]: one session's standing (busy or idle, its current queue
//!   entry, claimed or not) in one atomic word; a busy session is never
//!   evicted.
//! - [`queue`]: a lock-free FIFO of entries with lazy deletion and bounded
//!   stale entries.
//! - this module: the two tiers and the policy.
//!
//! # The order
//!
//! With [`EvictionPolicy::LeastRecentlyActive`] (the default), any request,
//! notification, response, GET or resume moves a session to the tail of its
//! tier when it goes idle; evictions pop from the head: first the tier of
//! sessions with no open SSE stream, then the tier of sessions holding only
//! a standalone (GET) stream. A busy session is skipped (and re-queued at
//! the tail when it goes idle). With [`EvictionPolicy::OldestCreated`], a
//! session keeps the place its creation gave it (one tier), except that one
//! found busy when its turn came goes to the tail.
//!
//! Nothing evictable, every session busy: the creation is refused at once
//! (`503` behind the HTTP layer); nothing waits for a session to go idle.

pub(crate) mod activity;
pub(crate) mod queue;

use std::sync::Arc;

use self::activity::{Activity, Claim, SEQ_MASK};
use self::queue::{EvictionQueue, QueueEntry, compaction_slack};
use crate::sync::{AtomicU64, Ordering};

/// Which idle session a creation at the full cap evicts.
///
/// # Example
///
/// ```
/// use mcp_bounded_session::{BoundedSessionManagerBuilder, EvictionPolicy};
///
/// let manager = BoundedSessionManagerBuilder::new(100)
///     .eviction_policy(EvictionPolicy::OldestCreated)
///     .build();
/// assert_eq!(manager.eviction_policy(), EvictionPolicy::OldestCreated);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum EvictionPolicy {
    /// The idle session whose client was least recently active; sessions
    /// holding a standalone (GET) stream only after every session holding
    /// none. Long-lived, busy clients keep their sessions.
    #[default]
    LeastRecentlyActive,
    /// The idle session created first, whatever its activity (the order of
    /// `mcp-session`).
    OldestCreated,
}

/// What a creation does when every slot is taken.
///
/// # Example
///
/// ```
/// use mcp_bounded_session::{AtCapacity, BoundedSessionManagerBuilder};
///
/// let manager = BoundedSessionManagerBuilder::new(100)
///     .at_capacity(AtCapacity::Refuse)
///     .build();
/// assert_eq!(manager.at_capacity(), AtCapacity::Refuse);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum AtCapacity {
    /// Evict an idle session chosen by the [`EvictionPolicy`]; refuse
    /// (`503`) if every session is busy.
    #[default]
    Evict,
    /// Never evict to make room: refuse the creation (`503` with
    /// `Retry-After`). A client at its own `max_sessions_per_client` still
    /// replaces one of its own idle sessions: that frees no room for it.
    Refuse,
}

/// What one [`EvictionOrder::pop_next`] found.
#[derive(Debug)]
pub(crate) enum Popped {
    /// An idle session, now claimed by the caller (which must end it).
    Claimed(Arc<Activity>),
    /// A stale entry, or a busy session's (which re-queues when idle).
    Skipped,
    /// Both tiers are empty: nothing is evictable now.
    Empty,
}

/// The eviction order of one registry: two tiers of queues and the clock
/// that numbers their entries.
#[derive(Debug)]
pub(crate) struct EvictionOrder {
    pub(crate) policy: EvictionPolicy,
    /// Sessions with no open stream (every session, with `OldestCreated`).
    pub(crate) quiet: EvictionQueue,
    /// Sessions holding a standalone stream.
    listening: EvictionQueue,
    /// The next entry number; numbers start at 1 (0 means "not queued").
    clock: AtomicU64,
    /// Pushes after a session's entry below which it is not moved (see
    /// [`activity`]'s "Why re-queue lazily").
    pub(crate) near_tail: u64,
    /// The origin of activity times: finer than queue positions, which a
    /// session near the tail keeps across several requests.
    epoch: std::time::Instant,
}

impl EvictionOrder {
    /// The order for a registry of `max_sessions` slots.
    pub(crate) fn new(policy: EvictionPolicy, max_sessions: usize) -> Self {
        // Both tolerances derive from the cap, under loom too: below a cap
        // of 8 every move is exact and every excess of stale entries
        // compacts; a model at a cap of 8 runs the tolerant branches.
        let slack = compaction_slack(max_sessions);
        Self {
            policy,
            quiet: EvictionQueue::new(slack),
            listening: EvictionQueue::new(slack),
            clock: AtomicU64::new(1),
            near_tail: (max_sessions / 8) as u64,
            epoch: std::time::Instant::now(),
        }
    }

    /// Nanoseconds since the order was made: when a session was last
    /// active (one clock read, no shared counter).
    pub(crate) fn now_nanos(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    pub(crate) fn clock(&self) -> u64 {
        self.clock.load(Ordering::Relaxed)
    }

    /// A fresh entry number (never 0 in its low 48 bits).
    pub(crate) fn draw(&self) -> u64 {
        loop {
            let seq = self.clock.fetch_add(1, Ordering::Relaxed) & SEQ_MASK;
            if seq != 0 {
                return seq;
            }
        }
    }

    /// Whether sessions holding a stream go to their own tier.
    pub(crate) fn tiers(&self) -> bool {
        self.policy == EvictionPolicy::LeastRecentlyActive
    }

    /// The queue that a state word's current entry is in.
    pub(crate) fn queue(&self, state: u64) -> &EvictionQueue {
        if Activity::in_listening_tier(state) {
            &self.listening
        } else {
            &self.quiet
        }
    }

    /// Queues `session`'s entry of `state` (its number and tier).
    pub(crate) fn push(&self, state: u64, session: &Arc<Activity>) {
        self.queue(state).push(QueueEntry {
            seq: state & SEQ_MASK,
            session: session.clone(),
        });
    }

    /// Pops one entry, from the head of the quiet tier, else of the
    /// listening tier, and claims its session if it is idle and the entry
    /// current. One entry per call, so that the caller can look again for a
    /// free slot between entries (a close may be under way).
    pub(crate) fn pop_next(&self) -> Popped {
        for queue in [&self.quiet, &self.listening] {
            if let Some(entry) = queue.pop() {
                return match entry.session.claim_popped(entry.seq) {
                    Claim::Evicted => Popped::Claimed(entry.session),
                    Claim::Busy => Popped::Skipped,
                    Claim::Stale => {
                        queue.popped_stale();
                        Popped::Skipped
                    }
                };
            }
        }
        Popped::Empty
    }

    /// Drops every entry. Entries hold their sessions, which hold this
    /// order: the registry calls this when it is dropped, so that the cycle
    /// does not keep them all alive.
    pub(crate) fn clear(&self) {
        for queue in [&self.quiet, &self.listening] {
            while queue.pop().is_some() {}
        }
    }

    /// Entry numbers drawn so far: entries pushed (a number drawn in a
    /// swap that failed is retried, not wasted, so the count is exact but
    /// for the rare number skipped at a 48-bit wrap).
    pub(crate) fn pushes(&self) -> u64 {
        self.clock.load(Ordering::Relaxed) - 1
    }

    /// Entries queued in both tiers, current and stale.
    pub(crate) fn queued(&self) -> usize {
        self.quiet.queued() + self.listening.queued()
    }

    /// Stale entries counted in both tiers.
    pub(crate) fn stale(&self) -> usize {
        self.quiet.stale() + self.listening.stale()
    }
}
