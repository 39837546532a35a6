//! The counters behind request admission: requests in flight and listen
//! streams, globally and per client, and each client's request rate.
//!
//! # Invariants kept here
//!
//! 1. **Exact global bounds.** The listen streams open are one atomic
//!    counter, raised only by a compare-and-swap that checks the bound in
//!    the same step. The units in flight (a request costs `cost` units)
//!    are a budget (`budget`) whose units are free, spare in a shard or
//!    held, and whose refusals are exact too (see its docs). No
//!    interleaving of admissions can overshoot either bound, and each
//!    unit or place is given back exactly once, by the drop of the value
//!    that holds it ([`RequestUnits`], [`ListenUnit`]).
//! 2. **Exact per-client bounds and rate.** A client's units in flight, its
//!    open listen streams and its rate log live in one entry, changed only
//!    under its shard's lock, where each check and its update are one step.
//!    The client's bound is checked and its units taken before the global
//!    bound is tried; if the global bound refuses, the client's units and
//!    its rate grant are given back in the same critical section. So a
//!    client refused by its own limits never spends global budget, and a
//!    client's count never exceeds its bound, even for an instant. One
//!    window is left: when the global bound must collect spare units from
//!    every shard, the client's lock is let go while every lock is taken
//!    in order, and its reservation stays counted meanwhile; a request of
//!    the same client arriving then may be refused by its own bound (or
//!    rate) although the first is refused too. Only a client racing itself
//!    at the server's bound sees it (2 in 3,000 tries of a probe built to
//!    hit it); closing it means taking the reservation back before the
//!    collection and re-checking it under every lock.
//! 3. **A listen stream replaces only its own client's.** A client at its
//!    quota of listen streams that opens another takes over the unit of its
//!    own oldest one, under its shard's lock: the oldest is unlisted and
//!    told to end, its global unit passes to the new stream, and its later
//!    drop gives nothing back. Another client's stream is never touched.
//! 4. **Bounded memory.** Per-client entries follow `clients::keyed`: busy
//!    while the client has a request in flight or a listen stream (bounded
//!    by the global bounds), else kept only for their rate history, for at
//!    most `max_idle_keys / SHARDS` keys (rounded up) per shard, so at most
//!    `max_idle_keys + SHARDS - 1` in all, least recently used forgotten
//!    first within a shard.
//!
//! # Why shards
//!
//! Every request passes here twice (admission, release), at any rate the
//! server serves. One lock for all clients would serialize every core on
//! it; a client's entry is instead behind one of [`SHARDS`] locks, chosen
//! by a keyed hash of the client key, and each critical section is a hash
//! lookup and a few counter updates (plus, with a rate limit, one log
//! push). Requests of different clients contend only when their keys share
//! a shard, and then only for those few instructions. The global bound on
//! units in flight is lent to the shards a few units at a time
//! (`budget`), so that requests of clients in different shards write no
//! shared counter either, except near the bound. The client key is hashed
//! once per admission: the
//! hash picks the shard and probes its maps, and the units keep it for
//! their release. What a request writes (its shard's lock, spare and
//! count, the reference its units hold on the shard) lives in the shard,
//! each shard on cache lines of its own, so that cores serving different
//! clients share nothing they write.
//! The least-recently-used order of idle keys is kept
//! per shard: a key is forgotten when its shard holds more than its share
//! of idle keys, which approximates one global order closely when keys
//! spread evenly (a keyed hash spreads them).

use std::collections::VecDeque;
use std::hash::BuildHasher;
use std::sync::Arc;

use crossbeam_utils::CachePadded;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::budget::{Budget, Take};
use super::{ListenAtQuota, RequestLimits};
use crate::clients::ClientKey;
use crate::clients::keyed::{Entry, Keyed, Retention};
use crate::rate_limiter::{GrantLog, RateLimit};
use crate::refusal::RequestRefusal;
use crate::sync::{AtomicU64, AtomicUsize, Mutex, Ordering};

