//! Per-client session quotas and creation rate limits, in bounded memory.
//!
//! # Invariants kept here
//!
//! 1. **Exact per-client rate.** Each key has its own [`GrantLog`], the same
//!    sliding log as the global limit: while a key's history is kept (always
//!    while it is busy, see 3), it never gets more than `N` grants in any
//!    window. One key's
//!    grants never touch another key's log.
//! 2. **Exact per-client quota.** For every key, its listed live sessions
//!    plus its reservations in progress never exceed `max_sessions`. A
//!    [`Reservation`] takes one unit after the check, under the same lock;
//!    [`Reservation::commit`] turns it into a listed session, dropping it
//!    gives it back. A key at its quota may instead get a reservation
//!    *without* a unit ([`ClientTable::reserve_or_replace`]), which takes
//!    one only by moving a listed session's unit to itself
//!    ([`Reservation::take_unit_of`]), in one step under the lock: the
//!    key's count never dips below the quota while one of its sessions is
//!    being replaced, so a concurrent creation of the same key cannot slip
//!    into the gap (and evict another key's session for a slot). A unit
//!    comes back exactly once: [`ClientTable::session_ended`] removes the
//!    session only if it is still listed, so a second call, or a call for a
//!    session that was replaced, changes nothing.
//! 3. **Bounded memory.** A key has an entry only while it is *busy* (it has
//!    a live session or a reservation: their number is bounded by the live
//!    sessions and the creations in progress, which the manager bounds) or
//!    while its log still holds grants, for at most
//!    [`ClientLimits::max_idle_keys`] idle keys, the least recently used
//!    forgotten first (see `keyed`, which keeps this for both tables). The
//!    global rate limit stays the outer bound on creations.
//!
//! # Why one mutex
//!
//! The whole table is behind one `parking_lot::Mutex`. Only session
//! creation and the end of a session take it, never a lookup of an existing
//! session; each critical section is a few hash-map operations (amortised
//! O(1)) plus, for a replaced or ended session, a search of the key's list
//! (O(quota)). It is never held across an `.await`: the API is synchronous.
//!
//! The keys are hashed with a random key (see `keyed`).

use std::hash::{Hash, RandomState};
#[cfg(test)]
use std::time::Duration;

use hashlink::LinkedHashSet;
use tokio::time::Instant;

use super::keyed::{Entry, Keyed, Retention};
use super::limits::{ClientLimits, ClientRefusal};
use crate::rate_limiter::{GrantLog, RateLimit};
use crate::sync::Mutex;

/// Per-client quotas and rate limits over keys `K`, listing each key's
/// live sessions `S` (see the module docs).
#[derive(Debug)]
pub(crate) struct ClientTable<K, S> {
    settings: Settings,
    state: Mutex<State<K, S>>,
}

#[derive(Debug, Clone, Copy)]
struct Settings {
    rate: Option<RateLimit>,
    max_sessions: Option<usize>,
    max_idle_keys: usize,
}

/// Keys with a live session or a reservation, and the history of idle ones.
type State<K, S> = Keyed<K, ClientEntry<S>>;

impl Settings {
    fn retention(self) -> Retention {
        Retention {
            rate: self.rate,
            max_idle: self.max_idle_keys,
        }
    }
}

#[derive(Debug)]
struct ClientEntry<S> {
    log: GrantLog,
    /// Oldest admission first; a linked set, so that a session's end is
    /// O(1) even for a key (a NAT, a proxy) that holds thousands.
    sessions: LinkedHashSet<S, RandomState>,
    /// Reservations in progress, with or without a unit.
    reserved: usize,
    /// Those of `reserved` without a unit (waiting to replace a session):
    /// they do not count against the quota.
    unitless: usize,
}

impl<S> Entry for ClientEntry<S> {
    fn with_log(log: GrantLog) -> Self {
        Self {
            log,
            sessions: LinkedHashSet::default(),
            reserved: 0,
            unitless: 0,
        }
    }

    fn is_busy(&self) -> bool {
        self.reserved > 0 || !self.sessions.is_empty()
    }

