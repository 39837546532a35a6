//! Redis failures: in the log, at most one line per [`QUIET_PERIOD`] (the
//! first failure of an outage at once, then the count of failures in
//! between, then the recovery); and a short circuit, so that while Redis is
//! away a request does not wait for it.
//!
//! The short circuit is kept per slot: a Redis Cluster whose one node
//! cannot be reached still serves the slots of the others, so only calls
//! for the slots seen failing skip it. A single Redis is one slot.
//!
//! An unreachable Redis fails every store call of every request; logging
//! each would bury everything else in the log, and cost more than the
//! requests. Failures and recoveries share one quiet period, so a path that
//! keeps failing while others succeed cannot make the log flap either.
//! After a failure, store calls for that slot fail at once for
//! [`PROBE_INTERVAL`]; then the next call tries Redis again: a Redis that does not answer costs a
//! request nothing but the event ids it cannot get, instead of a timeout
//! per event.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::time::Instant;

/// The shortest time between two log lines.
const QUIET_PERIOD: Duration = Duration::from_secs(10);
/// How long after a failure store calls skip Redis.
pub(crate) const PROBE_INTERVAL: Duration = Duration::from_secs(1);

#[derive(Debug)]
pub(crate) struct ErrorLog {
    /// When the last line was written.
    last_line: Mutex<Option<Instant>>,
    /// Failures since the last line.
    unreported: AtomicU64,
    /// Whether the last call that reached or tried Redis failed.
    failing: AtomicBool,
    /// When a call for each slot last failed, in ms since `epoch` plus
    /// one; 0 if none did since its last success.
    failures: Box<[AtomicU64]>,
    epoch: Instant,
}

impl Default for ErrorLog {
    /// For a single Redis: one slot.
    fn default() -> Self {
        Self::new(1)
    }
}

impl ErrorLog {
    /// A log whose short circuit keeps `slots` slots apart.
    pub(crate) fn new(slots: usize) -> Self {
        Self {
            last_line: Mutex::new(None),
            unreported: AtomicU64::new(0),
            failing: AtomicBool::new(false),
            failures: (0..slots.max(1)).map(|_| AtomicU64::new(0)).collect(),
            epoch: Instant::now(),
        }
    }

