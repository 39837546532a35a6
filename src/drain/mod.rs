//! Graceful drain: what an instance that is about to stop still accepts,
//! what it waits for, and what it ends at once.
//!
//! # Invariants kept here
//!
//! 1. **Once draining, nothing new starts here that could be served
//!    elsewhere.** A request enters (is counted) before it reads the
//!    draining flag, and the drain raises the flag before it reads the
//!    counts, both sequentially consistent: either the request sees the
//!    flag and is refused (`503` with `Retry-After`, so a balancer or the
//!    client goes to another instance), or the drain sees the request and
//!    waits for it. Refused: new sessions and restores of sessions held
//!    elsewhere (by the manager), 2026-07-28 requests, `GET` streams and
//!    `subscriptions/listen` streams (by the layer). A request for a
//!    session this instance holds is still served: its state is here.
//! 2. **A request in flight is finished or cancelled, and counted once.**
//!    Each request the layer lets through holds a [`Ticket`] until its
//!    response ends; the ticket decides at its drop which count it joins
//!    (finished, or cancelled if the drain's deadline cut it). The ticket
//!    lives in the response body, so every way a response ends drops it.
//! 3. **Streams end at once, requests at the deadline.** `GET` and listen
//!    streams can last forever and hold no work of their own: they end
//!    when the drain starts, with an SSE `retry:` hint, so that clients
//!    reconnect (through the balancer, to another instance) and resume.
//!    Requests end when they are answered, or at the deadline.
//!
//! Counting is sharded (a ticket counts on its thread's shard, on a cache
//! line of its own) so that requests on different cores write no shared
//! line: the drain is rare, the requests are not. Only the drain reads the
//! sum.

use std::cell::Cell;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use crossbeam_utils::CachePadded;
use tokio_util::sync::CancellationToken;

mod body;
mod summary;

pub(crate) use body::Tracked;
pub use summary::DrainSummary;

/// The reconnection delay an ended stream tells its client (`retry:`):
/// long enough for a balancer to take this instance out of rotation once
/// its readiness fails, short enough that the client hardly notices.
pub(crate) const RECONNECT_AFTER: Duration = Duration::from_secs(1);

/// Shards of the counts: a power of two at least the cores of most hosts.
const SHARDS: usize = 16;

/// What a request is, to the drain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// A `GET` stream or a listen stream: ended when the drain starts.
    Stream,
    /// Any other `POST`: waited for until the deadline.
    Request,
    /// A ticket given back unused ([`Ticket::refused`]).
    Refused,
}

/// The drain state a manager shares with its layer.
#[derive(Debug)]
pub(crate) struct Drain {
    draining: AtomicBool,
    shards: Box<[Arc<CachePadded<Shard>>]>,
    /// Cancelled when the drain starts (streams) and at its deadline
    /// (requests); each shard holds a child of each.
    streams_end: CancellationToken,
    requests_end: CancellationToken,
}

/// One shard's counts and signals.
#[derive(Debug)]
pub(crate) struct Shard {
    /// Requests (not streams) entered and not yet ended.
    in_flight: AtomicUsize,
    /// Requests that ended on their own while draining.
    finished: AtomicUsize,
    /// Requests whose response the deadline cut.
    cancelled: AtomicUsize,
    /// Streams the drain ended.
    streams_ended: AtomicUsize,
    /// Raised before the tokens are cancelled: a plain load for bodies
    /// that are polled anyway.
    streams_ending: AtomicBool,
    requests_ending: AtomicBool,
    streams_end: CancellationToken,
    requests_end: CancellationToken,
}

thread_local! {
    /// This thread's shard, drawn once.
    static SHARD: Cell<Option<usize>> = const { Cell::new(None) };
}

/// Hands shards to threads round-robin.
static NEXT_SHARD: AtomicUsize = AtomicUsize::new(0);

fn this_threads_shard() -> usize {
    SHARD.with(|shard| {
        shard.get().unwrap_or_else(|| {
            let drawn = NEXT_SHARD.fetch_add(1, Ordering::Relaxed) % SHARDS;
            shard.set(Some(drawn));
            drawn
        })
    })
}

