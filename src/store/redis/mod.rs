//! The Redis stores (feature `redis`): sessions and replays shared by every
//! instance that names the same Redis, or the same Redis Cluster, and key
//! prefix.
//!
//! [`RedisStores`] owns one multiplexed connection (`connection`: redis-rs's
//! `ConnectionManager` for a single Redis, its async cluster connection for
//! a cluster; both reconnect by themselves) and two background tasks, and
//! hands out the two rmcp stores that use them: [`RedisSessionStore`]
//! (rmcp's `SessionStore`, for `StreamableHttpServerConfig::session_store`)
//! and [`RedisEventStore`] (rmcp's `EventStore`, which the manager returns
//! from `event_store()`). Key layout: `keys`.
//!
//! # Invariants kept here
//!
//! - Every key has a TTL: nothing outlives its last use by more than the
//!   TTL (plus one upkeep interval for the keys of a session an instance
//!   holds: its value and its streams), whatever happens to the instances.
//! - A DELETE on any instance ends the copies of that session on every
//!   other, and is never undone (`sessions`): at once over pub/sub while an
//!   instance is subscribed; within one upkeep interval after its
//!   subscription comes back (the upkeep finds the session's key gone and
//!   its tombstone there), also when Redis had lost the session's value. An
//!   eviction or expiry of a copy leaves the stored session alone: only a
//!   DELETE removes it.
//! - No event id is issued twice, and a replay is complete or refused,
//!   also across Redis restarts, failovers and failed appends (`events`,
//!   `unsettled`).
//! - A notification stored on a session's standalone stream by one
//!   instance reaches a `GET` open on another live, at most once, without
//!   being stored again, and nothing queues unbounded on its way (`relay`).
//! - Only ids shaped like rmcp's reach Redis or this instance's memory
//!   (`store::is_session_id`).
//! - Redis unreachable never ends a session on this instance: writes that
//!   failed are retried by the upkeep until they land, and the log gets one
//!   line per outage and quiet period (`error_log`). Only an unreachable
//!   Redis (`is_outage`) makes calls skip it for a second, and only calls
//!   for the slots that failed (a cluster's node down leaves the others in
//!   use); an error it answers one call with fails that call only.
//! - Every script and command touches the keys of one session, or of one
//!   stateless stream, and names them all in `KEYS`: they share one hash
//!   tag, so one slot (`keys`). The stores run unchanged on a single Redis,
//!   a Redis Cluster or a Valkey cluster (Redis 7.0 or later, or Valkey).
//!
//! # On a Redis Cluster
//!
//! *A slot migrating* (resharding, `CLUSTER SETSLOT ... MIGRATING`): a call
//! whose keys already left answers `ASK`, and goes to the importing node
//! after `ASKING`; one whose keys are split between the two nodes answers
//! `TRYAGAIN`, and is sent again after a short wait; once the slot moved,
//! `MOVED` sends it to the new owner (and redis-rs learns the new slot
//! map). These refusals come before a script runs, never halfway through
//! (its keys are all declared), so sending again is safe; within a second
//! of such retries a call fails as any call does (`connection`). A script
//! whose declared keys do not all exist (an append's void set, usually
//! absent) cannot run anywhere while its slot is migrating (Redis answers
//! `TRYAGAIN` on both nodes), so an append waits for the handover, which
//! `redis-cli --cluster reshard` makes right after the slot's last key
//! moved. A slot that stays split longer fails its calls: the events go
//! out without ids, its sessions' upkeep waits for the next round; no
//! other slot is held up. A stream's entries name the node that wrote
//! them, and the scripts cannot tell a migrated list from one a lagging
//! replica kept: a migrated stream goes on in a new generation, so a
//! replay across the migration is refused ([`StoreError::UnknownEvent`])
//! and the client starts the stream over; no id is issued twice. The
//! session itself (its value, its index) moves intact.
//!
//! *A primary failing over to its replica* (or a single Redis restarting
//! from a snapshot): writes the old primary acknowledged and had not yet
//! replicated are lost. What holds: no event id is issued twice (each
//! entry names the server that wrote it, and the replica's `run_id`
//! differs, so the next append starts a new generation); a replay across
//! the failover is refused, never incomplete ([`StoreError::UnknownEvent`]:
//! the client starts the stream over); a session an instance holds is
//! written back by its upkeep if the replica lacks it. What weakens: a
//! session created and not yet held anywhere else, a tombstone, or a
//! settled nonce can be lost with the writes. A lost tombstone lets an
//! instance that held the deleted session and missed the DELETE's
//! publication write it back; a DELETE it heard over pub/sub still ended
//! its copy (the publication crossed the cluster bus before the write was
//! lost, or not at all). Until the cluster marks the primary failed, calls
//! for its slots fail as in an outage (short circuit per slot, the upkeep
//! goes on with the other slots); the pub/sub listener, if it was
//! subscribed on that node, moves to the next node given (`deletions`).

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use dashmap::DashMap;
use parking_lot::Mutex;
use rmcp::transport::streamable_http_server::session::SessionId;
use tokio_util::sync::CancellationToken;

