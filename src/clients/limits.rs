//! What each client may do ([`ClientLimits`]) and why it may not now
//! ([`ClientRefusal`]); `table` keeps the limits.

use std::time::Duration;

use crate::rate_limiter::RateLimit;

/// Idle keys remembered for their rate-limit history unless configured
/// otherwise (see `table`). Measured with `ClientKey`s, an idle key costs
/// about 240 bytes with up to four grants in its window and 525 bytes with
/// ten (the log's buffer grows by doubling): 24 to 53 MB at this bound. An
/// attacker must use more distinct keys than this within one window to
/// make the table forget any of them.
pub(crate) const DEFAULT_MAX_IDLE_KEYS: usize = 100_000;

/// What each client may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ClientLimits {
    /// Live sessions (and creations in progress) per client; `None` for no
    /// quota.
    pub(crate) max_sessions: Option<usize>,
    /// At most `.0` creations per client in any window of `.1`; `None` for
    /// no per-client rate limit.
    pub(crate) rate: Option<(usize, Duration)>,
    /// How many idle keys are remembered for their rate-limit history (see
    /// `table`); 0 forgets a key's history as soon as it is idle.
    pub(crate) max_idle_keys: usize,
}

impl Default for ClientLimits {
    fn default() -> Self {
        Self {
            max_sessions: None,
            rate: None,
            max_idle_keys: DEFAULT_MAX_IDLE_KEYS,
        }
    }
}

impl ClientLimits {
    /// Panics with an actionable message unless every limit admits
    /// something.
    pub(crate) fn validate(&self) {
        assert!(
            self.max_sessions != Some(0),
            "max_sessions per client must be at least 1; configure no quota instead of 0"
        );
        if let Some((max, window)) = self.rate {
            RateLimit::new(max, window);
        }
    }
}

/// Why a client may not create a session now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ClientRefusal {
    /// The client's own rate limit is reached.
    #[error("this client's session creation rate limit is reached; retry in {retry_after:?}")]
    RateLimited {
        /// Until the client's window frees a creation.
        retry_after: Duration,
    },
    /// The client has its quota of sessions (live or being created); the
    /// manager replaces one of them instead (`table::Reservation::take_unit_of`).
    #[cfg(test)]
    #[error("this client already has its maximum number of sessions")]
    AtQuota,
    /// The session to replace is no longer listed: it ended meanwhile, so
    /// a plain `ClientTable::reserve` may succeed now.
    #[error("the session to replace has already ended")]
    VictimEnded,
}
