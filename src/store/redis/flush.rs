//! What a drain asks of the stores before the process exits: send what
//! they hold back.
//!
//! The stores hold writes back only while Redis refuses or cannot be
//! reached: DELETEs queued for a retry, session values never confirmed
//! written, appends whose outcome is unknown. The upkeep sends them a
//! round at a time; a flush runs rounds back to back until nothing is
//! held back or its time is up, so a clean stop loses nothing Redis could
//! take.

use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::time::Instant;

use super::Inner;

/// The wait between two rounds that sent nothing (Redis away).
const RETRY: Duration = Duration::from_millis(100);

impl Inner {
    /// Writes held back now (see the module docs).
    fn held_back(&self) -> usize {
        let deletes = self.pending_deletes.lock().len();
        let values = self
            .held
            .iter()
            .filter(|held| {
                !held.written.load(Ordering::Relaxed) && !held.deleted.load(Ordering::Relaxed)
            })
            .count();
        deletes + values + self.unsettled_appends()
    }

    /// Sends what the stores hold back, until nothing is or `until`;
    /// returns how many writes went out and how many are left.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: a round dropped midway leaves what it did not send
    /// queued, as an upkeep round cut by an outage does.
    pub(crate) async fn flush(&self, until: Instant) -> (usize, usize) {
        let before = self.held_back();
        let mut left = before;
        while left > 0 && Instant::now() < until {
            let _ = tokio::time::timeout_at(until, super::upkeep::round(self)).await;
            let now_left = self.held_back();
            if now_left >= left {
                tokio::time::sleep_until((Instant::now() + RETRY).min(until)).await;
            }
            left = now_left;
        }
        (before.saturating_sub(left), left)
    }
}