use super::StoreError;
use crate::manager::BoundedSessionManager;

pub(crate) use self::host::SessionHost;

mod builder;
mod connection;
mod deletions;
mod error_log;
mod events;
mod flush;
mod host;
mod keys;
mod relay;
mod sessions;
mod unsettled;
mod upkeep;

pub use builder::RedisStoresBuilder;
pub(crate) use events::MAX_EVENTS_PER_APPEND;
pub use events::RedisEventStore;
pub use sessions::RedisSessionStore;

use self::connection::Connection;
use self::error_log::ErrorLog;
use self::keys::Keys;

/// TTL of every key when neither [`RedisStoresBuilder::ttl`] nor the
/// manager's idle timeout or maximum lifetime sets one.
const DEFAULT_TTL: Duration = Duration::from_secs(30 * 60);
/// Events kept per stream until a manager says its replay capacity.
const DEFAULT_STREAM_CAPACITY: usize = 64;
/// Longest wait for a connection, and then for an answer: a call that
/// tries an unreachable Redis fails within twice this, rather than after
/// the OS's TCP timeout (and for a second after, calls fail at once:
/// `error_log`).
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(1);
/// The longest TTL: Redis refuses expiry times beyond its clock's range, and
/// a key that should outlive a year is better without a store.
const MAX_TTL: Duration = Duration::from_secs(365 * 24 * 60 * 60);
/// A DELETE's tombstone outlives the session's TTL this many times: an
/// instance cut off from Redis for longer than the TTL may still hold the
/// session, and must find the tombstone when it comes back.
const TOMBSTONE_TTLS: u64 = 4;

/// The shared state of the stores and their background tasks.
#[derive(Debug)]
pub(crate) struct Inner {
    connection: Connection,
    /// The servers the pub/sub listener subscribes on, tried in turn: the
    /// one Redis, or the cluster nodes given.
    subscribers: Vec<redis::Client>,
    /// Whether `connection` is a cluster's (keys then map to slots).
    cluster: bool,
    keys: Keys,
    ttl_ms: AtomicU64,
    explicit_ttl: bool,
    stream_capacity: AtomicUsize,
    /// Sessions whose stored copy this instance keeps alive, with their
    /// stored value (so the upkeep can write it again after Redis lost it).
    held: DashMap<SessionId, upkeep::Held>,
    /// DELETEs that did not reach Redis yet (oldest first), each with
    /// whether this instance held the session.
    pending_deletes: Mutex<hashlink::LinkedHashMap<SessionId, bool>>,
    /// The manager these stores serve, once attached (weak: the stores
    /// must not keep it alive).
    host: Mutex<Option<Weak<dyn SessionHost>>>,
    /// This instance's part of every append's nonce (a random UUID).
    instance: String,
    /// The count part of the next nonce.
    nonces: AtomicU64,
    /// Nonces of appends whose outcome is unknown, by stream (`unsettled`).
    unsettled: Mutex<hashlink::LinkedHashMap<String, Vec<String>>>,
    errors: ErrorLog,
    /// Other instances' standalone events dropped for full queues.
    relay_drops: relay::Drops,
    upkeep_interval: Option<Duration>,
    upkeep_now: Arc<tokio::sync::Notify>,
    shutdown: CancellationToken,
    /// How long this instance's liveness key outlives its last refresh
    /// (`events::lost`).
    lost_after: Duration,
    /// Whether a drain retired the liveness key; locked across each
    /// write of it.
    liveness: tokio::sync::Mutex<bool>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

impl Inner {
    fn ttl(&self) -> Duration {
        Duration::from_millis(self.ttl_ms.load(Ordering::Relaxed))
    }

    fn ttl_ms(&self) -> u64 {
        self.ttl_ms.load(Ordering::Relaxed)
    }

    fn tombstone_ttl_ms(&self) -> u64 {
        self.ttl_ms().saturating_mul(TOMBSTONE_TTLS)
    }

    /// Whether a manager was given these stores (`redis` on its builder):
    /// only then are sessions kept alive by the upkeep.
    fn attached(&self) -> bool {
        self.host().is_some()
    }