    fn into_log(self) -> GrantLog {
        self.log
    }
}

/// One session creation admitted for a key: one grant of its rate limit
/// and one unit of its quota (or, at the quota, none yet: see
/// [`Reservation::take_unit_of`]). [`Reservation::commit`] keeps both;
/// dropping it gives back exactly these.
#[must_use = "dropping a Reservation gives back its grant and its quota unit"]
#[derive(Debug)]
pub(crate) struct Reservation<'a, K: Clone + Eq + Hash, S: Clone + Eq + Hash> {
    table: &'a ClientTable<K, S>,
    key: K,
    ticket: Option<u64>,
    /// Whether it holds a quota unit.
    unit: bool,
    committed: bool,
}

impl<K: Clone + Eq + Hash, S: Clone + Eq + Hash> ClientTable<K, S> {
    /// # Panics
    ///
    /// Panics if a limit admits nothing (see [`ClientLimits::validate`]).
    pub(crate) fn new(limits: ClientLimits) -> Self {
        limits.validate();
        Self {
            settings: Settings {
                rate: limits.rate.map(|(max, window)| RateLimit::new(max, window)),
                max_sessions: limits.max_sessions,
                max_idle_keys: limits.max_idle_keys,
            },
            state: Mutex::new(Keyed::new()),
        }
    }

    /// Admits one creation for `key`: checks its rate limit, then its quota.
    #[cfg(test)]
    pub(crate) fn reserve(&self, key: &K) -> Result<Reservation<'_, K, S>, ClientRefusal> {
        self.reserve_at(key, Instant::now())
    }

    /// [`Self::reserve`] at a given time.
    #[cfg(test)]
    pub(crate) fn reserve_at(
        &self,
        key: &K,
        now: Instant,
    ) -> Result<Reservation<'_, K, S>, ClientRefusal> {
        let reservation = self.admit(key, now)?;
        match reservation.holds_unit() {
            true => Ok(reservation),
            false => Err(ClientRefusal::AtQuota),
        }
    }

    /// Admits one creation for `key`: checks its rate limit, then its
    /// quota. At its quota the key still gets its grant, in a reservation
    /// that holds no unit yet ([`Reservation::holds_unit`] is false): the
    /// caller may move one of the key's sessions' unit to it with
    /// [`Reservation::take_unit_of`], or drop it (giving the grant back).
    pub(crate) fn reserve_or_replace(
        &self,
        key: &K,
    ) -> Result<Reservation<'_, K, S>, ClientRefusal> {
        self.admit(key, Instant::now())
    }

    fn admit(&self, key: &K, now: Instant) -> Result<Reservation<'_, K, S>, ClientRefusal> {
        let settings = self.settings;
        let (ticket, unit) =
            self.state
                .lock()
                .update(key, settings.retention(), now, |entry| {
                    let ticket = match settings.rate {
                        Some(limit) => {
                            Some(entry.log.try_grant(limit, now).map_err(|retry_after| {
                                ClientRefusal::RateLimited { retry_after }
                            })?)
                        }
                        None => None,
                    };
                    let units = entry.sessions.len() + entry.reserved - entry.unitless;
                    let unit = settings.max_sessions.is_none_or(|max| units < max);
                    // A reservation keeps its key busy, with or without a unit:
                    // its grant lives in the key's log.
                    entry.reserved += 1;
                    entry.unitless += usize::from(!unit);
                    Ok((ticket, unit))
                })?;
        Ok(Reservation {
            table: self,
            key: key.clone(),
            ticket,
            unit,
            committed: false,
        })
    }

    /// The live sessions listed for `key`, oldest admission first.
    pub(crate) fn sessions_of(&self, key: &K) -> Vec<S> {
        let state = self.state.lock();
        state
            .busy(key)
            .map_or_else(Vec::new, |entry| entry.sessions.iter().cloned().collect())
    }

    /// Unlists `session` of `key`, returning its quota unit; nothing if it
    /// is not listed (already ended, or replaced).
    pub(crate) fn session_ended(&self, key: &K, session: &S) {
        self.session_ended_at(key, session, Instant::now());
    }

    /// [`Self::session_ended`] at a given time.
    pub(crate) fn session_ended_at(&self, key: &K, session: &S, now: Instant) {
        let mut state = self.state.lock();
        // Only a busy key lists sessions; an idle one is not touched.
        if state.busy(key).is_some() {
            state.update(key, self.settings.retention(), now, |entry| {
                entry.sessions.remove(session);
            });
        }
    }

    /// How long until `key`'s rate limit would grant a creation (zero if it
    /// would now, or if there is no per-client rate limit). Does not count
    /// as a use of the key.
    #[cfg(test)]
    pub(crate) fn rate_retry_after(&self, key: &K) -> Duration {
        let Some(limit) = self.settings.rate else {
            return Duration::ZERO;
        };
        let now = Instant::now();
        let state = self.state.lock();
        let log = state
            .busy(key)
            .map(|entry| &entry.log)
            .or_else(|| state.idle_log(key));
        log.map_or(Duration::ZERO, |log| log.retry_after(limit, now))
    }

    /// Keys with an entry, busy or idle.
    #[cfg(test)]
    pub(crate) fn tracked_keys(&self) -> usize {
        let (busy, idle) = self.state.lock().counts();
        busy + idle
    }

    /// Keys kept only for their rate-limit history.
    #[cfg(test)]
    pub(crate) fn idle_keys(&self) -> usize {
        self.state.lock().counts().1
    }

    fn finish(&self, key: &K, ticket: Option<u64>, unit: bool, session: Option<S>) {
        self.state
            .lock()
            .update(key, self.settings.retention(), Instant::now(), |entry| {
                debug_assert!(entry.reserved > 0, "a reservation keeps its key busy");
                entry.reserved = entry.reserved.saturating_sub(1);
                if !unit {
                    entry.unitless = entry.unitless.saturating_sub(1);
                }
                match session {
                    Some(session) => {
                        entry.sessions.insert(session);
                    }
                    None => {
                        if let Some(ticket) = ticket {
                            entry.log.give_back(ticket);
                        }
                    }
                }
            });
    }
}

