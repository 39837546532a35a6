//! What the manager tells the outside about sessions coming and going: a
//! user's `on_close` hook, a warning as the cap nears and, with the `metrics`
//! feature, metrics through the [`metrics`](https://docs.rs/metrics) facade.
//!
//! # Invariants kept here
//!
//! 1. **Reporting never breaks bookkeeping.** Every method takes `&self`, is
//!    synchronous, never blocks and returns normally whatever the user's hook
//!    does: a panic in the hook is caught and logged, so the caller's own
//!    state changes around the report (freeing a slot, waking a creator) are
//!    never skipped. The hook still runs on the caller's thread, so a hook
//!    that blocks blocks that close; it should only hand the data on.
//! 2. **One warning per crossing.** The 90 % warning is logged once each
//!    time the reported count rises to 90 % of the cap, however many
//!    threads report at once (see below).
//!
//! # Calling it
//!
//! The manager calls [`Observer::created`] after it admitted a session,
//! [`Observer::closed`] after a session left the registry and its slot was
//! freed, and [`Observer::refused`] when it turned a creation down. Each is
//! given the live count *after* the change, as the caller saw it.
//!
//! # The 90 % warning
//!
//! A report whose live count reaches 90 % of `max_sessions`
//! (`live * 10 >= max * 9`) while the warning is *armed* logs one WARN event
//! and disarms it. Only a report below 80 % (`live * 10 < max * 8`) arms it
//! again. So "once per crossing" means once per excursion: from the first
//! report at 90 % or more until the count falls below 80 %, one event,
//! however the count moves in between. The gap is hysteresis: a full server
//! hovers around the cap (each creation at the cap evicts, closes and
//! creations alternate), and a single threshold would log on every step back
//! up. With fewer than 10 slots no count may lie between the two thresholds
//! (with 2 slots: warns at 2, re-arms at 1).
//!
//! The state is one `AtomicBool`: a warning needs a successful
//! `compare_exchange(false, true)`, so of any number of concurrent reports
//! exactly one logs. Each report changes the flag in one atomic step, so the
//! warnings are exactly those of the reports taken in the order of their
//! steps on the flag. Reports that race may carry their counts in another
//! order than the counts happened; the warning follows the reports.
//!
//! # The `on_close` hook
//!
//! [`Observer::closed`] calls the hook with the session's id, why it ended
//! and how long it lived. A panic in the hook is caught
//! (`std::panic::catch_unwind`) and logged as one ERROR event per panic, with
//! the session id and the panic message; the close, the metrics and the
//! warning's state are not affected. The process's panic hook still runs
//! first (by default it prints the panic to stderr), and under
//! `panic = "abort"` nothing can be caught: the process aborts.
//!
//! # Metrics (feature `metrics`)
//!
//! | name | type | labels | unit | value |
//! |---|---|---|---|---|
//! | `mcp_sessions_active` | gauge | none | sessions | live sessions after the latest creation or close |
//! | `mcp_sessions_max` | gauge | none | sessions | the cap, `max_sessions` |
//! | `mcp_sessions_created_total` | counter | none | sessions | sessions admitted |
//! | `mcp_sessions_closed_total` | counter | `reason` | sessions | sessions ended, by why: `evicted`, `max_lifetime`, `closed`, `idle_timeout`, `init_timeout`, `handshake_abandoned`, `handler_ended`, `drained` ([`CloseReason::label`]) |
//! | `mcp_sessions_refused_total` | counter | `reason` | creations | creations refused, by why: `rate_limited`, `client_rate_limited`, `client_quota`, `at_capacity`, `draining` |
//! | `mcp_session_duration_seconds` | histogram | none | seconds | each ended session's lifetime, from admission to close |
//!
//! Each value goes to the recorder in force when it is reported (the global
//! one, or the calling thread's local one); with none it is dropped.
//! Counters count what happened while a recorder was installed. The gauges
//! are set, not added to, so they are right from the first report after a
//! recorder is installed. `mcp_sessions_max` is set at construction, which
//! is lost if no recorder is installed yet, so it is set again with each
//! creation and close: it is always present once anything happened. The
//! descriptions and units are given to the recorder at construction only.
//!
//! Without the feature none of this is compiled; the hook and the warning
//! work the same.