    /// A store call on the keys of `slot`: fails at once while a call for
    /// that slot failed within the last second (see `error_log`), else
    /// runs `call` and records its outcome.
    async fn call<T>(
        &self,
        operation: &str,
        slot: usize,
        call: impl std::future::Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, StoreError> {
        if self.errors.recently_failed(slot) {
            return Err(StoreError::RedisUnavailable);
        }
        self.observe(operation, slot, call.await)
    }

    /// The slot of the keys of session `id` for the short circuit (one for
    /// a single Redis).
    fn session_slot(&self, id: &str) -> usize {
        if self.cluster {
            usize::from(keys::session_slot(id))
        } else {
            0
        }
    }

    /// The slot of `key`, likewise (a key of its own tag).
    fn key_slot(&self, key: &str) -> usize {
        if self.cluster {
            usize::from(keys::key_slot(key))
        } else {
            0
        }
    }

    /// The slot of the keys of `stream`, likewise.
    fn stream_slot(&self, stream: &str) -> usize {
        if self.cluster {
            usize::from(keys::stream_slot(stream))
        } else {
            0
        }
    }

    fn stream_capacity(&self) -> usize {
        self.stream_capacity.load(Ordering::Relaxed)
    }

    fn host(&self) -> Option<Arc<dyn SessionHost>> {
        self.host.lock().as_ref().and_then(Weak::upgrade)
    }

    /// A quarter of the TTL, so a key is refreshed several times before it
    /// could expire under a live session; between 100 ms and one minute. A
    /// configured interval is kept under half the TTL for the same reason.
    fn upkeep_interval(&self) -> Duration {
        match self.upkeep_interval {
            Some(interval) => interval.min(self.ttl() / 2).max(Duration::from_millis(1)),
            None => (self.ttl() / 4).clamp(Duration::from_millis(100), Duration::from_secs(60)),
        }
    }

    /// Records the outcome of a Redis call on the keys of `slot` in the
    /// log; only a Redis that cannot be reached makes the next calls for
    /// that slot skip it.
    fn observe<T>(
        &self,
        operation: &str,
        slot: usize,
        result: redis::RedisResult<T>,
    ) -> Result<T, StoreError> {
        match result {
            Ok(value) => {
                self.errors.succeeded(slot);
                Ok(value)
            }
            Err(error) => {
                if is_outage(&error) {
                    self.errors.failed(slot, operation, &error);
                } else {
                    self.errors.refused(operation, &error);
                }
                Err(StoreError::Redis(error))
            }
        }
    }
}

/// Whether `error` says Redis cannot serve calls now (unreachable, timed
/// out, loading, a replica or a primary without its replicas, a cluster
/// without a node for the slot): the short circuit's and the upkeep's cue
/// to stop trying that slot. An error Redis answered for one call (out of
/// memory, a script's error, a wrong type, `TRYAGAIN` or a redirect still
/// there after the retries: one slot's keys mid-migration) says nothing of
/// the next calls.
pub(crate) fn is_outage(error: &redis::RedisError) -> bool {
    use redis::{ErrorKind, ServerErrorKind};
    error.is_io_error()
        || error.is_timeout()
        || error.is_connection_dropped()
        || error.is_connection_refusal()
        || matches!(
            error.kind(),
            ErrorKind::Server(
                ServerErrorKind::BusyLoading
                    | ServerErrorKind::ReadOnly
                    | ServerErrorKind::MasterDown
                    | ServerErrorKind::ClusterDown
            ) | ErrorKind::Client
                | ErrorKind::AuthenticationFailed
                | ErrorKind::ClusterConnectionNotFound
        )
        // A script running past its time limit blocks every call.
        || error.code() == Some("BUSY")
}

/// Whether `manager` must refuse to restore `id`: the id is not one this
/// crate issues, or a DELETE of it came on this instance since rmcp loaded
/// it (or waits for Redis here). False for a manager without Redis stores.
pub(crate) fn refuses_restore(manager: &BoundedSessionManager, id: &str) -> bool {
    let Some(inner) = manager.redis_stores().and_then(|inner| inner.upgrade()) else {
        return false;
    };
    !crate::store::is_session_id(id) || inner.deleted_here(id)
}

/// The two Redis-backed rmcp stores of one deployment, sharing one
/// connection (to a single Redis, or to a Redis Cluster:
/// [`cluster_builder`](Self::cluster_builder)), one key prefix and their
/// upkeep.
///
/// Give it to the manager's builder with
/// [`redis`](crate::BoundedSessionManagerBuilder::redis) (which sets the
/// event store and lets the stores close sessions DELETEd on other
/// instances), and its [`session_store`](Self::session_store) to rmcp's
/// `StreamableHttpServerConfig`. Cloning is cheap; the background tasks end
/// when the last clone is dropped.
///
/// # Example
///
/// ```no_run
/// use mcp_bounded_session::{BoundedSessionManager, RedisStores};
/// use rmcp::transport::streamable_http_server::StreamableHttpServerConfig;
///
/// # async fn demo() -> Result<(), mcp_bounded_session::StoreError> {
/// let redis = RedisStores::builder("redis://127.0.0.1:6379/")
///     .prefix("my-server:")
///     .connect()
///     .await?;
/// let manager = BoundedSessionManager::builder(1_000).redis(&redis).build();
/// let mut config = StreamableHttpServerConfig::default();
/// config.session_store = Some(redis.session_store());
/// // StreamableHttpService::new(factory, manager, config)
///
/// // The same on a Redis Cluster: only the builder differs.
/// let redis = RedisStores::cluster_builder(["redis://10.0.0.1:6379/", "redis://10.0.0.2:6379/"])
///     .prefix("my-server:")
///     .connect()
///     .await?;
/// # drop(redis);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct RedisStores {
    inner: Arc<Inner>,
}

impl RedisStores {
    /// The rmcp `SessionStore`, for `StreamableHttpServerConfig::session_store`.
    /// Give the stores to the manager's builder too
    /// ([`redis`](crate::BoundedSessionManagerBuilder::redis)): without a
    /// manager, nothing keeps the sessions' keys alive past their TTL or
    /// writes them again after an outage.
    ///
    /// ```no_run
    /// # async fn demo(redis: mcp_bounded_session::RedisStores) {
    /// let mut config =
    ///     rmcp::transport::streamable_http_server::StreamableHttpServerConfig::default();
    /// config.session_store = Some(redis.session_store());
    /// # }
    /// ```
    pub fn session_store(
        &self,
    ) -> Arc<dyn rmcp::transport::streamable_http_server::session::store::SessionStore> {
        Arc::new(RedisSessionStore {
            inner: self.inner.clone(),
        })
    }

