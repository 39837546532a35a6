//! The Redis stores (feature `redis`): sessions and replays shared by every
//! instance that names the same Redis and key prefix.
//!
//! [`RedisStores`] owns one multiplexed connection (redis-rs's
//! `ConnectionManager`, which reconnects by itself) and two background
//! tasks, and hands out the two rmcp stores that use them:
//! [`RedisSessionStore`] (rmcp's `SessionStore`, for
//! `StreamableHttpServerConfig::session_store`) and [`RedisEventStore`]
//! (rmcp's `EventStore`, which the manager returns from `event_store()`).
//! Key layout: `keys`.
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
//!   Redis (`is_outage`) makes calls skip it for a second; an error it
//!   answers one call with fails that call only.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use dashmap::DashMap;
use parking_lot::Mutex;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use rmcp::transport::streamable_http_server::session::SessionId;
use tokio_util::sync::CancellationToken;

use super::StoreError;
use crate::manager::BoundedSessionManager;

pub(crate) use self::host::SessionHost;

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

pub use events::RedisEventStore;
pub use sessions::RedisSessionStore;

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
    connection: ConnectionManager,
    client: redis::Client,
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

    /// A store call: fails at once while Redis failed within the last
    /// second (see `error_log`), else runs `call` and records its outcome.
    /// The upkeep calls Redis directly: it is what probes an outage.
    async fn call<T>(
        &self,
        operation: &str,
        call: impl std::future::Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, StoreError> {
        if self.errors.recently_failed() {
            return Err(StoreError::RedisUnavailable);
        }
        self.observe(operation, call.await)
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

    /// Records the outcome of a Redis call in the log; only a Redis that
    /// cannot be reached makes the next calls skip it.
    fn observe<T>(&self, operation: &str, result: redis::RedisResult<T>) -> Result<T, StoreError> {
        match result {
            Ok(value) => {
                self.errors.succeeded();
                Ok(value)
            }
            Err(error) => {
                if is_outage(&error) {
                    self.errors.failed(operation, &error);
                } else {
                    self.errors.refused(operation, &error);
                }
                Err(StoreError::Redis(error))
            }
        }
    }
}

/// Whether `error` says Redis cannot serve calls now (unreachable, timed
/// out, loading, a replica or a primary without its replicas): the short
/// circuit's and the upkeep's cue to stop trying. An error Redis answered
/// for one call (out of memory, a script's error, a wrong type) says
/// nothing of the next calls.
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
                    | ServerErrorKind::TryAgain
                    | ServerErrorKind::ClusterDown
            ) | ErrorKind::Client
                | ErrorKind::AuthenticationFailed
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
/// connection, one key prefix and their upkeep.
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
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct RedisStores {
    inner: Arc<Inner>,
}

/// Settings of [`RedisStores`]; from [`RedisStores::builder`].
///
/// ```
/// use std::time::Duration;
/// use mcp_bounded_session::RedisStores;
///
/// let builder = RedisStores::builder("redis://127.0.0.1:6379/")
///     .prefix("my-server:")
///     .ttl(Duration::from_secs(15 * 60));
/// // builder.connect().await? in a tokio runtime
/// # drop(builder);
/// ```
#[derive(Debug, Clone)]
#[must_use = "a builder does nothing until connect() is called"]
pub struct RedisStoresBuilder {
    url: String,
    prefix: String,
    ttl: Option<Duration>,
    upkeep_interval: Option<Duration>,
}