/// Shards of the per-client state: a power of two well above the cores a
/// server has, so that two busy clients rarely share a lock. Under loom,
/// four: loom explores every lock a collection of the budget takes, and
/// the code is the same for any power of two.
#[cfg(not(mcp_bounded_session_loom))]
pub(crate) const SHARDS: usize = 64;
#[cfg(mcp_bounded_session_loom)]
pub(crate) const SHARDS: usize = 4;

/// Picks a client's shard: keyed at random, so that clients cannot aim
/// their keys at one shard. Under loom, a fixed key: loom replays each
/// schedule's prefix, and a shard choice that changed between replays
/// would change which clients share a lock.
#[cfg(not(mcp_bounded_session_loom))]
type ShardHasher = std::hash::RandomState;
#[cfg(mcp_bounded_session_loom)]
type ShardHasher = std::hash::BuildHasherDefault<std::hash::DefaultHasher>;

/// The per-client entry.
#[derive(Debug, Default)]
struct Usage {
    log: GrantLog,
    in_flight: usize,
    /// Open listen streams, oldest first: their numbers and how to end them.
    listening: VecDeque<(u64, CancellationToken)>,
}

impl Entry for Usage {
    fn with_log(log: GrantLog) -> Self {
        Self {
            log,
            ..Self::default()
        }
    }

    fn is_busy(&self) -> bool {
        self.in_flight > 0 || !self.listening.is_empty()
    }

    fn into_log(self) -> GrantLog {
        self.log
    }
}

/// Requests in flight and listen streams, globally and per client.
#[derive(Debug)]
pub(crate) struct RequestTable {
    shards: Box<[Arc<CachePadded<Shard>>]>,
    hasher: ShardHasher,
    next_stream: AtomicU64,
    counters: Arc<Counters>,
}

/// The limits and the global bounds, shared by every shard.
#[derive(Debug)]
struct Counters {
    limits: Limits,
    created: Instant,
    /// The bound on units in flight, if set.
    budget: Option<Budget>,
    listening: CachePadded<AtomicUsize>,
    /// Units in flight, for the metrics gauge only: set, not changed by
    /// increments, it stays right whatever a recorder does between reports
    /// (the shards' counts are read whole only under all their locks). The
    /// one counter every request writes, and only with the feature on.
    #[cfg(feature = "metrics")]
    reported_in_flight: CachePadded<AtomicUsize>,
}

/// One shard of the per-client entries. Units hold their client's shard,
/// not the table: taking and dropping that reference writes only the
/// shard's cache line.
#[derive(Debug)]
struct Shard {
    state: Mutex<ShardState>,
    counters: Arc<Counters>,
}

/// A shard's state, under its lock.
#[derive(Debug)]
struct ShardState {
    clients: Keyed<ClientKey, Usage, ShardHasher>,
    /// Units held by the requests admitted here.
    in_use: usize,
    /// Units of the budget lent to this shard, not in use.
    spare: usize,
}

/// The limits as the table applies them.
#[derive(Debug, Clone, Copy)]
struct Limits {
    max_in_flight: Option<usize>,
    max_in_flight_per_client: Option<usize>,
    rate: Option<(usize, RateLimit)>,
    max_listen: Option<usize>,
    max_listen_per_client: Option<usize>,
    listen_at_quota: ListenAtQuota,
    retention: Retention,
    /// Whether requests need a per-client entry (a per-client bound or
    /// rate): with only the global bound, a request touches one atomic.
    per_client_requests: bool,
}

/// Units of the global and the client's in-flight bounds, held by one
/// request until its response ends; dropping it gives them back.
#[must_use = "dropping RequestUnits ends the request's admission"]
#[derive(Debug)]
pub(crate) struct RequestUnits {
    shard: Arc<CachePadded<Shard>>,
    client: ClientKey,
    hash: u64,
    /// Whether the client's entry holds the units too (a per-client bound
    /// or rate is set).
    keyed: bool,
    cost: usize,
}

/// One listen stream's place under the global and the client's bounds;
/// dropping it gives the place back, unless a newer stream of the same
/// client took it over.
#[must_use = "dropping a ListenUnit ends the stream's admission"]
#[derive(Debug)]
pub(crate) struct ListenUnit {
    shard: Arc<CachePadded<Shard>>,
    client: ClientKey,
    hash: u64,
    stream: u64,
    /// Cancelled when a newer stream of the client takes this one's place.
    replaced: CancellationToken,
}