    /// The rmcp `EventStore` (the builder's `redis` already gives it to the
    /// manager).
    ///
    /// ```no_run
    /// # async fn demo(redis: mcp_bounded_session::RedisStores) {
    /// let store = redis.event_store();
    /// # drop(store);
    /// # }
    /// ```
    pub fn event_store(
        &self,
    ) -> Arc<dyn rmcp::transport::streamable_http_server::session::EventStore> {
        Arc::new(RedisEventStore {
            inner: self.inner.clone(),
        })
    }

    /// The event store, as a session appends to it.
    pub(crate) fn events(&self) -> RedisEventStore {
        RedisEventStore {
            inner: self.inner.clone(),
        }
    }

    /// The TTL given to every key.
    ///
    /// ```no_run
    /// # async fn demo(redis: mcp_bounded_session::RedisStores) {
    /// assert!(redis.ttl() > std::time::Duration::ZERO);
    /// # }
    /// ```
    pub fn ttl(&self) -> Duration {
        self.inner.ttl()
    }

    /// Lets the stores close this manager's copies of sessions DELETEd
    /// elsewhere, and sizes keys and streams by its settings: the TTL is the
    /// idle timeout (else the maximum lifetime) unless set on the builder;
    /// each stream keeps `replay_capacity` events.
    pub(crate) fn attach(
        &self,
        manager: &Arc<BoundedSessionManager>,
        idle: Option<Duration>,
        replay_capacity: usize,
    ) {
        let mut attached = self.inner.host.lock();
        if attached
            .as_ref()
            .is_some_and(|host| host.strong_count() > 0)
        {
            tracing::warn!(
                "RedisStores given to a second manager: only the last one built closes its \
                 sessions DELETEd elsewhere and keeps them alive in Redis; give each manager \
                 stores of its own"
            );
        }
        let host: Arc<dyn SessionHost> = manager.clone();
        *attached = Some(Arc::downgrade(&host));
        drop(attached);
        manager.attach_redis_stores(Arc::downgrade(&self.inner));
        self.inner
            .stream_capacity
            .store(replay_capacity, Ordering::Relaxed);
        if !self.inner.explicit_ttl
            && let Some(idle) = idle
        {
            self.inner
                .ttl_ms
                .store(duration_ms(idle), Ordering::Relaxed);
        }
        self.inner.upkeep_now.notify_one();
    }
}

/// Milliseconds, at least 1 (Redis refuses a zero TTL) and at most
/// [`MAX_TTL`]'s.
fn duration_ms(duration: Duration) -> u64 {
    let ms = duration.min(MAX_TTL).as_millis();
    u64::try_from(ms).unwrap_or(u64::MAX).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttls_are_whole_milliseconds_redis_accepts() {
        assert_eq!(duration_ms(Duration::ZERO), 1);
        assert_eq!(duration_ms(Duration::from_micros(1_500)), 1);
        assert_eq!(duration_ms(Duration::from_secs(2)), 2_000);
        assert_eq!(duration_ms(Duration::MAX), 365 * 24 * 60 * 60 * 1_000);
    }
}