impl RedisStores {
    /// Settings for the Redis at `url` (`redis://host:port/db`, with
    /// `rediss://` for TLS if redis-rs is built with a TLS feature).
    ///
    /// ```
    /// use mcp_bounded_session::RedisStores;
    ///
    /// let builder = RedisStores::builder("redis://127.0.0.1:6379/").prefix("app:");
    /// # drop(builder);
    /// ```
    pub fn builder(url: impl Into<String>) -> RedisStoresBuilder {
        RedisStoresBuilder {
            url: url.into(),
            prefix: "mcp:".to_owned(),
            ttl: None,
            upkeep_interval: None,
        }
    }

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

impl RedisStoresBuilder {
    /// The prefix of every key and channel name (default `mcp:`): one per
    /// deployment sharing a Redis.
    ///
    /// ```
    /// # use mcp_bounded_session::RedisStores;
    /// let builder = RedisStores::builder("redis://127.0.0.1/").prefix("billing-mcp:");
    /// # drop(builder);
    /// ```
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// The TTL of every key (by default the manager's idle timeout, which
    /// rmcp's `SessionConfig` sets to 5 minutes, else its maximum lifetime,
    /// else 30 minutes; at most a year). A session's stored copy lives this
    /// long after the last instance holding it let it go; a stream, this
    /// long after its last write or replay; a DELETE's tombstone, four
    /// times this long.
    ///
    /// # Panics
    ///
    /// Panics if `ttl` is under one millisecond.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use mcp_bounded_session::RedisStores;
    /// let builder = RedisStores::builder("redis://127.0.0.1/").ttl(Duration::from_secs(600));
    /// # drop(builder);
    /// ```
    pub fn ttl(mut self, ttl: Duration) -> Self {
        assert!(
            ttl >= Duration::from_millis(1),
            "the TTL must be at least 1 ms"
        );
        self.ttl = Some(ttl);
        self
    }

    /// How often the upkeep refreshes the TTLs of the sessions this
    /// instance holds and retries failed writes (default: a quarter of the
    /// TTL, between 100 ms and one minute). It also bounds how late a
    /// DELETE published while this instance was not subscribed ends its
    /// copy here.
    ///
    /// # Panics
    ///
    /// Panics if `interval` is zero.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use mcp_bounded_session::RedisStores;
    /// let builder = RedisStores::builder("redis://127.0.0.1/")
    ///     .upkeep_interval(Duration::from_secs(5));
    /// # drop(builder);
    /// ```
    pub fn upkeep_interval(mut self, interval: Duration) -> Self {
        assert!(!interval.is_zero(), "the upkeep interval must not be zero");
        self.upkeep_interval = Some(interval);
        self
    }

    /// Creates the stores and starts their background tasks. Redis need
    /// not be up: the connection is made on first use and remade after
    /// each failure.
    ///
    /// # Errors
    ///
    /// [`StoreError::Redis`] if `url` is not a Redis URL.
    ///
    /// # Panics
    ///
    /// Panics outside a tokio runtime.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it does not suspend (it is async so that it runs in the
    /// runtime its tasks are spawned on).
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), mcp_bounded_session::StoreError> {
    /// let redis = mcp_bounded_session::RedisStores::builder("redis://127.0.0.1/")
    ///     .connect()
    ///     .await?;
    /// # drop(redis); Ok(()) }
    /// ```
    pub async fn connect(self) -> Result<RedisStores, StoreError> {
        let client = redis::Client::open(self.url.as_str())?;
        let config = ConnectionManagerConfig::new()
            .set_response_timeout(Some(RESPONSE_TIMEOUT))
            .set_connection_timeout(Some(RESPONSE_TIMEOUT))
            // A call fails fast while Redis is away; the manager reconnects
            // on the next one.
            .set_number_of_retries(0);
        let connection = ConnectionManager::new_lazy_with_config(client.clone(), config)?;
        let inner = Arc::new(Inner {
            connection,
            client,
            keys: Keys::new(self.prefix),
            ttl_ms: AtomicU64::new(duration_ms(self.ttl.unwrap_or(DEFAULT_TTL))),
            explicit_ttl: self.ttl.is_some(),
            stream_capacity: AtomicUsize::new(DEFAULT_STREAM_CAPACITY),
            held: DashMap::new(),
            pending_deletes: Mutex::new(hashlink::LinkedHashMap::new()),
            host: Mutex::new(None),
            instance: rmcp::transport::common::server_side_http::session_id().to_string(),
            nonces: AtomicU64::new(0),
            unsettled: Mutex::new(hashlink::LinkedHashMap::new()),
            errors: ErrorLog::default(),
            relay_drops: relay::Drops::default(),
            upkeep_interval: self.upkeep_interval,
            upkeep_now: Arc::new(tokio::sync::Notify::new()),
            shutdown: CancellationToken::new(),
        });
        tokio::spawn(deletions::listen(
            Arc::downgrade(&inner),
            inner.shutdown.clone(),
            inner.upkeep_now.clone(),
        ));
        tokio::spawn(upkeep::run(
            Arc::downgrade(&inner),
            inner.shutdown.clone(),
            inner.upkeep_now.clone(),
        ));
        Ok(RedisStores { inner })
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