impl<K: Clone + Eq + Hash, S: Clone + Eq + Hash> Reservation<'_, K, S> {
    /// Whether it holds a quota unit (false: its key was at its quota).
    pub(crate) fn holds_unit(&self) -> bool {
        self.unit
    }

    /// Moves the quota unit of `victim`, one of the key's listed sessions,
    /// to this reservation, in one step under the table's lock: the
    /// victim is unlisted from then on, whether or not the reservation is
    /// committed, so the caller must end it (call this only once the
    /// victim is sure to end). Refuses with [`ClientRefusal::VictimEnded`],
    /// changing nothing, if the victim is no longer listed.
    pub(crate) fn take_unit_of(&mut self, victim: &S) -> Result<(), ClientRefusal> {
        debug_assert!(!self.unit, "a reservation holds one unit at most");
        let moved = self.table.state.lock().update(
            &self.key,
            self.table.settings.retention(),
            Instant::now(),
            |entry| {
                let moved = entry.sessions.remove(victim);
                if moved {
                    entry.unitless = entry.unitless.saturating_sub(1);
                }
                moved
            },
        );
        match moved {
            true => {
                self.unit = true;
                Ok(())
            }
            false => Err(ClientRefusal::VictimEnded),
        }
    }

    /// Keeps the grant and lists `session` as one of the key's live
    /// sessions, in the quota unit this reservation holds.
    pub(crate) fn commit(mut self, session: S) {
        debug_assert!(self.unit, "only a reservation with a unit is committed");
        self.committed = true;
        self.table
            .finish(&self.key, self.ticket, self.unit, Some(session));
    }

    /// The key this reservation is for.
    #[cfg(test)]
    pub(crate) fn key(&self) -> &K {
        &self.key
    }
}

