//! One session's standing in the eviction order: busy or idle, where it is
//! queued, and whether it was claimed, all in one atomic word.
//!
//! # Invariants kept here
//!
//! 1. **A busy session is never evicted.** A session is busy while any
//!    request is in flight in it (a [`Busy`] guard lives); an evictor claims
//!    a session with one compare-and-swap from "idle, current entry `seq`,
//!    not claimed" to "claimed". A request that starts first makes that swap
//!    fail; a request that starts after it finds the session claimed and is
//!    answered as for an unknown session. There is no window in between:
//!    busy count, queue position and the claim share one word.
//! 2. **Claimed once.** Every path that ends a session (eviction, DELETE,
//!    expiry, the end of its handler) first sets the `CLAIMED` bit; only the
//!    thread whose swap set it removes the session from the registry.
//! 3. **An idle session has exactly one current queue entry.** The word
//!    holds the sequence number of the session's current entry (0: none).
//!    When the last request ends, the session is re-queued at the tail
//!    under a new number unless its current entry is still near the tail
//!    and in the right tier; an evictor that pops the current entry of a
//!    busy session sets the number to 0, so the session re-queues when it
//!    goes idle. Entries whose number is not the current one are stale and
//!    skipped (see [`super::queue`]).
//!
//! # Why re-queue lazily
//!
//! Moving a session on every request would push one queue entry per
//! request. A session whose entry has fewer than `max_sessions / 8` pushes
//! after it is among the newest eighth of a full queue: at least 7/8 of the
//! cap's evictions come before it, so it stays where it is. Recency is thus
//! tracked to within `max_sessions / 8` queue pushes; below eight sessions
//! of cap, exactly.

use std::sync::Arc;

use rmcp::transport::streamable_http_server::session::SessionId;

use super::{EvictionOrder, EvictionPolicy};
use crate::sync::{AtomicU64, AtomicUsize, Ordering};

/// Set once, by the one thread that ends the session.
const CLAIMED: u64 = 1 << 63;
/// The current entry is in the queue of sessions holding a standalone stream.
const LISTENING_ENTRY: u64 = 1 << 62;
const BUSY_SHIFT: u32 = 48;
const BUSY_ONE: u64 = 1 << BUSY_SHIFT;
/// Requests in flight at once in one session; one more is refused. rmcp
/// sessions allow a few hundred (`max_request_streams`), far below this.
pub(crate) const MAX_BUSY: u64 = (1 << 14) - 1;
const BUSY_MASK: u64 = MAX_BUSY << BUSY_SHIFT;
/// Low 48 bits: the current entry's number (wraps after 2^48 pushes, years
/// at a million pushes a second; an entry would have to stay queued that
/// long to be mistaken for a newer one).
pub(super) const SEQ_MASK: u64 = (1 << BUSY_SHIFT) - 1;
const NOT_QUEUED: u64 = 0;

/// Why a request could not mark a session busy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BeginError {
    /// The session was claimed (evicted or closing): it is gone.
    Gone,
    /// [`MAX_BUSY`] requests are already in flight.
    Saturated,
}

/// What an evictor's claim on a popped entry found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Claim {
    /// The session was idle and this entry current: it is now claimed.
    Evicted,
    /// The session is busy; the entry is consumed and the session will
    /// re-queue when it goes idle.
    Busy,
    /// The entry was not current (or the session is already claimed).
    Stale,
}

/// One session's standing; shared by its registry entry, its queue entries
/// and the guards of its requests and streams.
#[derive(Debug)]
pub(crate) struct Activity {
    state: AtomicU64,
    /// Standalone (GET) streams open: a session holding one is evicted only
    /// after every session holding none.
    listening: AtomicUsize,
    /// When the session was last active (nanoseconds since its order was
    /// made), to pick among one client's own sessions: finer than the
    /// queue position, which a session near the tail keeps.
    last_active: AtomicU64,
    /// The registry's generation of this session (see `draw_generation`).
    generation: u64,
    id: SessionId,
    order: Arc<EvictionOrder>,
}

impl Activity {
    /// A new session, idle, queued under `seq` (the caller pushes the entry
    /// once the session is mapped). Its `initialize` makes it busy like any
    /// other request.
    pub(crate) fn new(id: SessionId, generation: u64, seq: u64, order: Arc<EvictionOrder>) -> Self {
        Self {
            state: AtomicU64::new(seq & SEQ_MASK),
            listening: AtomicUsize::new(0),
            // Never active yet: older than any activity.
            last_active: AtomicU64::new(0),
            generation,
            id,
            order,
        }
    }

    /// The session's id.
    pub(crate) fn id(&self) -> &SessionId {
        &self.id
    }

    /// The registry's generation of this session.
    pub(crate) fn generation(&self) -> u64 {
        self.generation
    }

    /// Whether no request is in flight and the session is not claimed.
    pub(crate) fn is_idle(&self) -> bool {
        let state = self.state.load(Ordering::Acquire);
        state & (BUSY_MASK | CLAIMED) == 0
    }