use std::any::Any;
use std::fmt;
use std::panic::{self, AssertUnwindSafe};
// Not `crate::sync`'s: this flag guards only itself and is not part of the
// loom-checked core, whose invariants nothing here touches.
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rmcp::transport::streamable_http_server::session::SessionId;

use crate::close_reason::CloseReason;
use crate::refusal::Creation;

/// The user's hook, called once per ended session.
pub(crate) type CloseHook = Arc<dyn Fn(&SessionId, CloseReason, Duration) + Send + Sync>;

/// Reports sessions' creations, closes and refusals: to the `on_close` hook,
/// to the log (the 90 % warning) and, with the `metrics` feature, to the
/// `metrics` recorder. See the module docs.
pub(crate) struct Observer {
    max_sessions: usize,
    on_close: Option<CloseHook>,
    /// The smallest live count at 90 % of the cap or more.
    warn_at: usize,
    /// Live counts below this one (80 % of the cap) re-arm the warning.
    rearm_below: usize,
    /// Whether the warning was logged and not re-armed since.
    warned: AtomicBool,
}

impl Observer {
    /// An observer for a manager with this cap (the manager never has 0)
    /// and optional hook.
    pub(crate) fn new(max_sessions: usize, on_close: Option<CloseHook>) -> Self {
        #[cfg(feature = "metrics")]
        emit::describe_and_set_max(max_sessions);
        Self {
            max_sessions,
            on_close,
            warn_at: tenths_of(max_sessions, 9),
            rearm_below: tenths_of(max_sessions, 8),
            warned: AtomicBool::new(false),
        }
    }

    /// A session was admitted; `live_after` is the live count after it.
    pub(crate) fn created(&self, live_after: usize) {
        #[cfg(feature = "metrics")]
        emit::created(self.max_sessions, live_after);
        self.track_level(live_after);
    }

    /// A session ended after living `lived`; `live_after` is the live count
    /// after it left. Calls the hook, which may panic: see the module docs.
    pub(crate) fn closed(
        &self,
        id: &SessionId,
        reason: CloseReason,
        lived: Duration,
        live_after: usize,
    ) {
        // The metrics and the warning first: a hook that panics or blocks
        // then cannot hold them back.
        #[cfg(feature = "metrics")]
        emit::closed(self.max_sessions, reason, lived, live_after);
        self.track_level(live_after);
        self.call_hook(id, reason, lived);
    }

    /// A session creation was refused.
    pub(crate) fn refused(&self, reason: Creation) {
        #[cfg(feature = "metrics")]
        emit::refused(reason);
        // Without the feature a refusal has nothing to update: the caller
        // logs or returns the refusal itself.
        #[cfg(not(feature = "metrics"))]
        let _ = reason;
    }

