//! Redis failures: in the log, at most one line per [`QUIET_PERIOD`] (the
//! first failure of an outage at once, then the count of failures in
//! between, then the recovery); and a short circuit, so that while Redis is
//! away a request does not wait for it.
//!
//! An unreachable Redis fails every store call of every request; logging
//! each would bury everything else in the log, and cost more than the
//! requests. Failures and recoveries share one quiet period, so a path that
//! keeps failing while others succeed cannot make the log flap either.
//! After a failure, store calls fail at once for [`PROBE_INTERVAL`]; then
//! the next call tries Redis again: a Redis that does not answer costs a
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

#[derive(Debug, Default)]
pub(crate) struct ErrorLog {
    /// When the last line was written.
    last_line: Mutex<Option<Instant>>,
    /// When Redis last failed.
    last_failure: Mutex<Option<Instant>>,
    /// Failures since the last line.
    unreported: AtomicU64,
    failing: AtomicBool,
}

impl ErrorLog {
    /// Records a failure of `operation` that says Redis is unreachable
    /// (store calls skip it for [`PROBE_INTERVAL`]); logs it unless a line
    /// was written within [`QUIET_PERIOD`].
    pub(crate) fn failed(&self, operation: &str, error: &dyn std::fmt::Display) {
        self.failing.store(true, Ordering::Relaxed);
        *self.last_failure.lock() = Some(Instant::now());
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

    /// Records a success; logs the recovery if the last call had failed
    /// (unless a line was written within [`QUIET_PERIOD`]).
    pub(crate) fn succeeded(&self) {
        // The common case, without a write to shared memory.
        if !self.failing.load(Ordering::Relaxed) || !self.failing.swap(false, Ordering::Relaxed) {
            return;
        }
        if self.take_line(Instant::now()) {
            let since = self.unreported.swap(0, Ordering::Relaxed);
            tracing::info!(failures_not_logged = since, "redis store reachable again");
        }
    }

    /// Whether Redis failed within [`PROBE_INTERVAL`] and has not answered
    /// since: store calls then skip it.
    pub(crate) fn recently_failed(&self) -> bool {
        self.failing.load(Ordering::Relaxed)
            && self
                .last_failure
                .lock()
                .is_some_and(|at| at.elapsed() < PROBE_INTERVAL)
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
            log.failed("op", &"down");
        }
        assert_eq!(log.unreported.load(Ordering::Relaxed), 99);
        tokio::time::advance(QUIET_PERIOD).await;
        log.failed("op", &"down");
        assert_eq!(
            log.unreported.load(Ordering::Relaxed),
            0,
            "reported with the line"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn failures_between_successes_do_not_make_the_log_flap() {
        let log = ErrorLog::default();
        log.failed("one path", &"down");
        for _ in 0..50 {
            log.succeeded();
            log.failed("one path", &"down");
        }
        // One line (the first failure); the recoveries and failures since
        // fell in its quiet period.
        assert_eq!(log.unreported.load(Ordering::Relaxed), 50);
        tokio::time::advance(QUIET_PERIOD).await;
        log.succeeded();
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
        assert!(!log.recently_failed());
        log.failed("op", &"down");
        assert!(log.recently_failed());
        tokio::time::advance(PROBE_INTERVAL).await;
        assert!(!log.recently_failed(), "the next call probes");
        log.failed("op", &"still down");
        assert!(log.recently_failed());
        log.succeeded();
        assert!(!log.recently_failed(), "an answer closes the circuit");
        log.refused("op", &"OOM");
        assert!(!log.recently_failed(), "an error Redis answered with");
    }
}