    /// Whether a close or an eviction claimed the session: it is leaving
    /// the registry, and no request can begin on it any more.
    pub(crate) fn is_claimed(&self) -> bool {
        self.state.load(Ordering::Acquire) & CLAIMED != 0
    }

    /// Whether a standalone stream is open.
    pub(crate) fn is_listening(&self) -> bool {
        self.listening.load(Ordering::Relaxed) > 0
    }

    /// When the session was last active (larger is more recent).
    pub(crate) fn last_active(&self) -> u64 {
        self.last_active.load(Ordering::Relaxed)
    }

    /// Marks one more request in flight.
    pub(crate) fn begin(self: &Arc<Self>) -> Result<Busy, BeginError> {
        let mut state = self.state.load(Ordering::Acquire);
        loop {
            if state & CLAIMED != 0 {
                return Err(BeginError::Gone);
            }
            if state & BUSY_MASK == BUSY_MASK {
                return Err(BeginError::Saturated);
            }
            match self.state.compare_exchange_weak(
                state,
                state + BUSY_ONE,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return Ok(Busy(Some(self.clone()))),
                Err(actual) => state = actual,
            }
        }
    }

    /// Activity without a request in flight afterwards (a notification, a
    /// stream opened or closed): the session moves as a request would.
    pub(crate) fn touch(self: &Arc<Self>) {
        drop(self.begin());
    }

    /// One request ended; the last one re-queues the session if needed.
    fn end(self: &Arc<Self>) {
        let clock = self.order.clock();
        let mut state = self.state.load(Ordering::Acquire);
        // A number drawn in an earlier try of the loop, reused so that a
        // failed swap wastes none.
        let mut drawn: Option<u64> = None;
        loop {
            if state & CLAIMED != 0 {
                return;
            }
            debug_assert!(state & BUSY_MASK != 0, "end without begin");
            let after = state - BUSY_ONE;
            let requeue = after & BUSY_MASK == 0 && self.needs_requeue(state, clock);
            let (next, old_queue) = if requeue {
                let seq = *drawn.get_or_insert_with(|| self.order.draw());
                let listening = self.is_listening() && self.order.tiers();
                let next = (after & !(SEQ_MASK | LISTENING_ENTRY))
                    | seq
                    | if listening { LISTENING_ENTRY } else { 0 };
                // Announced before the swap: the old entry may be popped
                // (and counted off) the moment the swap is visible.
                let old_queue = (state & SEQ_MASK != NOT_QUEUED).then(|| self.order.queue(state));
                if let Some(queue) = old_queue {
                    queue.will_leave_stale();
                }
                (next, old_queue)
            } else {
                (after, None)
            };
            match self
                .state
                .compare_exchange_weak(state, next, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => {
                    self.last_active
                        .store(self.order.now_nanos(), Ordering::Relaxed);
                    if requeue {
                        self.order.push(next, self);
                        if let Some(queue) = old_queue {
                            queue.compact_if_needed();
                        }
                    }
                    return;
                }
                Err(actual) => {
                    if let Some(queue) = old_queue {
                        queue.left_nothing();
                    }
                    state = actual;
                }
            }
        }
    }

    fn needs_requeue(&self, state: u64, clock: u64) -> bool {
        let seq = state & SEQ_MASK;
        if seq == NOT_QUEUED {
            return true;
        }
        if self.order.policy != EvictionPolicy::LeastRecentlyActive {
            return false;
        }
        let listening_entry = state & LISTENING_ENTRY != 0;
        if self.is_listening() != listening_entry {
            return true;
        }
        (clock & SEQ_MASK).wrapping_sub(seq) & SEQ_MASK > self.order.near_tail
    }

    /// An evictor popped entry `seq` of this session: claims the session if
    /// it is idle and the entry current.
    pub(crate) fn claim_popped(&self, seq: u64) -> Claim {
        let seq = seq & SEQ_MASK;
        let mut state = self.state.load(Ordering::Acquire);
        loop {
            if state & CLAIMED != 0 || state & SEQ_MASK != seq {
                return Claim::Stale;
            }
            let (next, claim) = if state & BUSY_MASK == 0 {
                (state | CLAIMED, Claim::Evicted)
            } else {
                (
                    (state & !(SEQ_MASK | LISTENING_ENTRY)) | NOT_QUEUED,
                    Claim::Busy,
                )
            };
            match self
                .state
                .compare_exchange_weak(state, next, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return claim,
                Err(actual) => state = actual,
            }
        }
    }

    /// Claims the session to end it: always (`only_if_idle == false`: a
    /// close) or only if no request is in flight (replacing one of a
    /// client's own sessions). Returns false if it was claimed already, or
    /// is busy and `only_if_idle`. Its current entry, if any, is left stale.
    pub(crate) fn claim(&self, only_if_idle: bool) -> bool {
        let mut state = self.state.load(Ordering::Acquire);
        loop {
            if state & CLAIMED != 0 || (only_if_idle && state & BUSY_MASK != 0) {
                return false;
            }
            let old_queue = (state & SEQ_MASK != NOT_QUEUED).then(|| self.order.queue(state));
            if let Some(queue) = old_queue {
                queue.will_leave_stale();
            }
            match self.state.compare_exchange_weak(
                state,
                state | CLAIMED,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return true,
                Err(actual) => {
                    if let Some(queue) = old_queue {
                        queue.left_nothing();
                    }
                    state = actual;
                }
            }
        }
    }

