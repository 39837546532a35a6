//! Redis failures in the log: the first one of an outage at once, then at
//! most one line per [`QUIET_PERIOD`] with the count of the failures in
//! between, and one line when Redis answers again.
//!
//! An unreachable Redis fails every store call of every request; logging
//! each would bury everything else in the log, and cost more than the
//! requests.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::time::Instant;

/// The shortest time between two log lines about the same outage.
const QUIET_PERIOD: Duration = Duration::from_secs(10);

#[derive(Debug, Default)]
pub(crate) struct ErrorLog {
    /// When the last line was written, if during the current outage.
    last_line: Mutex<Option<Instant>>,
    /// Failures since the last line.
    unreported: AtomicU64,
    failing: AtomicBool,
}

impl ErrorLog {
    /// Records a failure of `operation`; logs it if the log has been quiet
    /// about this outage for [`QUIET_PERIOD`].
    pub(crate) fn failed(&self, operation: &str, error: &dyn std::fmt::Display) {
        self.failing.store(true, Ordering::Relaxed);
        let mut last_line = self.last_line.lock();
        let now = Instant::now();
        if last_line.is_some_and(|at| now.duration_since(at) < QUIET_PERIOD) {
            self.unreported.fetch_add(1, Ordering::Relaxed);
            return;
        }
        *last_line = Some(now);
        drop(last_line);
        let since = self.unreported.swap(0, Ordering::Relaxed);
        tracing::warn!(
            operation,
            %error,
            failures_not_logged = since,
            "redis store failed; sessions on this instance go on, restores on other \
             instances and replays through the store fail until redis answers"
        );
    }

    /// Records a success; logs the recovery if the last call had failed.
    pub(crate) fn succeeded(&self) {
        // The common case, without a write to shared memory.
        if !self.failing.load(Ordering::Relaxed) {
            return;
        }
        if self.failing.swap(false, Ordering::Relaxed) {
            *self.last_line.lock() = None;
            let since = self.unreported.swap(0, Ordering::Relaxed);
            tracing::info!(failures_not_logged = since, "redis store reachable again");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn an_outage_writes_one_line_per_quiet_period() {
        let log = ErrorLog::default();
        log.failed("op", &"down");
        for _ in 0..99 {
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
        assert!(log.failing.load(Ordering::Relaxed));
        log.succeeded();
        assert!(!log.failing.load(Ordering::Relaxed));
        assert!(
            log.last_line.lock().is_none(),
            "the next outage logs at once"
        );
    }
}