    fn stamp(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis())
            .unwrap_or(u64::MAX - 1)
            .saturating_add(1)
    }

    fn slot(&self, slot: usize) -> &AtomicU64 {
        &self.failures[slot % self.failures.len()]
    }

    /// Records a failure of `operation` on `slot` that says Redis is
    /// unreachable (store calls for that slot skip it for
    /// [`PROBE_INTERVAL`]); logs it unless a line was written within
    /// [`QUIET_PERIOD`].
    pub(crate) fn failed(&self, slot: usize, operation: &str, error: &dyn std::fmt::Display) {
        self.slot(slot).store(self.stamp(), Ordering::Relaxed);
        self.lost(operation, error);
    }

    /// Records a failure that concerns no slot (the pub/sub listener's):
    /// logged as an outage, but no store call skips Redis for it.
    pub(crate) fn lost(&self, operation: &str, error: &dyn std::fmt::Display) {
        self.failing.store(true, Ordering::Relaxed);
        self.refused(operation, error);
    }

    /// Records an error Redis answered with (out of memory, a script's
    /// error): logged like an outage, but it says nothing of other calls,
    /// so it does not make them skip Redis.
    pub(crate) fn refused(&self, operation: &str, error: &dyn std::fmt::Display) {
        let now = Instant::now();
        if !self.take_line(now) {
            self.unreported.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let since = self.unreported.swap(0, Ordering::Relaxed);
        tracing::warn!(
            operation,
            %error,
            failures_not_logged = since,
            "redis store failed; sessions on this instance go on (events without ids), \
             restores of sessions held elsewhere and replays through the store fail \
             until redis answers"
        );
    }

    /// Records a success on `slot`; logs the recovery if the last call had
    /// failed (unless a line was written within [`QUIET_PERIOD`]).
    pub(crate) fn succeeded(&self, slot: usize) {
        // The common case, without a write to shared memory.
        let failures = self.slot(slot);
        if failures.load(Ordering::Relaxed) != 0 {
            failures.store(0, Ordering::Relaxed);
        }
        if !self.failing.load(Ordering::Relaxed) || !self.failing.swap(false, Ordering::Relaxed) {
            return;
        }
        if self.take_line(Instant::now()) {
            let since = self.unreported.swap(0, Ordering::Relaxed);
            tracing::info!(failures_not_logged = since, "redis store reachable again");
        }
    }

    /// Whether a call for `slot` failed within [`PROBE_INTERVAL`] and none
    /// succeeded since: store calls for it then skip Redis.
    pub(crate) fn recently_failed(&self, slot: usize) -> bool {
        let failed = self.slot(slot).load(Ordering::Relaxed);
        failed != 0
            && self.stamp().saturating_sub(failed)
                < u64::try_from(PROBE_INTERVAL.as_millis()).unwrap_or(u64::MAX)
    }

    /// Claims the right to write a line now.
    fn take_line(&self, now: Instant) -> bool {
        let mut last_line = self.last_line.lock();
        if last_line.is_some_and(|at| now.duration_since(at) < QUIET_PERIOD) {
            return false;
        }
        *last_line = Some(now);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn an_outage_writes_one_line_per_quiet_period() {
        let log = ErrorLog::default();
        for _ in 0..100 {
            log.failed(0, "op", &"down");
        }
        assert_eq!(log.unreported.load(Ordering::Relaxed), 99);
        tokio::time::advance(QUIET_PERIOD).await;
        log.failed(0, "op", &"down");
        assert_eq!(
            log.unreported.load(Ordering::Relaxed),
            0,
            "reported with the line"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn failures_between_successes_do_not_make_the_log_flap() {
        let log = ErrorLog::default();
        log.failed(0, "one path", &"down");
        for _ in 0..50 {
            log.succeeded(0);
            log.failed(0, "one path", &"down");
        }
        // One line (the first failure); the recoveries and failures since
        // fell in its quiet period.
        assert_eq!(log.unreported.load(Ordering::Relaxed), 50);
        tokio::time::advance(QUIET_PERIOD).await;
        log.succeeded(0);
        assert_eq!(
            log.unreported.load(Ordering::Relaxed),
            0,
            "the recovery line"
        );
        assert!(!log.failing.load(Ordering::Relaxed));
    }

    #[tokio::test(start_paused = true)]
    async fn after_a_failure_calls_skip_redis_for_the_probe_interval() {
        let log = ErrorLog::default();
        assert!(!log.recently_failed(0));
        log.failed(0, "op", &"down");
        assert!(log.recently_failed(0));
        tokio::time::advance(PROBE_INTERVAL).await;
        assert!(!log.recently_failed(0), "the next call probes");
        log.failed(0, "op", &"still down");
        assert!(log.recently_failed(0));
        log.succeeded(0);
        assert!(!log.recently_failed(0), "an answer closes the circuit");
        log.refused("op", &"OOM");
        assert!(!log.recently_failed(0), "an error Redis answered with");
        log.lost("subscribe", &"down");
        assert!(!log.recently_failed(0), "the listener's failures");
    }

    #[tokio::test(start_paused = true)]
    async fn a_cluster_skips_only_the_slots_that_failed() {
        let log = ErrorLog::new(16_384);
        log.failed(7, "op", &"node down");
        assert!(log.recently_failed(7));
        assert!(!log.recently_failed(8), "another slot still tries Redis");
        log.succeeded(8);
        assert!(
            log.recently_failed(7),
            "a success elsewhere closes no other slot"
        );
        log.succeeded(7);
        assert!(!log.recently_failed(7));
    }
}