impl Drain {
    pub(crate) fn new() -> Self {
        let streams_end = CancellationToken::new();
        let requests_end = CancellationToken::new();
        let shards = (0..SHARDS)
            .map(|_| {
                Arc::new(CachePadded::new(Shard {
                    in_flight: AtomicUsize::new(0),
                    finished: AtomicUsize::new(0),
                    cancelled: AtomicUsize::new(0),
                    streams_ended: AtomicUsize::new(0),
                    streams_ending: AtomicBool::new(false),
                    requests_ending: AtomicBool::new(false),
                    streams_end: streams_end.child_token(),
                    requests_end: requests_end.child_token(),
                }))
            })
            .collect();
        Self {
            draining: AtomicBool::new(false),
            shards,
            streams_end,
            requests_end,
        }
    }

    /// Whether the drain has started.
    pub(crate) fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    /// Counts a request of `kind` in (see invariant 1: before the caller
    /// reads [`Self::is_draining`]).
    pub(crate) fn enter(&self, kind: Kind) -> Ticket {
        let shard = self.shards[this_threads_shard()].clone();
        if kind == Kind::Request {
            shard.in_flight.fetch_add(1, Ordering::SeqCst);
        }
        Ticket {
            shard,
            kind,
            cut: false,
        }
    }

    /// Starts the drain: refusals from now on, and every stream ends.
    pub(crate) fn start(&self) {
        self.draining.store(true, Ordering::SeqCst);
        for shard in self.shards.iter() {
            shard.streams_ending.store(true, Ordering::SeqCst);
        }
        self.streams_end.cancel();
    }

    /// Ends every request still in flight (the deadline).
    pub(crate) fn cut_requests(&self) {
        for shard in self.shards.iter() {
            shard.requests_ending.store(true, Ordering::SeqCst);
        }
        self.requests_end.cancel();
    }

    /// Requests in flight now.
    pub(crate) fn in_flight(&self) -> usize {
        self.shards
            .iter()
            .map(|shard| shard.in_flight.load(Ordering::SeqCst))
            .sum()
    }

    /// The counts so far: requests finished and cancelled while draining,
    /// streams ended.
    pub(crate) fn counts(&self) -> (usize, usize, usize) {
        self.shards.iter().fold((0, 0, 0), |(f, c, s), shard| {
            (
                f + shard.finished.load(Ordering::SeqCst),
                c + shard.cancelled.load(Ordering::SeqCst),
                s + shard.streams_ended.load(Ordering::SeqCst),
            )
        })
    }
}

/// One request's place in the drain's counts, held until its response
/// ends (see invariant 2).
#[derive(Debug)]
pub(crate) struct Ticket {
    shard: Arc<CachePadded<Shard>>,
    kind: Kind,
    /// Whether the drain ended the response (rather than the response
    /// itself or its client).
    cut: bool,
}

impl Ticket {
    pub(crate) fn kind(&self) -> Kind {
        self.kind
    }

    /// Whether the drain ends this ticket's response now.
    fn ending(&self) -> bool {
        match self.kind {
            Kind::Stream => self.shard.streams_ending.load(Ordering::Relaxed),
            Kind::Request => self.shard.requests_ending.load(Ordering::Relaxed),
            Kind::Refused => false,
        }
    }

    /// The signal that ends this ticket's response.
    fn end_signal(&self) -> &CancellationToken {
        match self.kind {
            Kind::Stream | Kind::Refused => &self.shard.streams_end,
            Kind::Request => &self.shard.requests_end,
        }
    }

    /// Gives the ticket back for a request the layer refused because the
    /// instance drains: it was never let in, so it counts neither as
    /// finished nor as cancelled.
    pub(crate) fn refused(mut self) {
        if self.kind == Kind::Request {
            self.shard.in_flight.fetch_sub(1, Ordering::SeqCst);
        }
        // Counted out above; nothing left for `drop`.
        self.kind = Kind::Refused;
    }

    /// Marks the response as ended by the drain.
    pub(crate) fn cut(&mut self) {
        self.cut = true;
    }

    /// Resolves when the drain ends this ticket's response (at once if it
    /// already did).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it only waits.
    pub(crate) async fn ended(&self) {
        self.end_signal().cancelled().await;
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let shard = &self.shard;
        match self.kind {
            Kind::Stream => {
                if self.cut {
                    shard.streams_ended.fetch_add(1, Ordering::SeqCst);
                }
            }
            Kind::Request => {
                // Counted as it leaves, before the drain can read it gone.
                if self.cut {
                    shard.cancelled.fetch_add(1, Ordering::SeqCst);
                } else if shard.streams_ending.load(Ordering::SeqCst) {
                    shard.finished.fetch_add(1, Ordering::SeqCst);
                }
                shard.in_flight.fetch_sub(1, Ordering::SeqCst);
            }
            Kind::Refused => {}
        }
    }
}

#[cfg(test)]
mod tests;
