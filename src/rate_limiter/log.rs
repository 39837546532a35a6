//! The sliding-log algorithm itself, without a lock: one [`GrantLog`] per
//! thing being limited. [`RateLimiter`](super::RateLimiter) keeps one for the
//! whole manager; the per-client table keeps one per client. The caller
//! holds whatever lock guards the log.
//!
//! # Invariant kept here
//!
//! A log never admits more than `max` grants in any window of length
//! `window` (see the parent module). It holds `(granted_at, ticket)` pairs,
//! sorted by time: a grant's time is clamped to be no earlier than the
//! newest one's, so expired grants are always at the front and pruning
//! from the front is exact. Tickets are unique within a log, so giving a
//! grant back removes exactly that grant.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

/// At most `max` grants in any window of length `window`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RateLimit {
    max: usize,
    window: Duration,
}

impl RateLimit {
    /// # Panics
    ///
    /// Panics if `max` is 0 or `window` is zero.
    pub(crate) fn new(max: usize, window: Duration) -> Self {
        assert!(
            max >= 1,
            "max_creates must be at least 1; configure no rate limit instead of 0"
        );
        assert!(
            !window.is_zero(),
            "the rate-limit window must be longer than zero; configure no rate limit instead"
        );
        Self { max, window }
    }
}

/// The grants of one limited thing that may still count.
#[derive(Debug, Default)]
pub(crate) struct GrantLog {
    /// `(granted_at, ticket)`, oldest first. Expired grants may linger until
    /// the next [`GrantLog::try_grant`] or [`GrantLog::prune`].
    grants: VecDeque<(Instant, u64)>,
    next_ticket: u64,
}

impl GrantLog {
    /// An empty log with room for `capacity` grants.
    pub(crate) fn with_capacity(capacity: usize) -> Self {
        Self {
            grants: VecDeque::with_capacity(capacity),
            next_ticket: 0,
        }
    }

    /// Records a grant at `now` and returns its ticket, or says how long
    /// until one would be admitted. A `now` earlier than the newest grant
    /// (a clock read before a concurrent caller's) counts as that grant's
    /// time, which keeps the log sorted and only ever delays expiry.
    pub(crate) fn try_grant(&mut self, limit: RateLimit, now: Instant) -> Result<u64, Duration> {
        let now = self
            .grants
            .back()
            .map_or(now, |&(newest, _)| now.max(newest));
        self.prune(limit, now);
        if self.grants.len() >= limit.max {
            let oldest = self.grants.front().map_or(now, |&(at, _)| at);
            return Err(until_free(oldest, limit.window, now));
        }
        let ticket = self.next_ticket;
        self.next_ticket += 1;
        self.grants.push_back((now, ticket));
        Ok(ticket)
    }

    /// Drops the grants that no longer count at `now`.
    pub(crate) fn prune(&mut self, limit: RateLimit, now: Instant) {
        while let Some(&(granted_at, _)) = self.grants.front() {
            if now.saturating_duration_since(granted_at) < limit.window {
                break;
            }
            self.grants.pop_front();
        }
    }

    /// How long from `now` until a grant would be admitted (zero if it
    /// would be now). Reads only, so it works on an unpruned log.
    pub(crate) fn retry_after(&self, limit: RateLimit, now: Instant) -> Duration {
        if self.grants.len() < limit.max {
            return Duration::ZERO;
        }
        // Expired grants may not be pruned yet; the one that must expire
        // before a new grant fits is `len - max` from the front.
        let blocking = self.grants[self.grants.len() - limit.max].0;
        until_free(blocking, limit.window, now)
    }

    /// Removes the grant with `ticket`, if it is still logged (an expired
    /// one may already be pruned, which returns nothing twice).
    pub(crate) fn give_back(&mut self, ticket: u64) {
        // Usually the newest grant: search from the back.
        if let Some(pos) = self.grants.iter().rposition(|&(_, t)| t == ticket) {
            self.grants.remove(pos);
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.grants.is_empty()
    }

    /// Grants logged, expired ones included until pruned.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.grants.len()
    }
}

/// How long from `now` until a grant made at `granted_at` stops counting; a
/// window too long to add to the clock ("n per lifetime") never ends.
fn until_free(granted_at: Instant, window: Duration, now: Instant) -> Duration {
    granted_at
        .checked_add(window)
        .map_or(Duration::MAX, |free_at| {
            free_at.saturating_duration_since(now)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit(max: usize, secs: u64) -> RateLimit {
        RateLimit::new(max, Duration::from_secs(secs))
    }

    #[test]
    fn a_full_log_names_the_wait_for_its_oldest_grant() {
        let (limit, start) = (limit(2, 10), Instant::now());
        let mut log = GrantLog::default();
        log.try_grant(limit, start).unwrap();
        log.try_grant(limit, start + Duration::from_secs(3))
            .unwrap();
        let wait = log.try_grant(limit, start + Duration::from_secs(4));
        assert_eq!(wait, Err(Duration::from_secs(6)));
        assert!(
            log.try_grant(limit, start + Duration::from_secs(10))
                .is_ok()
        );
    }

    #[test]
    fn a_clock_read_behind_the_newest_grant_counts_as_its_time() {
        let (limit, start) = (limit(1, 10), Instant::now());
        let mut log = GrantLog::default();
        log.try_grant(limit, start + Duration::from_secs(5))
            .unwrap();
        // Read before the grant above was taken: waits from the newer time.
        assert_eq!(log.try_grant(limit, start), Err(Duration::from_secs(10)));
    }

    #[test]
    fn prune_forgets_exactly_the_expired_grants() {
        let (limit, start) = (limit(3, 10), Instant::now());
        let mut log = GrantLog::default();
        log.try_grant(limit, start).unwrap();
        log.try_grant(limit, start + Duration::from_secs(1))
            .unwrap();
        log.prune(limit, start + Duration::from_secs(10));
        assert_eq!(log.len(), 1);
        log.prune(limit, start + Duration::from_secs(11));
        assert_eq!(log.len(), 0);
    }

    #[test]
    fn giving_back_a_ticket_twice_returns_one_grant() {
        let (limit, start) = (limit(2, 10), Instant::now());
        let mut log = GrantLog::default();
        let first = log.try_grant(limit, start).unwrap();
        log.try_grant(limit, start).unwrap();
        log.give_back(first);
        log.give_back(first);
        assert_eq!(log.len(), 1);
    }

    #[test]
    fn retry_after_reads_an_unpruned_log() {
        let (limit, start) = (limit(2, 10), Instant::now());
        let mut log = GrantLog::default();
        log.try_grant(limit, start).unwrap();
        log.try_grant(limit, start + Duration::from_secs(4))
            .unwrap();
        let at = |secs| start + Duration::from_secs(secs);
        assert_eq!(log.retry_after(limit, at(7)), Duration::from_secs(3));
        // The oldest grant expired but is still logged: a grant fits now.
        assert_eq!(log.retry_after(limit, at(12)), Duration::ZERO);
    }

    #[test]
    fn a_window_too_long_for_the_clock_refuses_without_overflow() {
        let limit = RateLimit::new(1, Duration::MAX);
        let now = Instant::now();
        let mut log = GrantLog::default();
        log.try_grant(limit, now).unwrap();
        assert_eq!(log.try_grant(limit, now), Err(Duration::MAX));
        assert_eq!(log.retry_after(limit, now), Duration::MAX);
    }
}