impl RequestTable {
    pub(crate) fn new(limits: &RequestLimits) -> Self {
        let rate = limits
            .rate_per_client
            .map(|(max, window)| (max, RateLimit::new(max, window)));
        let counters = Arc::new(Counters {
            limits: Limits {
                max_in_flight: limits.max_in_flight,
                max_in_flight_per_client: limits.max_in_flight_per_client,
                rate,
                max_listen: limits.max_listen,
                max_listen_per_client: limits.max_listen_per_client,
                listen_at_quota: limits.listen_at_quota,
                retention: Retention {
                    rate: rate.map(|(_, limit)| limit),
                    max_idle: limits.max_idle_keys.div_ceil(SHARDS),
                },
                per_client_requests: limits.max_in_flight_per_client.is_some() || rate.is_some(),
            },
            created: Instant::now(),
            budget: limits.max_in_flight.map(Budget::new),
            listening: CachePadded::new(AtomicUsize::new(0)),
            #[cfg(feature = "metrics")]
            reported_in_flight: CachePadded::new(AtomicUsize::new(0)),
        });
        let hasher = ShardHasher::default();
        let shards = (0..SHARDS)
            .map(|_| {
                Arc::new(CachePadded::new(Shard {
                    state: Mutex::new(ShardState {
                        clients: Keyed::with_hasher(hasher.clone()),
                        in_use: 0,
                        spare: 0,
                    }),
                    counters: counters.clone(),
                }))
            })
            .collect();
        Self {
            shards,
            hasher,
            next_stream: AtomicU64::new(0),
            counters,
        }
    }

    /// `client`'s hash, computed once per admission and kept by the units
    /// for their release, and the index of its entry's shard.
    fn shard_of(&self, client: &ClientKey) -> (u64, usize) {
        let hash = self.hasher.hash_one(client);
        // The shard's maps take a bucket from the hash's low bits and a tag
        // from its top seven: the shard takes bits in between, which leaves
        // both spread within a shard. SHARDS is a power of two.
        (hash, (hash >> 32) as usize & (SHARDS - 1))
    }

    /// The shard `client`'s entry lives in (for tests that need two
    /// clients in different shards).
    #[cfg(all(test, mcp_bounded_session_loom))]
    pub(crate) fn shard_index(&self, client: &ClientKey) -> usize {
        self.shard_of(client).1
    }

    /// The time to admit and file entries at: now with a rate limit (its
    /// log is checked and pruned against it), else any time will do, and
    /// reading the clock is a good share of an admission and a release.
    pub(crate) fn clock(&self) -> Instant {
        self.counters.clock()
    }

    /// Units in flight now: counted with every shard's lock held, so the
    /// count is of one instant (the shards count their own).
    pub(crate) fn in_flight(&self) -> usize {
        let shards: Vec<_> = self.shards.iter().map(|shard| shard.state.lock()).collect();
        shards.iter().map(|state| state.in_use).sum()
    }

    /// Listen streams open now.
    pub(crate) fn listening(&self) -> usize {
        self.counters.listening.load(Ordering::Acquire)
    }

