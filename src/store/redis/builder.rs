//! [`RedisStoresBuilder`]: the settings of [`RedisStores`], for a single
//! Redis ([`RedisStores::builder`]) or a Redis Cluster
//! ([`RedisStores::cluster_builder`]).
//!
//! # Invariant kept here
//!
//! One construction path: both constructors end in
//! [`RedisStoresBuilder::new`], and [`RedisStoresBuilder::connect`] is the
//! only way to stores; every setting is checked there, and a bad one is an
//! error ([`StoreError::InvalidConfig`], or [`StoreError::Redis`] for a
//! URL redis-rs cannot read), never a panic.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize};
use std::time::Duration;

use dashmap::DashMap;
use parking_lot::Mutex;
use tokio_util::sync::CancellationToken;

use super::connection::Nodes;
use super::error_log::ErrorLog;
use super::keys::{Keys, SLOTS};
use super::{
    DEFAULT_STREAM_CAPACITY, DEFAULT_TTL, Inner, MAX_TTL, RedisStores, deletions, duration_ms,
    events, relay, upkeep,
};
use crate::store::StoreError;

/// Settings of [`RedisStores`]; from [`RedisStores::builder`] (a single
/// Redis) or [`RedisStores::cluster_builder`] (a Redis Cluster).
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
    nodes: Nodes,
    prefix: String,
    ttl: Option<Duration>,
    upkeep_interval: Option<Duration>,
    request_lost_after: Duration,
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
        RedisStoresBuilder::new(Nodes::One(url.into()))
    }

    /// Settings for the Redis Cluster (or Valkey cluster) that `nodes`
    /// belong to: the URLs of some of its nodes (`redis://host:port/`, all
    /// with the same credentials and TLS), from which the others are found.
    /// The pub/sub listener subscribes on one of them at a time, the next
    /// when that one fails: give several, of nodes that stay in the
    /// cluster. Every key of a session shares one slot, so a session's
    /// scripts run on one node.
    ///
    /// ```
    /// use mcp_bounded_session::RedisStores;
    ///
    /// let builder = RedisStores::cluster_builder([
    ///     "redis://10.0.0.1:6379/",
    ///     "redis://10.0.0.2:6379/",
    ///     "redis://10.0.0.3:6379/",
    /// ])
    /// .prefix("app:");
    /// // builder.connect().await? in a tokio runtime
    /// # drop(builder);
    /// ```
    pub fn cluster_builder<I, S>(nodes: I) -> RedisStoresBuilder
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        RedisStoresBuilder::new(Nodes::Cluster(nodes.into_iter().map(Into::into).collect()))
    }
}

impl RedisStoresBuilder {
    /// The one constructor (see the module docs).
    fn new(nodes: Nodes) -> Self {
        Self {
            nodes,
            prefix: "mcp:".to_owned(),
            ttl: None,
            upkeep_interval: None,
            request_lost_after: events::lost::DEFAULT_LOST_AFTER,
        }
    }