    /// Whether `seq` is this session's current entry (compaction keeps it).
    pub(crate) fn is_current(&self, seq: u64) -> bool {
        let state = self.state.load(Ordering::Acquire);
        state & CLAIMED == 0 && state & SEQ_MASK == seq & SEQ_MASK
    }

    /// Whether the current entry of `state` is in the listening tier.
    pub(crate) fn in_listening_tier(state: u64) -> bool {
        state & LISTENING_ENTRY != 0
    }

    /// Queues the entry the session was created with; called once, after
    /// the session entered the registry.
    ///
    /// Pushes exactly the entry `seq` it was created with (quiet tier), not
    /// whatever the state holds by now: a request that reached the session
    /// in between (a restore's race) may have re-queued it already, and
    /// counted this first entry as stale, which it then is.
    pub(crate) fn enqueue_first(self: &Arc<Self>, seq: u64) {
        self.order.push(seq & SEQ_MASK, self);
    }

    /// Notes one more open standalone stream; the guard notes its end.
    pub(crate) fn listen(self: &Arc<Self>) -> Listening {
        self.listening.fetch_add(1, Ordering::Relaxed);
        Listening(Some(self.clone()))
    }

    /// Compacts the queue that holds this session's current entry, if it
    /// holds too many stale ones (called after a close left one).
    pub(crate) fn compact_after_claim(&self) {
        self.order
            .queue(self.state.load(Ordering::Acquire))
            .compact_if_needed();
    }
}

/// A request in flight: the session is busy until it is dropped (or
/// [`Busy::end`]).
#[derive(Debug)]
#[must_use = "dropping Busy ends the request at once"]
pub(crate) struct Busy(Option<Arc<Activity>>);

impl Busy {
    /// Whether this marks a request of `activity`'s session.
    pub(crate) fn is_of(&self, activity: &Arc<Activity>) -> bool {
        self.0
            .as_ref()
            .is_some_and(|own| Arc::ptr_eq(own, activity))
    }

    /// Marks nothing: for a step of a request whose session is already
    /// marked busy by the request (see `http::hold`).
    pub(crate) fn none() -> Self {
        Self(None)
    }

    /// Ends the request now (idempotent with the drop).
    pub(crate) fn end(&mut self) {
        if let Some(activity) = self.0.take() {
            activity.end();
        }
    }

    /// Ends a GET that opened a standalone stream: the stream is counted
    /// first, so the session moves to the tier of sessions holding one.
    pub(crate) fn into_listening(mut self) -> Listening {
        let listening = match &self.0 {
            Some(activity) => activity.listen(),
            None => Listening(None),
        };
        self.end();
        listening
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.end();
    }
}

/// An open standalone stream; its end moves the session to the tier of
/// sessions without a stream (when it was the last).
#[derive(Debug)]
pub(crate) struct Listening(Option<Arc<Activity>>);

impl Listening {
    /// Notes the end of the stream now (idempotent with the drop).
    pub(crate) fn end(&mut self) {
        if let Some(activity) = self.0.take()
            && activity.listening.fetch_sub(1, Ordering::Relaxed) == 1
        {
            activity.touch();
        }
    }
}

impl Drop for Listening {
    fn drop(&mut self) {
        self.end();
    }
}

/// A response stream that keeps its session busy (a request's stream) or
/// listening (a standalone stream) until it ends or is dropped.
#[derive(Debug)]
pub(crate) struct TrackedStream<S> {
    inner: S,
    busy: Option<Busy>,
    listening: Option<Listening>,
}

impl<S> TrackedStream<S> {
    /// `inner`, keeping its session busy until it ends.
    pub(crate) fn busy(inner: S, busy: Busy) -> Self {
        Self {
            inner,
            busy: Some(busy),
            listening: None,
        }
    }

    /// `inner`, counted as one of its session's standalone streams.
    pub(crate) fn listening(inner: S, listening: Listening) -> Self {
        Self {
            inner,
            busy: None,
            listening: Some(listening),
        }
    }
}

impl<S: futures::Stream + Unpin> futures::Stream for TrackedStream<S> {
    type Item = S::Item;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<S::Item>> {
        let this = &mut *self;
        let polled = std::pin::Pin::new(&mut this.inner).poll_next(cx);
        if let std::task::Poll::Ready(None) = polled {
            // The response ended: the request is over even if the body is
            // dropped later.
            this.busy = None;
            this.listening = None;
        }
        polled
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.inner.size_hint()
    }
}

#[cfg(all(test, mcp_bounded_session_loom))]
mod loom_tests;
