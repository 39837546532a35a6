//! The counters behind request admission: requests in flight and listen
//! streams, globally and per client, and each client's request rate.
//!
//! # Invariants kept here
//!
//! 1. **Exact global bounds.** The units in flight (a request costs
//!    `cost` units) and the listen streams open are each one atomic
//!    counter, raised only by a compare-and-swap that checks the bound in
//!    the same step: no interleaving of admissions can overshoot it, and
//!    each unit is given back exactly once, by the drop of the value that
//!    holds it ([`RequestUnits`], [`ListenUnit`]).
//! 2. **Exact per-client bounds and rate.** A client's units in flight, its
//!    open listen streams and its rate log live in one entry, changed only
//!    under its shard's lock, where each check and its update are one step.
//!    The client's bound is checked and its units taken before the global
//!    counter is tried; if the global bound refuses, the client's units and
//!    its rate grant are given back at once. So a client refused by its own
//!    limits never spends global budget, and a client's count never exceeds
//!    its bound, even for an instant.
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
//! a shard, and then only for those few instructions. The global counters
//! are plain atomics. The least-recently-used order of idle keys is kept
//! per shard: a key is forgotten when its shard holds more than its share
//! of idle keys, which approximates one global order closely when keys
//! spread evenly (a keyed hash spreads them).

use std::collections::VecDeque;
use std::hash::BuildHasher;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{ListenAtQuota, RequestLimits};
use crate::clients::ClientKey;
use crate::clients::keyed::{Entry, Keyed, Retention};
use crate::rate_limiter::{GrantLog, RateLimit};
use crate::sync::{AtomicU64, AtomicUsize, Mutex, Ordering};

/// Shards of the per-client state: a power of two well above the cores a
/// server has, so that two busy clients rarely share a lock.
pub(crate) const SHARDS: usize = 64;

/// Picks a client's shard: keyed at random, so that clients cannot aim
/// their keys at one shard. Under loom, a fixed key: loom replays each
/// schedule's prefix, and a shard choice that changed between replays
/// would change which clients share a lock.
#[cfg(not(mcp_bounded_session_loom))]
type ShardHasher = std::hash::RandomState;
#[cfg(mcp_bounded_session_loom)]
type ShardHasher = std::hash::BuildHasherDefault<std::hash::DefaultHasher>;

/// Why a request or a listen stream was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The client has its quota of units in flight.
    RequestQuota {
        /// The client's bound.
        limit: usize,
    },
    /// The client's request rate limit.
    RequestRate {
        /// Requests per window.
        limit: usize,
        /// Until the window admits a request again.
        retry_after: Duration,
    },
    /// The global bound on units in flight.
    RequestsAtCapacity {
        /// The global bound.
        limit: usize,
    },
    /// The client has its quota of listen streams and may not replace one.
    ListenQuota {
        /// The client's bound.
        limit: usize,
    },
    /// The global bound on listen streams.
    ListenAtCapacity {
        /// The global bound.
        limit: usize,
    },
}

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
pub struct RequestTable {
    limits: Limits,
    shards: Box<[Mutex<Keyed<ClientKey, Usage>>]>,
    hasher: ShardHasher,
    in_flight: AtomicUsize,
    listening: AtomicUsize,
    next_stream: AtomicU64,
    created: Instant,
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
pub struct RequestUnits {
    table: Arc<RequestTable>,
    client: ClientKey,
    /// The client's shard, if requests keep per-client entries.
    shard: Option<usize>,
    cost: usize,
}

/// One listen stream's place under the global and the client's bounds;
/// dropping it gives the place back, unless a newer stream of the same
/// client took it over.
#[must_use = "dropping a ListenUnit ends the stream's admission"]
#[derive(Debug)]
pub struct ListenUnit {
    table: Arc<RequestTable>,
    client: ClientKey,
    shard: usize,
    stream: u64,
    /// Cancelled when a newer stream of the client takes this one's place.
    replaced: CancellationToken,
}

impl RequestTable {
    pub(crate) fn new(limits: &RequestLimits) -> Self {
        let shards = (0..SHARDS).map(|_| Mutex::new(Keyed::new())).collect();
        let rate = limits
            .rate_per_client
            .map(|(max, window)| (max, RateLimit::new(max, window)));
        Self {
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
            shards,
            hasher: ShardHasher::default(),
            in_flight: AtomicUsize::new(0),
            listening: AtomicUsize::new(0),
            next_stream: AtomicU64::new(0),
            created: Instant::now(),
        }
    }

    /// The shard of `client`'s entry, hashed once per admission and kept
    /// by the units for their release.
    fn shard_of(&self, client: &ClientKey) -> usize {
        // SHARDS is a power of two: the low bits of a keyed hash.
        (self.hasher.hash_one(client) as usize) & (SHARDS - 1)
    }

    /// The time to admit and file entries at: now with a rate limit (its
    /// log is checked and pruned against it), else any time will do, and
    /// reading the clock is a good share of an admission and a release.
    pub fn clock(&self) -> Instant {
        match self.limits.rate {
            Some(_) => Instant::now(),
            None => self.created,
        }
    }

    /// Units in flight now.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }

    /// Listen streams open now.
    pub fn listening(&self) -> usize {
        self.listening.load(Ordering::Acquire)
    }