    /// Admits a request of `client` costing `cost` units: its rate, its
    /// bound, then the global bound (see the module docs).
    pub(crate) fn admit_request(
        &self,
        client: &ClientKey,
        cost: usize,
        now: Instant,
    ) -> Result<RequestUnits, RequestRefusal> {
        let counters = &*self.counters;
        let limits = counters.limits;
        let (hash, index) = self.shard_of(client);
        let shard = &self.shards[index];
        let keyed = limits.per_client_requests;
        let mut state = shard.state.lock();
        let ticket = match keyed {
            true => state
                .clients
                .update_hashed(hash, client, limits.retention, now, |usage| {
                    let ticket = match limits.rate {
                        Some((max, limit)) => {
                            Some(usage.log.try_grant(limit, now).map_err(|retry_after| {
                                RequestRefusal::RequestRate {
                                    limit: max,
                                    retry_after,
                                }
                            })?)
                        }
                        None => None,
                    };
                    if let Some(max) = limits.max_in_flight_per_client
                        && usage.in_flight + cost > max
                    {
                        if let Some(ticket) = ticket {
                            usage.log.give_back(ticket);
                        }
                        return Err(RequestRefusal::RequestQuota { limit: max });
                    }
                    usage.in_flight += cost;
                    Ok(ticket)
                })?,
            false => None,
        };
        let taken = match &counters.budget {
            Some(budget) => match budget.take(&mut state.spare, cost) {
                Take::Taken => true,
                Take::Refused => false,
                Take::Collect => {
                    // Every shard's lock in index order, this one's too.
                    drop(state);
                    let mut shards: Vec<_> =
                        self.shards.iter().map(|shard| shard.state.lock()).collect();
                    let collected = shards
                        .iter_mut()
                        .map(|state| std::mem::take(&mut state.spare))
                        .sum();
                    let taken = budget.settle(collected, cost);
                    state = shards.swap_remove(index);
                    taken
                }
            },
            None => true,
        };
        if !taken {
            // The client's units and grant back in the same critical
            // section as the refusal.
            if keyed {
                state
                    .clients
                    .update_hashed(hash, client, limits.retention, now, |usage| {
                        usage.in_flight -= cost;
                        if let Some(ticket) = ticket {
                            usage.log.give_back(ticket);
                        }
                    });
            }
            let limit = limits.max_in_flight.unwrap_or_default();
            return Err(RequestRefusal::RequestsAtCapacity { limit });
        }
        state.in_use += cost;
        drop(state);
        counters.report_request(cost, true);
        Ok(RequestUnits {
            shard: shard.clone(),
            client: client.clone(),
            hash,
            keyed,
            cost,
        })
    }

    /// Admits a listen stream of `client`: a place of its own, else (at its
    /// quota, [`ListenAtQuota::ReplaceOldest`]) the place of its oldest
    /// stream, which is told to end.
    pub(crate) fn admit_listen(
        &self,
        client: &ClientKey,
        now: Instant,
    ) -> Result<ListenUnit, RequestRefusal> {
        let counters = &*self.counters;
        let limits = counters.limits;
        let stream = self.next_stream.fetch_add(1, Ordering::Relaxed);
        let replaced = CancellationToken::new();
        let own = (stream, replaced.clone());
        let (hash, index) = self.shard_of(client);
        let shard = &self.shards[index];
        let mut state = shard.state.lock();
        let clients = &mut state.clients;
        // Err: refused; Ok(true): took over the oldest stream's place.
        let took_over = clients.update_hashed(hash, client, limits.retention, now, |usage| {
            let at_quota = limits
                .max_listen_per_client
                .is_some_and(|max| usage.listening.len() >= max);
            if !at_quota {
                return Ok(false);
            }
            let limit = limits.max_listen_per_client.unwrap_or_default();
            if limits.listen_at_quota == ListenAtQuota::Refuse {
                return Err(RequestRefusal::ListenQuota { limit });
            }
            match usage.listening.pop_front() {
                Some((_, oldest)) => {
                    oldest.cancel();
                    usage.listening.push_back(own.clone());
                    Ok(true)
                }
                None => Err(RequestRefusal::ListenQuota { limit }),
            }
        })?;
        if !took_over {
            match limits.max_listen {
                Some(limit) if !try_raise(&counters.listening, 1, limit) => {
                    return Err(RequestRefusal::ListenAtCapacity { limit });
                }
                Some(_) => {}
                None => {
                    counters.listening.fetch_add(1, Ordering::AcqRel);
                }
            }
            clients.update_hashed(hash, client, limits.retention, now, |usage| {
                usage.listening.push_back(own);
            });
        }
        drop(state);
        counters.report_listening();
        Ok(ListenUnit {
            shard: shard.clone(),
            client: client.clone(),
            hash,
            stream,
            replaced,
        })
    }

