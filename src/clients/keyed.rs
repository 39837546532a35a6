//! Per-key state in bounded memory: an entry for each key in use, and the
//! rate-limit history of keys no longer in use, least recently used
//! forgotten first. The session table (`table`) and the request table
//! (`crate::requests`) both keep their per-client state here.
//!
//! # Invariant kept here
//!
//! **Bounded memory.** A key has an entry only while it is *busy* (the
//! entry says so: it holds sessions, reservations, requests or streams,
//! whose number its owner bounds) or while it is *idle* but its log still
//! holds grants, kept for at most `max_idle` keys. When one more key goes
//! idle, the least recently used idle key is forgotten, and its history
//! with it: that key may use its full budget again at once, as if new. A
//! global limit stays the outer bound, which is why forgetting is safe. A
//! busy key is never forgotten. An entry with neither is dropped at once.
//!
//! A key that goes idle joins the most recently used end; a use of an idle
//! key, granted or refused, moves it there too. Grants that have expired
//! are pruned when a key goes idle, not later: an idle key whose grants
//! have all expired waits for its turn to be forgotten.
//!
//! The maps hash with std's SipHash under a random key: clients choose their
//! keys (addresses in their own networks, their own names), so a predictable
//! hash would let them collide keys on purpose. A key is hashed once per
//! use: callers that already hashed it (the request table, which picks a
//! shard with the same hash) pass the hash in, and both maps probe with it.
//! Busy entries are in a `hashbrown` `HashTable`, which takes hashes from
//! its caller; idle keys in `hashlink`'s `LinkedHashMap`, a hash map with
//! an O(1) linked order, which gives least-recently-used order without a
//! second structure to keep in step. Both rehash with the same hasher as
//! the callers, so a hash passed in always matches.

use std::hash::{BuildHasher, Hash, RandomState};

use hashbrown::HashTable;
use hashlink::LinkedHashMap;
use hashlink::linked_hash_map::RawEntryMut;
use tokio::time::Instant;

use crate::rate_limiter::{GrantLog, RateLimit};

/// What a busy key holds, around its rate-limit log.
pub(crate) trait Entry {
    /// A fresh entry carrying an idle key's history.
    fn with_log(log: GrantLog) -> Self;
    /// Whether the key is in use (kept whatever its log holds).
    fn is_busy(&self) -> bool;
    /// The key's history, given back when it goes idle.
    fn into_log(self) -> GrantLog;
}

/// Entries of busy keys and the logs of idle ones (see the module docs).
#[derive(Debug)]
pub(crate) struct Keyed<K, E, H = RandomState> {
    busy: HashTable<(K, E)>,
    /// Keys with grants in their log only, least recently used first; at
    /// most `max_idle`.
    idle: LinkedHashMap<K, GrantLog, H>,
    hasher: H,
}

impl<K: Clone + Eq + Hash, E: Entry> Keyed<K, E> {
    pub(crate) fn new() -> Self {
        Self::with_hasher(RandomState::new())
    }
}

impl<K: Clone + Eq + Hash, E: Entry, H: BuildHasher + Clone> Keyed<K, E, H> {
    /// Keys hashed with `hasher`: the hashes passed to
    /// [`Self::update_hashed`] must come from it.
    pub(crate) fn with_hasher(hasher: H) -> Self {
        Self {
            busy: HashTable::new(),
            idle: LinkedHashMap::with_hasher(hasher.clone()),
            hasher,
        }
    }

    /// The entry of `key` if it is busy.
    pub(crate) fn busy(&self, key: &K) -> Option<&E> {
        let hash = self.hasher.hash_one(key);
        self.busy
            .find(hash, |(busy, _)| busy == key)
            .map(|(_, entry)| entry)
    }

    /// The history of `key` if it is idle.
    #[cfg(test)]
    pub(crate) fn idle_log(&self, key: &K) -> Option<&GrantLog> {
        self.idle.get(key)
    }

    /// Busy keys and idle keys.
    #[cfg(test)]
    pub(crate) fn counts(&self) -> (usize, usize) {
        (self.busy.len(), self.idle.len())
    }

    /// Runs `change` on `key`'s entry (a new one if the key is unknown),
    /// then files the entry by what it holds: busy, idle at the most
    /// recently used end, or nowhere.
    pub(crate) fn update<R>(
        &mut self,
        key: &K,
        retention: Retention,
        now: Instant,
        change: impl FnOnce(&mut E) -> R,
    ) -> R {
        let hash = self.hasher.hash_one(key);
        self.update_hashed(hash, key, retention, now, change)
    }

    /// [`Self::update`] of a key whose hash by this table's hasher is
    /// `hash`.
    pub(crate) fn update_hashed<R>(
        &mut self,
        hash: u64,
        key: &K,
        retention: Retention,
        now: Instant,
        change: impl FnOnce(&mut E) -> R,
    ) -> R {
        debug_assert_eq!(hash, self.hasher.hash_one(key), "a foreign hash");
        if let Ok(mut found) = self.busy.find_entry(hash, |(busy, _)| busy == key) {
            let result = change(&mut found.get_mut().1);
            if !found.get().1.is_busy() {
                let ((key, entry), _) = found.remove();
                self.rest(hash, key, entry.into_log(), retention, now);
            }
            return result;
        }
        let (key, log) = match self.idle.raw_entry_mut().from_key_hashed_nocheck(hash, key) {
            RawEntryMut::Occupied(idle) => idle.remove_entry(),
            RawEntryMut::Vacant(_) => (key.clone(), GrantLog::default()),
        };
        let mut entry = E::with_log(log);
        let result = change(&mut entry);
        if entry.is_busy() {
            let hasher = &self.hasher;
            self.busy
                .insert_unique(hash, (key, entry), |(key, _)| hasher.hash_one(key));
        } else {
            self.rest(hash, key, entry.into_log(), retention, now);
        }
        result
    }

    /// Files an idle key (in neither map now): kept while its log holds
    /// grants, the least recently used idle key forgotten beyond the bound.
    fn rest(&mut self, hash: u64, key: K, mut log: GrantLog, retention: Retention, now: Instant) {
        if let Some(limit) = retention.rate {
            log.prune(limit, now);
        }
        if log.is_empty() || retention.max_idle == 0 {
            return;
        }
        match self
            .idle
            .raw_entry_mut()
            .from_key_hashed_nocheck(hash, &key)
        {
            RawEntryMut::Vacant(vacant) => {
                vacant.insert_hashed_nocheck(hash, key, log);
            }
            // Unreachable: a key is busy or idle, never both. Kept right
            // anyway: the newer log, at the most recently used end.
            RawEntryMut::Occupied(mut idle) => {
                idle.replace_value(log);
                idle.to_back();
            }
        }
        while self.idle.len() > retention.max_idle {
            self.idle.pop_front();
        }
    }
}

/// How long idle keys are kept: while their grants count under `rate`,
/// for at most `max_idle` keys.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Retention {
    pub(crate) rate: Option<RateLimit>,
    pub(crate) max_idle: usize,
}