    /// Reports both levels to the metrics recorder, if any.
    fn report_levels(&self) {
        #[cfg(feature = "metrics")]
        super::refusal::metrics::levels(self.in_flight(), self.listening());
    }

    /// Admits a request of `client` costing `cost` units: its rate, its
    /// bound, then the global bound (see the module docs).
    pub fn admit_request(
        self: &Arc<Self>,
        client: &ClientKey,
        cost: usize,
        now: Instant,
    ) -> Result<RequestUnits, Refused> {
        let limits = self.limits;
        let shard = limits.per_client_requests.then(|| self.shard_of(client));
        let ticket = match shard {
            Some(shard) => {
                self.shards[shard]
                    .lock()
                    .update(client, limits.retention, now, |usage| {
                        let ticket = match limits.rate {
                            Some((max, limit)) => {
                                Some(usage.log.try_grant(limit, now).map_err(|retry_after| {
                                    Refused::RequestRate {
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
                            return Err(Refused::RequestQuota { limit: max });
                        }
                        usage.in_flight += cost;
                        Ok(ticket)
                    })?
            }
            None => None,
        };
        if let Some(limit) = limits.max_in_flight
            && !try_raise(&self.in_flight, cost, limit)
        {
            if let Some(shard) = shard {
                self.shards[shard]
                    .lock()
                    .update(client, limits.retention, now, |usage| {
                        usage.in_flight -= cost;
                        if let Some(ticket) = ticket {
                            usage.log.give_back(ticket);
                        }
                    });
            }
            return Err(Refused::RequestsAtCapacity { limit });
        }
        if limits.max_in_flight.is_none() {
            self.in_flight.fetch_add(cost, Ordering::AcqRel);
        }
        self.report_levels();
        Ok(RequestUnits {
            table: self.clone(),
            client: client.clone(),
            shard,
            cost,
        })
    }

    /// Admits a listen stream of `client`: a place of its own, else (at its
    /// quota, [`ListenAtQuota::ReplaceOldest`]) the place of its oldest
    /// stream, which is told to end.
    pub fn admit_listen(
        self: &Arc<Self>,
        client: &ClientKey,
        now: Instant,
    ) -> Result<ListenUnit, Refused> {
        let limits = self.limits;
        let stream = self.next_stream.fetch_add(1, Ordering::Relaxed);
        let replaced = CancellationToken::new();
        let own = (stream, replaced.clone());
        let shard_index = self.shard_of(client);
        let mut shard = self.shards[shard_index].lock();
        // Err: refused; Ok(true): took over the oldest stream's place.
        let took_over = shard.update(client, limits.retention, now, |usage| {
            let at_quota = limits
                .max_listen_per_client
                .is_some_and(|max| usage.listening.len() >= max);
            if !at_quota {
                return Ok(false);
            }
            let limit = limits.max_listen_per_client.unwrap_or_default();
            if limits.listen_at_quota == ListenAtQuota::Refuse {
                return Err(Refused::ListenQuota { limit });
            }
            match usage.listening.pop_front() {
                Some((_, oldest)) => {
                    oldest.cancel();
                    usage.listening.push_back(own.clone());
                    Ok(true)
                }
                None => Err(Refused::ListenQuota { limit }),
            }
        })?;
        if !took_over {
            if let Some(limit) = limits.max_listen
                && !try_raise(&self.listening, 1, limit)
            {
                return Err(Refused::ListenAtCapacity { limit });
            }
            if limits.max_listen.is_none() {
                self.listening.fetch_add(1, Ordering::AcqRel);
            }
            shard.update(client, limits.retention, now, |usage| {
                usage.listening.push_back(own);
            });
        }
        drop(shard);
        self.report_levels();
        Ok(ListenUnit {
            table: self.clone(),
            client: client.clone(),
            shard: shard_index,
            stream,
            replaced,
        })
    }

    /// Clients with an entry, busy or idle.
    #[cfg(test)]
    pub(crate) fn tracked_clients(&self) -> usize {
        self.shards
            .iter()
            .map(|shard| {
                let (busy, idle) = shard.lock().counts();
                busy + idle
            })
            .sum()
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
        let table = &self.table;
        let cost = self.cost;
        match self.shard {
            // Both counters under the client's lock: a request of the same
            // client racing this release sees both freed or neither, never
            // a refusal from one counter while the other already has room.
            Some(shard) => table.shards[shard].lock().update(
                &self.client,
                table.limits.retention,
                table.clock(),
                |usage| {
                    usage.in_flight -= cost;
                    table.in_flight.fetch_sub(cost, Ordering::AcqRel);
                },
            ),
            None => {
                table.in_flight.fetch_sub(cost, Ordering::AcqRel);
            }
        }
        table.report_levels();
    }
}

impl ListenUnit {
    /// Cancelled when a newer stream of the same client took this one's
    /// place: the stream should end.
    pub fn replaced(&self) -> &CancellationToken {
        &self.replaced
    }
}

impl Drop for ListenUnit {
    fn drop(&mut self) {
        let table = &self.table;
        let stream = self.stream;
        let listed = table.shards[self.shard].lock().update(
            &self.client,
            table.limits.retention,
            table.clock(),
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
                    table.listening.fetch_sub(1, Ordering::AcqRel);
                }
                listed
            },
        );
        if listed {
            table.report_levels();
        }
    }
}