impl<K: Clone + Eq + Hash, S: Clone + Eq + Hash> Drop for Reservation<'_, K, S> {
    fn drop(&mut self) {
        if !self.committed {
            self.table.finish(&self.key, self.ticket, self.unit, None);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clients::ClientKey;

    type Table = ClientTable<&'static str, u64>;

    fn table(max_sessions: Option<usize>, rate: Option<(usize, u64)>) -> Table {
        ClientTable::new(ClientLimits {
            max_sessions,
            rate: rate.map(|(max, secs)| (max, Duration::from_secs(secs))),
            ..ClientLimits::default()
        })
    }

    fn rate_limited(result: Result<Reservation<'_, &str, u64>, ClientRefusal>) -> Duration {
        match result {
            Err(ClientRefusal::RateLimited { retry_after }) => retry_after,
            other => panic!("expected a rate refusal, got {other:?}"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn exactly_the_budget_in_any_window() {
        let table = table(None, Some((3, 10)));
        for session in 0..3 {
            table.reserve(&"a").unwrap().commit(session);
        }
        assert_eq!(rate_limited(table.reserve(&"a")), Duration::from_secs(10));
        tokio::time::advance(Duration::from_millis(9_999)).await;
        assert_eq!(rate_limited(table.reserve(&"a")), Duration::from_millis(1));
        assert_eq!(table.rate_retry_after(&"a"), Duration::from_millis(1));
        tokio::time::advance(Duration::from_millis(1)).await;
        table.reserve(&"a").unwrap().commit(3);
    }

    #[tokio::test(start_paused = true)]
    async fn one_clients_flood_never_spends_anothers_budget() {
        let table = table(None, Some((2, 60)));
        table.reserve(&"flood").unwrap().commit(0);
        table.reserve(&"flood").unwrap().commit(1);
        for _ in 0..100 {
            rate_limited(table.reserve(&"flood"));
        }
        table.reserve(&"calm").unwrap().commit(2);
        table.reserve(&"calm").unwrap().commit(3);
        assert_eq!(table.rate_retry_after(&"other"), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn a_dropped_reservation_gives_back_its_grant_and_unit() {
        let table = table(Some(1), Some((1, 10)));
        let reservation = table.reserve(&"a").unwrap();
        assert_eq!(reservation.key(), &"a");
        rate_limited(table.reserve(&"a"));
        drop(reservation);
        assert_eq!(table.tracked_keys(), 0, "nothing left to remember");
        table.reserve(&"a").unwrap().commit(1);
        assert_eq!(table.sessions_of(&"a"), [1]);
    }

    #[tokio::test(start_paused = true)]
    async fn rollback_returns_exactly_its_own_grant() {
        let table = table(None, Some((3, 10)));
        let first = table.reserve(&"a").unwrap();
        tokio::time::advance(Duration::from_secs(1)).await;
        table.reserve(&"a").unwrap().commit(1);
        table.reserve(&"a").unwrap().commit(2);
        drop(first);
        table.reserve(&"a").unwrap().commit(3);
        // The grants left are from 1 s: the dropped one from 0 s is gone.
        assert_eq!(rate_limited(table.reserve(&"a")), Duration::from_secs(10));
    }

    #[tokio::test(start_paused = true)]
    async fn quota_counts_live_sessions_and_reservations_in_progress() {
        let table = table(Some(2), Some((3, 10)));
        table.reserve(&"a").unwrap().commit(1);
        let pending = table.reserve(&"a").unwrap();
        assert_eq!(table.reserve(&"a").unwrap_err(), ClientRefusal::AtQuota);
        pending.commit(2);
        assert_eq!(table.reserve(&"a").unwrap_err(), ClientRefusal::AtQuota);
        assert_eq!(table.sessions_of(&"a"), [1, 2]);
        // Refusals at the quota spent no grant: one of three is left.
        table.session_ended(&"a", &1);
        table.reserve(&"a").unwrap().commit(3);
        table.session_ended(&"a", &2);
        rate_limited(table.reserve(&"a"));
    }

    /// A replacement for key `a` at its quota of 1.
    fn replacement(table: &Table) -> Reservation<'_, &'static str, u64> {
        let reservation = table.reserve_or_replace(&"a").unwrap();
        assert!(!reservation.holds_unit(), "at its quota");
        reservation
    }

    #[tokio::test(start_paused = true)]
    async fn replacing_moves_the_victims_unit() {
        let table = table(Some(1), Some((3, 10)));
        table.reserve(&"a").unwrap().commit(1);
        assert_eq!(table.reserve(&"a").unwrap_err(), ClientRefusal::AtQuota);
        let mut replacing = replacement(&table);
        // Before the hand-over the victim's unit still counts...
        assert_eq!(table.reserve(&"a").unwrap_err(), ClientRefusal::AtQuota);
        replacing.take_unit_of(&1).unwrap();
        assert!(table.sessions_of(&"a").is_empty());
        // ... and after it, the replacement's: the key never dips below
        // its quota, so a racing creation finds no unit free.
        assert_eq!(table.reserve(&"a").unwrap_err(), ClientRefusal::AtQuota);
        // The victim's end, reported while the replacement is in progress
        // or later, changes nothing.
        table.session_ended(&"a", &1);
        assert_eq!(table.reserve(&"a").unwrap_err(), ClientRefusal::AtQuota);
        replacing.commit(2);
        table.session_ended(&"a", &1);
        assert_eq!(table.sessions_of(&"a"), [2]);
        assert_eq!(table.reserve(&"a").unwrap_err(), ClientRefusal::AtQuota);
    }

    #[tokio::test(start_paused = true)]
    async fn replacing_an_ended_session_takes_nothing() {
        let table = table(Some(1), Some((3, 10)));
        table.reserve(&"a").unwrap().commit(1);
        let mut replacing = replacement(&table);
        assert_eq!(
            replacing.take_unit_of(&7).unwrap_err(),
            ClientRefusal::VictimEnded
        );
        assert!(!replacing.holds_unit());
        assert_eq!(table.sessions_of(&"a"), [1]);
        // Dropped without a unit, it gives back its grant only.
        drop(replacing);
        assert_eq!(table.sessions_of(&"a"), [1]);
        assert_eq!(table.reserve(&"a").unwrap_err(), ClientRefusal::AtQuota);
        // Each refusal gave its grant back: two of three are left.
        let mut replacing = replacement(&table);
        replacing.take_unit_of(&1).unwrap();
        replacing.commit(2);
        let last = replacement(&table);
        rate_limited(table.reserve_or_replace(&"a"));
        drop(last);
    }

    #[tokio::test(start_paused = true)]
    async fn a_rate_limited_key_at_its_quota_gets_no_replacement() {
        let table = table(Some(1), Some((1, 10)));
        table.reserve(&"a").unwrap().commit(1);
        rate_limited(table.reserve_or_replace(&"a"));
        assert_eq!(table.sessions_of(&"a"), [1], "the victim keeps its unit");
    }

    #[tokio::test(start_paused = true)]
    async fn a_dropped_replacement_frees_the_unit_not_the_victim() {
        let table = table(Some(1), None);
        table.reserve(&"a").unwrap().commit(1);
        let mut replacing = replacement(&table);
        replacing.take_unit_of(&1).unwrap();
        drop(replacing);
        assert!(table.sessions_of(&"a").is_empty());
        table.reserve(&"a").unwrap().commit(2);
        assert_eq!(table.tracked_keys(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn session_ended_is_idempotent() {
        let table = table(Some(2), None);
        table.reserve(&"a").unwrap().commit(1);
        table.reserve(&"a").unwrap().commit(2);
        table.session_ended(&"a", &1);
        table.session_ended(&"a", &1);
        table.session_ended(&"a", &9);
        table.session_ended(&"unknown", &1);
        assert_eq!(table.sessions_of(&"a"), [2]);
        table.reserve(&"a").unwrap().commit(3);
        assert_eq!(table.reserve(&"a").unwrap_err(), ClientRefusal::AtQuota);
        table.session_ended(&"a", &2);
        table.session_ended(&"a", &3);
        // No rate limit, no sessions: nothing is remembered.
        assert_eq!(table.tracked_keys(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_key_is_forgotten_once_its_grants_expire() {
        let table = table(None, Some((1, 10)));
        table.reserve(&"a").unwrap().commit(1);
        tokio::time::advance(Duration::from_secs(5)).await;
        table.session_ended(&"a", &1);
        assert_eq!(table.idle_keys(), 1, "its grant still counts");
        tokio::time::advance(Duration::from_secs(5)).await;
        table.reserve(&"a").unwrap().commit(2);
        tokio::time::advance(Duration::from_secs(10)).await;
        table.session_ended(&"a", &2);
        assert_eq!(table.tracked_keys(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn the_least_recently_used_idle_key_is_forgotten_first() {
        let table = ClientTable::<&str, u64>::new(ClientLimits {
            rate: Some((1, Duration::from_secs(60))),
            max_idle_keys: 2,
            ..ClientLimits::default()
        });
        for (session, key) in ["a", "b"].into_iter().enumerate() {
            table.reserve(&key).unwrap().commit(session as u64);
            table.session_ended(&key, &(session as u64));
        }
        // A refused attempt is a use: "a" becomes the most recent.
        rate_limited(table.reserve(&"a"));
        table.reserve(&"c").unwrap().commit(2);
        table.session_ended(&"c", &2);
        assert_eq!(table.idle_keys(), 2);
        rate_limited(table.reserve(&"a"));
        // "b" was forgotten: its budget is whole again, as documented.
        table.reserve(&"b").unwrap().commit(3);
    }

    /// A flood from a million distinct IPv6 /64s, each creating one
    /// session that ends: the table stays at its bound (the keys with live
    /// sessions plus `max_idle_keys`), and keys with a live session keep
    /// their entry and history throughout.
    #[test]
    fn a_million_ipv6_networks_keep_the_table_flat() {
        const NETWORKS: u64 = 1_000_000;
        // One address in each /64 of 2001:db8::/32: the network number in
        // bits 64..96, a varying host part the /64 key ignores.
        let key = |network: u64| {
            let address = (0x2001_0db8_u128 << 96) | (u128::from(network) << 64) | 0x1234;
            ClientKey::from_ip(std::net::Ipv6Addr::from(address).into(), 64)
        };
        let table = ClientTable::<ClientKey, u64>::new(ClientLimits {
            max_sessions: Some(1),
            rate: Some((1, Duration::from_secs(3600))),
            max_idle_keys: 1_000,
        });
        let now = Instant::now();
        let live = [ClientKey::named("alice"), ClientKey::named("bob")];
        for client in &live {
            table.reserve_at(client, now).unwrap().commit(7);
        }
        let mut largest = 0;
        for network in 0..NETWORKS {
            let client = key(network);
            table.reserve_at(&client, now).unwrap().commit(0);
            table.session_ended_at(&client, &0, now);
            largest = largest.max(table.tracked_keys());
        }
        assert_eq!(largest, 1_000 + live.len(), "memory grew past the bound");
        assert_eq!(table.idle_keys(), 1_000);
        for client in &live {
            assert_eq!(table.sessions_of(client), [7]);
            let refusal = table.reserve_at(client, now).unwrap_err();
            assert!(matches!(refusal, ClientRefusal::RateLimited { .. }));
        }
        // The most recent idle keys are remembered, the oldest are not.
        let remembered = table.reserve_at(&key(NETWORKS - 1), now).unwrap_err();
        assert!(matches!(remembered, ClientRefusal::RateLimited { .. }));
        drop(table.reserve_at(&key(0), now).unwrap());
    }

    #[test]
    #[should_panic(expected = "max_sessions per client must be at least 1")]
    fn a_zero_quota_panics() {
        let _ = table(Some(0), None);
    }

    #[test]
    #[should_panic(expected = "window must be longer than zero")]
    fn a_zero_window_panics() {
        let _ = table(None, Some((1, 0)));
    }
}