    fn track_level(&self, live: usize) {
        if live >= self.warn_at {
            if self
                .warned
                .compare_exchange(false, true, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
            {
                tracing::warn!(
                    live,
                    max_sessions = self.max_sessions,
                    "live sessions reached 90 % of max_sessions"
                );
            }
        } else if live < self.rearm_below && self.warned.load(Ordering::Relaxed) {
            // Load before storing: most reports find the warning armed, and a
            // plain load leaves the cache line shared between the cores.
            self.warned.store(false, Ordering::Relaxed);
        }
    }

    fn call_hook(&self, id: &SessionId, reason: CloseReason, lived: Duration) {
        let Some(hook) = &self.on_close else { return };
        // Unwind safety: the hook is given only shared references to values
        // it cannot invalidate, and nothing of the observer's is mid-change
        // while it runs; whatever state of its own a panicking hook leaves
        // behind is the hook's.
        if let Err(payload) = panic::catch_unwind(AssertUnwindSafe(|| hook(id, reason, lived))) {
            tracing::error!(
                session_id = %id,
                reason = %reason,
                panic = panic_message(payload.as_ref()),
                "the on_close hook panicked; the session is closed all the same"
            );
        }
    }
}

impl fmt::Debug for Observer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Observer")
            .field("max_sessions", &self.max_sessions)
            .field("on_close", &self.on_close.as_ref().map(|_| "Fn"))
            .field("warned", &self.warned.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

/// The smallest count `n` with `n * 10 >= max * tenths`, so that comparing
/// with it is comparing with that fraction of the cap. In `u128` so that no
/// cap overflows; the result is at most `max`, so it fits back.
const fn tenths_of(max: usize, tenths: u128) -> usize {
    (max as u128 * tenths).div_ceil(10) as usize
}

/// What `panic!` was given, when it was a message.
fn panic_message(payload: &(dyn Any + Send)) -> &str {
    if let Some(message) = payload.downcast_ref::<&'static str>() {
        message
    } else if let Some(message) = payload.downcast_ref::<String>() {
        message
    } else {
        "a panic payload that is not a string"
    }
}

/// The metrics, through the facade's macros. The facade finds the recorder
/// on every call, so a recorder installed after the manager was built is
/// used from then on.
#[cfg(feature = "metrics")]
mod emit {
    use std::time::Duration;

    use metrics::Unit;

    use crate::close_reason::CloseReason;
    use crate::refusal::{Creation, Refusal};

    pub(super) const ACTIVE: &str = "mcp_sessions_active";
    pub(super) const MAX: &str = "mcp_sessions_max";
    pub(super) const CREATED: &str = "mcp_sessions_created_total";
    pub(super) const CLOSED: &str = "mcp_sessions_closed_total";
    pub(super) const REFUSED: &str = "mcp_sessions_refused_total";
    pub(super) const DURATION: &str = "mcp_session_duration_seconds";

    pub(super) fn describe_and_set_max(max_sessions: usize) {
        metrics::describe_gauge!(ACTIVE, Unit::Count, "Live sessions.");
        metrics::describe_gauge!(MAX, Unit::Count, "The cap on live sessions.");
        metrics::describe_counter!(CREATED, Unit::Count, "Sessions admitted.");
        metrics::describe_counter!(CLOSED, Unit::Count, "Sessions ended, by reason.");
        metrics::describe_counter!(
            REFUSED,
            Unit::Count,
            "Session creations refused, by reason."
        );
        metrics::describe_histogram!(
            DURATION,
            Unit::Seconds,
            "Lifetime of each ended session, from admission to close."
        );
        metrics::gauge!(MAX).set(max_sessions as f64);
    }

    pub(super) fn created(max_sessions: usize, live_after: usize) {
        metrics::counter!(CREATED).increment(1);
        set_gauges(max_sessions, live_after);
    }

    pub(super) fn closed(
        max_sessions: usize,
        reason: CloseReason,
        lived: Duration,
        live_after: usize,
    ) {
        // A label that is not a literal costs the facade one small vector per
        // call; closes are rarer than the allocations of a session's life.
        metrics::counter!(CLOSED, "reason" => reason.label()).increment(1);
        metrics::histogram!(DURATION).record(lived.as_secs_f64());
        set_gauges(max_sessions, live_after);
    }

    pub(super) fn refused(reason: Creation) {
        metrics::counter!(REFUSED, "reason" => Refusal::from(reason).label()).increment(1);
    }

    fn set_gauges(max_sessions: usize, live_after: usize) {
        metrics::gauge!(ACTIVE).set(live_after as f64);
        // Again on every report: the one at construction is lost when no
        // recorder was installed yet.
        metrics::gauge!(MAX).set(max_sessions as f64);
    }
}

#[cfg(test)]
mod tests;