    /// The budget's free units and lending shards, and the spare units
    /// of all shards.
    #[cfg(test)]
    pub(crate) fn budget_state(&self) -> Option<(usize, usize, usize)> {
        let shards: Vec<_> = self.shards.iter().map(|shard| shard.state.lock()).collect();
        let spare = shards.iter().map(|state| state.spare).sum();
        let lending = shards.iter().filter(|state| state.spare > 0).count();
        let (free, lenders) = self.counters.budget.as_ref()?.free_and_lenders();
        assert_eq!(lenders, lending, "the word counts the lending shards");
        Some((free, lenders, spare))
    }

    /// Clients with an entry, busy or idle.
    #[cfg(test)]
    pub(crate) fn tracked_clients(&self) -> usize {
        self.shards
            .iter()
            .map(|shard| {
                let (busy, idle) = shard.state.lock().clients.counts();
                busy + idle
            })
            .sum()
    }
}

impl Counters {
    /// See [`RequestTable::clock`].
    fn clock(&self) -> Instant {
        match self.limits.rate {
            Some(_) => Instant::now(),
            None => self.created,
        }
    }

    /// Reports `cost` units admitted (or released) to the metrics
    /// recorder, if any.
    fn report_request(&self, _cost: usize, _admitted: bool) {
        #[cfg(feature = "metrics")]
        {
            let counter = &self.reported_in_flight;
            let level = match _admitted {
                true => counter.fetch_add(_cost, Ordering::AcqRel) + _cost,
                false => counter.fetch_sub(_cost, Ordering::AcqRel) - _cost,
            };
            super::metrics::requests(level);
        }
    }

    /// Reports the listen streams open to the metrics recorder, if any.
    fn report_listening(&self) {
        #[cfg(feature = "metrics")]
        super::metrics::listening(self.listening.load(Ordering::Acquire));
    }
}

/// Raises `counter` by `by` if that keeps it at most `limit`, in one
/// atomic step.
fn try_raise(counter: &AtomicUsize, by: usize, limit: usize) -> bool {
    let mut current = counter.load(Ordering::Acquire);
    loop {
        if current.saturating_add(by) > limit {
            return false;
        }
        match counter.compare_exchange_weak(
            current,
            current + by,
            Ordering::AcqRel,
            Ordering::Acquire,
        ) {
            Ok(_) => return true,
            Err(actual) => current = actual,
        }
    }
}

impl Drop for RequestUnits {
    fn drop(&mut self) {
        let counters = &*self.shard.counters;
        let cost = self.cost;
        let mut state = self.shard.state.lock();
        // The client's units, the shard's count and the budget in one
        // critical section: a request of the same client racing this
        // release sees all of them freed or none, never a refusal from one
        // while another already has room.
        if self.keyed {
            state.clients.update_hashed(
                self.hash,
                &self.client,
                counters.limits.retention,
                counters.clock(),
                |usage| usage.in_flight -= cost,
            );
        }
        state.in_use -= cost;
        if let Some(budget) = &counters.budget {
            budget.give_back(&mut state.spare, cost);
        }
        drop(state);
        counters.report_request(cost, false);
    }
}

impl ListenUnit {
    /// Cancelled when a newer stream of the same client took this one's
    /// place: the stream should end.
    pub(crate) fn replaced(&self) -> &CancellationToken {
        &self.replaced
    }
}

impl Drop for ListenUnit {
    fn drop(&mut self) {
        let counters = &*self.shard.counters;
        let stream = self.stream;
        let listed = self.shard.state.lock().clients.update_hashed(
            self.hash,
            &self.client,
            counters.limits.retention,
            counters.clock(),
            |usage| {
                let position = usage.listening.iter().position(|(id, _)| *id == stream);
                let listed = position.map(|at| usage.listening.remove(at)).is_some();
                // Unlisted: a newer stream of the client holds its place
                // now. Listed: its place is free, in the same step as it
                // leaves the list, so that a stream of the same client
                // racing this end never finds itself below its quota but
                // the server's count still full (loom model
                // `a_listen_replacement_takes_only_the_clients_own_place`).
                if listed {
                    counters.listening.fetch_sub(1, Ordering::AcqRel);
                }
                listed
            },
        );
        if listed {
            counters.report_listening();
        }
    }
}
