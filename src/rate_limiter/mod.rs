//! Exact rolling-window limit on session creation.
//!
//! # Invariant kept here
//!
//! Never more than `max_creates` grants in any window of length `window`:
//! for every two grants at `t1 <= t2` counted together, `t2 - t1 < window`,
//! and no set of more than `max_creates` grants fits in such a span.
//!
//! # Semantics
//!
//! This is a sliding *log*, not GCRA or a token bucket: the limiter remembers
//! the time of each of the last `max_creates` grants. A request at `now` is
//! granted iff fewer than `max_creates` grants happened in `(now - window,
//! now]`. There is no burst allowance beyond `max_creates` and no
//! approximation: a limit of 10 per minute admits the 11th creation exactly
//! one minute after the 1st, never sooner.
//!
//! The algorithm lives in [`log`] as a [`GrantLog`] without a lock, so the
//! per-client limits (`clients::table`) run exactly the same code.
//!
//! # Why a mutex
//!
//! The log is a `VecDeque` of at most `max_creates` timestamps behind a
//! `parking_lot::Mutex`. The critical section is a few comparisons and one
//! push (amortised O(1): each grant is pruned once) and never spans an
//! `.await`. Only session creation takes this lock, never a lookup.
//!
//! # Roll-back
//!
//! A [`Grant`] that is dropped without [`Grant::commit`] (its creation failed
//! or its future was dropped while waiting for a slot) removes its own entry
//! from the log, identified by a unique ticket, so it is returned exactly once
//! and never frees somebody else's grant.

pub(crate) mod log;
#[cfg(all(test, mcp_bounded_session_loom))]
mod loom_tests;

use std::time::Duration;

use tokio::time::Instant;

use crate::sync::Mutex;
pub(crate) use log::{GrantLog, RateLimit};

/// Rolling-window creation limiter.
#[derive(Debug)]
pub(crate) struct RateLimiter {
    limit: RateLimit,
    log: Mutex<GrantLog>,
}

/// One reserved creation. Dropping it without [`Grant::commit`] returns it.
#[must_use = "dropping a Grant returns it to the limiter"]
#[derive(Debug)]
pub(crate) struct Grant<'a> {
    limiter: &'a RateLimiter,
    ticket: u64,
    committed: bool,
}

impl RateLimiter {
    /// # Panics
    ///
    /// Panics if `max_creates` is 0 or `window` is zero.
    pub(crate) fn new(max_creates: usize, window: Duration) -> Self {
        Self {
            limit: RateLimit::new(max_creates, window),
            log: Mutex::new(GrantLog::with_capacity(max_creates.min(4096))),
        }
    }

    /// Panics with an actionable message unless the limit admits something.
    pub(crate) fn validate(max_creates: usize, window: Duration) {
        RateLimit::new(max_creates, window);
    }

    /// Reserves one creation, or says how long until one is possible.
    pub(crate) fn try_acquire(&self) -> Result<Grant<'_>, Duration> {
        self.try_acquire_at(Instant::now())
    }

    /// [`Self::try_acquire`] at a given time. A `now` earlier than the newest
    /// grant (a clock read before a concurrent caller's) counts as that
    /// grant's time, which keeps the log sorted and only ever delays expiry.
    pub(crate) fn try_acquire_at(&self, now: Instant) -> Result<Grant<'_>, Duration> {
        let ticket = self.log.lock().try_grant(self.limit, now)?;
        Ok(Grant {
            limiter: self,
            ticket,
            committed: false,
        })
    }

    /// How long until a creation would be granted (zero if it would be now).
    pub(crate) fn retry_after(&self) -> Duration {
        let now = Instant::now();
        self.log.lock().retry_after(self.limit, now)
    }

    fn give_back(&self, ticket: u64) {
        self.log.lock().give_back(ticket);
    }

    /// Grants currently remembered (expired ones may not be pruned yet).
    #[cfg(test)]
    pub(crate) fn granted_in_log(&self) -> usize {
        self.log.lock().len()
    }
}

impl Grant<'_> {
    /// Keeps the grant: the creation it reserved happened.
    pub(crate) fn commit(mut self) {
        self.committed = true;
    }
}

impl Drop for Grant<'_> {
    fn drop(&mut self) {
        if !self.committed {
            self.limiter.give_back(self.ticket);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn grants_exactly_max_per_window() {
        let limiter = RateLimiter::new(3, Duration::from_secs(10));
        for _ in 0..3 {
            limiter.try_acquire().unwrap().commit();
        }
        let wait = limiter.try_acquire().unwrap_err();
        assert_eq!(wait, Duration::from_secs(10));
        tokio::time::advance(Duration::from_millis(9_999)).await;
        assert_eq!(limiter.try_acquire().unwrap_err(), Duration::from_millis(1));
        tokio::time::advance(Duration::from_millis(1)).await;
        limiter.try_acquire().unwrap().commit();
    }

    #[tokio::test(start_paused = true)]
    async fn rolling_not_fixed_window() {
        // 2 per 10 s: grants at 0 s and 6 s; at 11 s only the 0 s one expired.
        let limiter = RateLimiter::new(2, Duration::from_secs(10));
        limiter.try_acquire().unwrap().commit();
        tokio::time::advance(Duration::from_secs(6)).await;
        limiter.try_acquire().unwrap().commit();
        tokio::time::advance(Duration::from_secs(5)).await;
        limiter.try_acquire().unwrap().commit();
        assert_eq!(limiter.try_acquire().unwrap_err(), Duration::from_secs(5));
    }

    #[tokio::test(start_paused = true)]
    async fn dropped_grant_is_returned_once() {
        let limiter = RateLimiter::new(2, Duration::from_secs(10));
        limiter.try_acquire().unwrap().commit();
        let uncommitted = limiter.try_acquire().unwrap();
        assert!(limiter.try_acquire().is_err());
        drop(uncommitted);
        assert_eq!(limiter.granted_in_log(), 1);
        // Returning one grant frees exactly one creation, not two.
        limiter.try_acquire().unwrap().commit();
        assert!(limiter.try_acquire().is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn rollback_of_an_older_grant_keeps_newer_ones() {
        let limiter = RateLimiter::new(3, Duration::from_secs(10));
        let first = limiter.try_acquire().unwrap();
        limiter.try_acquire().unwrap().commit();
        limiter.try_acquire().unwrap().commit();
        drop(first);
        assert_eq!(limiter.granted_in_log(), 2);
        limiter.try_acquire().unwrap().commit();
        assert!(limiter.try_acquire().is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn retry_after_matches_refusal() {
        let limiter = RateLimiter::new(1, Duration::from_secs(4));
        assert_eq!(limiter.retry_after(), Duration::ZERO);
        limiter.try_acquire().unwrap().commit();
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(limiter.retry_after(), Duration::from_secs(3));
        assert_eq!(limiter.try_acquire().unwrap_err(), Duration::from_secs(3));
    }

    #[test]
    #[should_panic(expected = "max_creates must be at least 1")]
    fn zero_creates_panics() {
        let _ = RateLimiter::new(0, Duration::from_secs(1));
    }

    #[test]
    #[should_panic(expected = "window must be longer than zero")]
    fn zero_window_panics() {
        let _ = RateLimiter::new(1, Duration::ZERO);
    }
}