    /// The prefix of every key and channel name (default `mcp:`): one per
    /// deployment sharing a Redis. It may not hold `{` or `}`, which would
    /// change the keys' hash tags (checked by [`connect`](Self::connect)).
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
    /// times this long. At least one millisecond (checked by
    /// [`connect`](Self::connect)).
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use mcp_bounded_session::RedisStores;
    /// let builder = RedisStores::builder("redis://127.0.0.1/").ttl(Duration::from_secs(600));
    /// # drop(builder);
    /// ```
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = Some(ttl);
        self
    }

    /// How often the upkeep refreshes the TTLs of the sessions this
    /// instance holds and retries failed writes (default: a quarter of the
    /// TTL, between 100 ms and one minute). It also bounds how late a
    /// DELETE published while this instance was not subscribed ends its
    /// copy here. Not zero (checked by [`connect`](Self::connect)).
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use mcp_bounded_session::RedisStores;
    /// let builder = RedisStores::builder("redis://127.0.0.1/")
    ///     .upkeep_interval(Duration::from_secs(5));
    /// # drop(builder);
    /// ```
    pub fn upkeep_interval(mut self, interval: Duration) -> Self {
        self.upkeep_interval = Some(interval);
        self
    }

    /// How soon after this instance stops without a drain (a crash) a
    /// client resuming, on another instance, the stream of a request it
    /// left unanswered learns that the request was lost: its stream then
    /// ends with a JSON-RPC error for that request (code -32603, `data`
    /// `{"reason": "request_lost"}`), and the client can send it again.
    /// After a drain, at once. Default 10 s; at least 100 ms. The instance
    /// writes a key with this TTL every third of it, so a shorter delay
    /// costs more writes (one per third, per instance), and an instance
    /// cut off from Redis for longer is taken for stopped.
    ///
    /// ```
    /// use std::time::Duration;
    /// use mcp_bounded_session::RedisStores;
    ///
    /// let builder = RedisStores::builder("redis://127.0.0.1:6379/")
    ///     .request_lost_after(Duration::from_secs(5));
    /// # drop(builder);
    /// ```
    pub fn request_lost_after(mut self, delay: Duration) -> Self {
        self.request_lost_after = delay;
        self
    }

    /// The settings' first fault, if any.
    fn check(&self) -> Result<(), StoreError> {
        let invalid = |what: String| Err(StoreError::InvalidConfig(what));
        if self.prefix.contains(['{', '}']) {
            return invalid(format!(
                "the key prefix {:?} holds `{{` or `}}`, which would change the keys' hash tags",
                self.prefix
            ));
        }
        if self.ttl.is_some_and(|ttl| ttl < Duration::from_millis(1)) {
            return invalid("the TTL must be at least 1 ms".to_owned());
        }
        if self
            .upkeep_interval
            .is_some_and(|interval| interval.is_zero())
        {
            return invalid("the upkeep interval must not be zero".to_owned());
        }
        if self.request_lost_after < Duration::from_millis(100) || self.request_lost_after > MAX_TTL
        {
            return invalid(format!(
                "the request-lost delay must be between 100 ms and a year, not {:?}",
                self.request_lost_after
            ));
        }
        Ok(())
    }

    /// Creates the stores and starts their background tasks. Redis need
    /// not be up: the connection is made on first use and remade after
    /// each failure (for a cluster, to every node it finds).
    ///
    /// # Errors
    ///
    /// [`StoreError::Redis`] if a URL is not a Redis URL (or the cluster's
    /// differ in credentials, database or TLS);
    /// [`StoreError::InvalidConfig`] for no cluster node, a prefix with
    /// `{` or `}`, a TTL under a millisecond, a zero upkeep interval or a
    /// request-lost delay under 100 ms.
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
        self.check()?;
        let opened = self.nodes.open()?;
        let slots = if opened.cluster {
            usize::from(SLOTS)
        } else {
            1
        };
        let inner = Arc::new(Inner {
            connection: opened.connection,
            subscribers: opened.subscribers,
            cluster: opened.cluster,
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
            errors: ErrorLog::new(slots),
            relay_drops: relay::Drops::default(),
            upkeep_interval: self.upkeep_interval,
            upkeep_now: Arc::new(tokio::sync::Notify::new()),
            shutdown: CancellationToken::new(),
            lost_after: self.request_lost_after,
            liveness: tokio::sync::Mutex::new(false),
        });
        tokio::spawn(events::keep_alive(
            Arc::downgrade(&inner),
            inner.shutdown.clone(),
        ));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn bad_settings_are_errors_not_panics() {
        let bad = [
            RedisStores::builder("redis://127.0.0.1/").prefix("{app}:"),
            RedisStores::builder("redis://127.0.0.1/").prefix("app}"),
            RedisStores::builder("redis://127.0.0.1/").ttl(Duration::ZERO),
            RedisStores::builder("redis://127.0.0.1/").ttl(Duration::from_micros(999)),
            RedisStores::builder("redis://127.0.0.1/").upkeep_interval(Duration::ZERO),
            RedisStores::cluster_builder(Vec::<String>::new()),
        ];
        for builder in bad {
            let error = builder.connect().await.expect_err("refused");
            assert!(matches!(error, StoreError::InvalidConfig(_)), "{error:?}");
        }
        for url in ["not a url", "http://127.0.0.1/"] {
            let error = RedisStores::builder(url).connect().await.expect_err(url);
            assert!(matches!(error, StoreError::Redis(_)), "{error:?}");
            let error = RedisStores::cluster_builder(["redis://127.0.0.1:7000/", url])
                .connect()
                .await
                .expect_err(url);
            assert!(matches!(error, StoreError::Redis(_)), "{error:?}");
        }
    }
}
