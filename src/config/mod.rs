//! Configuration: the builder, and rmcp's per-session configuration.

use std::sync::Arc;
use std::time::Duration;

pub use rmcp::transport::streamable_http_server::session::local::SessionConfig;

use rmcp::transport::streamable_http_server::session::{EventStore, SessionId};

use crate::clients::ClientKey;
use crate::clients::forwarded::TrustedProxies;
use crate::clients::key::{CustomKey, KeyDerivation, validate_ipv6_prefix};
use crate::clients::limits::DEFAULT_MAX_IDLE_KEYS;
use crate::close_reason::CloseReason;
use crate::eviction::{AtCapacity, EvictionPolicy};
#[cfg(doc)]
use crate::manager::BoundedSessionManager;
use crate::rate_limiter::RateLimiter;
use crate::session::SessionRegistry;

mod build;
mod parking;
mod requests;
mod stores;
pub(crate) mod validate;

/// Fluent builder for [`BoundedSessionManager`], as in `mcp-session` 0.2.
///
/// # Example
///
/// ```
/// use std::time::Duration;
/// use mcp_bounded_session::BoundedSessionManagerBuilder;
///
/// let manager = BoundedSessionManagerBuilder::new(100)
///     .idle_timeout(Duration::from_secs(4 * 60 * 60))
///     .max_lifetime(Duration::from_secs(24 * 60 * 60))
///     .rate_limit(10, Duration::from_secs(60))
///     .build();
/// assert_eq!(manager.max_sessions(), 100);
/// assert_eq!(
///     manager.session_config().keep_alive,
///     Some(Duration::from_secs(4 * 60 * 60))
/// );
/// ```
#[derive(Clone)]
#[must_use = "a builder does nothing until build() is called"]
pub struct BoundedSessionManagerBuilder {
    max_sessions: usize,
    idle_timeout: Option<Duration>,
    max_lifetime: Option<Duration>,
    session_config: Option<SessionConfig>,
    rate_limit: Option<(usize, Duration)>,
    replay_capacity: Option<usize>,
    max_request_streams: Option<usize>,
    event_store: Option<Arc<dyn EventStore>>,
    stateless_event_store: Option<Arc<dyn EventStore>>,
    /// Whether `event_store` is the Redis stores' own (whose ids name
    /// their stream), not one given by the user.
    #[cfg(feature = "redis")]
    event_store_is_redis: bool,
    /// What external stores' ids are bound to their streams with.
    event_id_key: Option<Arc<[u8]>>,
    #[cfg(feature = "redis")]
    redis: Option<crate::store::RedisStores>,
    eviction_policy: EvictionPolicy,
    at_capacity: AtCapacity,
    on_close: Option<CloseHook>,
    max_sessions_per_client: Option<usize>,
    rate_limit_per_client: Option<(usize, Duration)>,
    max_idle_client_keys: usize,
    trusted_proxies: Option<TrustedProxies>,
    ipv6_prefix: u8,
    client_key: Option<ClientKeyFn>,
    bind_sessions_to_client: bool,
    requests: crate::requests::RequestLimits,
    parking: parking::ParkingSettings,
}

impl std::fmt::Debug for BoundedSessionManagerBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BoundedSessionManagerBuilder")
            .field("max_sessions", &self.max_sessions)
            .field("idle_timeout", &self.idle_timeout)
            .field("max_lifetime", &self.max_lifetime)
            .field("rate_limit", &self.rate_limit)
            .field("event_store", &self.event_store.is_some())
            .field("eviction_policy", &self.eviction_policy)
            .field("at_capacity", &self.at_capacity)
            .finish_non_exhaustive()
    }
}

/// The user's client-key function.
#[derive(Clone)]
struct ClientKeyFn(CustomKey);

impl std::fmt::Debug for ClientKeyFn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClientKeyFn(..)")
    }
}

/// The user's `on_close` function.
#[derive(Clone)]
struct CloseHook(crate::observe::CloseHook);

impl std::fmt::Debug for CloseHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CloseHook(..)")
    }
}

impl BoundedSessionManagerBuilder {
    /// A builder for a manager that keeps at most `max_sessions` sessions.
    ///
    /// # Panics
    ///
    /// Panics if `max_sessions` is 0 (or beyond 2^61, tokio's semaphore limit).
    ///
    /// # Example
    ///
    /// ```
    /// use mcp_bounded_session::BoundedSessionManagerBuilder;
    ///
    /// let manager = BoundedSessionManagerBuilder::new(8).build();
    /// assert_eq!(manager.max_sessions(), 8);
    /// ```
    pub fn new(max_sessions: usize) -> Self {
        SessionRegistry::validate(max_sessions);
        Self {
            max_sessions,
            idle_timeout: None,
            max_lifetime: None,
            session_config: None,
            rate_limit: None,
            replay_capacity: None,
            max_request_streams: None,
            event_store: None,
            stateless_event_store: None,
            #[cfg(feature = "redis")]
            event_store_is_redis: false,
            event_id_key: None,
            #[cfg(feature = "redis")]
            redis: None,
            eviction_policy: EvictionPolicy::default(),
            at_capacity: AtCapacity::default(),
            on_close: None,
            max_sessions_per_client: None,
            rate_limit_per_client: None,
            max_idle_client_keys: DEFAULT_MAX_IDLE_KEYS,
            trusted_proxies: None,
            ipv6_prefix: KeyDerivation::DEFAULT_IPV6_PREFIX,
            client_key: None,
            bind_sessions_to_client: false,
            requests: crate::requests::RequestLimits::default(),
            parking: parking::ParkingSettings::default(),
        }
    }

    /// At most `n` live sessions per client key. A client at its quota that
    /// opens one more replaces its own least recently active idle session,
    /// never another client's; if all of its sessions are busy the creation
    /// is refused (`429` with `Retry-After` behind the HTTP layer).
    ///
    /// Client keys come from [`BoundedSessionManager::layer`]; without the
    /// layer every session counts under one anonymous key, to which no
    /// per-client limit applies.
    ///
    /// # Panics
    ///
    /// Panics if `n` is 0.
    ///
    /// ```
    /// # use mcp_bounded_session::BoundedSessionManagerBuilder;
    /// let manager = BoundedSessionManagerBuilder::new(1_000)
    ///     .max_sessions_per_client(10)
    ///     .build();
    /// # drop(manager);
    /// ```
    pub fn max_sessions_per_client(mut self, n: usize) -> Self {
        assert!(
            n >= 1,
            "max_sessions_per_client must be at least 1; configure none instead of 0"
        );
        self.max_sessions_per_client = Some(n);
        self
    }

    /// At most `max_creates` session creations per client key in any
    /// rolling `window` (exact, as [`Self::rate_limit`]); one key's flood
    /// never spends another's budget. The global [`Self::rate_limit`], if
    /// any, stays the outer bound. A refusal is `429` with `Retry-After`.
    ///
    /// The table of keys is bounded: keys with live sessions, plus at most
    /// [`Self::max_idle_client_keys`] keys remembered only for their recent
    /// creations, the least recently used forgotten first (a forgotten key
    /// may use its full budget again at once).
    ///
    /// # Panics
    ///
    /// Panics if `max_creates` is 0 or `window` is zero.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use mcp_bounded_session::BoundedSessionManagerBuilder;
    /// let manager = BoundedSessionManagerBuilder::new(1_000)
    ///     .rate_limit_per_client(20, Duration::from_secs(60))
    ///     .build();
    /// # drop(manager);
    /// ```
    pub fn rate_limit_per_client(mut self, max_creates: usize, window: Duration) -> Self {
        RateLimiter::validate(max_creates, window);
        self.rate_limit_per_client = Some((max_creates, window));
        self
    }

    /// How many client keys without a live session the per-client rate
    /// limit remembers (default 100,000, a few tens of MB at most).
    ///
    /// # Panics
    ///
    /// Panics if `n` is 0.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use mcp_bounded_session::BoundedSessionManagerBuilder;
    /// let manager = BoundedSessionManagerBuilder::new(1_000)
    ///     .rate_limit_per_client(20, Duration::from_secs(60))
    ///     .max_idle_client_keys(10_000)
    ///     .build();
    /// # drop(manager);
    /// ```
    pub fn max_idle_client_keys(mut self, n: usize) -> Self {
        assert!(n >= 1, "max_idle_client_keys must be at least 1");
        self.max_idle_client_keys = n;
        self
    }

    /// The server sits behind reverse proxies at `networks` (`10.0.0.0/8`,
    /// `::1/128`, or a bare address for one host), each of which appends
    /// the address it received the request from to `header`:
    /// `"x-forwarded-for"` or `"forwarded"` (RFC 7239), in any case, so
    /// [`http::header::FORWARDED`] works too. Default: none, the client is
    /// the connection's peer address. A second call replaces the first.
    ///
    /// The header is read only when the peer is in one of the networks,
    /// and then from the right: every entry that is a trusted proxy was
    /// written by the next one in, and the first entry that is not one is
    /// the client (nginx's `real_ip_recursive`). Entries further left are
    /// the client's own writing and are never read, nor is the other
    /// header, which a proxy passes through as the client sent it. If every
    /// entry is a trusted proxy, the leftmost is the client; without the
    /// header, the peer (a request of the proxy's own, such as a health
    /// check). A request whose client entry is not an address (`unknown`,
    /// an obfuscated `_identifier`, garbage) is refused with
    /// `400 Bad Request` by [`BoundedSessionManager::layer`], never keyed
    /// by the proxy (see the README's threat model for why).
    ///
    /// List only proxies that append to `header`: one that passes it
    /// through unchanged lets whoever reaches it write the entry read
    /// (unless only listed proxies can reach it). With
    /// proxies that write different headers, have them agree on one, or
    /// trust only the ones nearest the server that write it (the clients
    /// behind the others then share the first such proxy's key).
    ///
    /// # Panics
    ///
    /// Panics with what to write instead if `header` is another header, a
    /// network is malformed (`10.0.0.1/8` included: host bits past the
    /// prefix), or `networks` is empty.
    ///
    /// ```
    /// # use mcp_bounded_session::BoundedSessionManagerBuilder;
    /// // A load balancer in 10.0.0.0/8 and a local nginx, both appending
    /// // to X-Forwarded-For.
    /// let manager = BoundedSessionManagerBuilder::new(1_000)
    ///     .trusted_proxies("x-forwarded-for", ["10.0.0.0/8", "127.0.0.1", "::1/128"])
    ///     .max_sessions_per_client(10)
    ///     .build();
    /// # drop(manager);
    /// ```
    ///
    /// ```should_panic
    /// # use mcp_bounded_session::BoundedSessionManagerBuilder;
    /// // Panics: "`10.0.0.1/8` has bits set past its /8: write 10.0.0.0/8
    /// // for the network, or the address alone for one host".
    /// let _ = BoundedSessionManagerBuilder::new(1_000).trusted_proxies("forwarded", ["10.0.0.1/8"]);
    /// ```
    #[track_caller]
    pub fn trusted_proxies<N: AsRef<str>>(
        mut self,
        header: impl AsRef<str>,
        networks: impl IntoIterator<Item = N>,
    ) -> Self {
        self.trusted_proxies = Some(TrustedProxies::new(header.as_ref(), networks));
        self
    }

    /// IPv6 clients are keyed by this prefix of their address (default 64:
    /// one customer usually holds a whole /64).
    ///
    /// # Panics
    ///
    /// Panics if `bits` is over 128.
    ///
    /// ```
    /// # use mcp_bounded_session::BoundedSessionManagerBuilder;
    /// let manager = BoundedSessionManagerBuilder::new(1_000).ipv6_prefix(56).build();
    /// # drop(manager);
    /// ```
    pub fn ipv6_prefix(mut self, bits: u8) -> Self {
        validate_ipv6_prefix(bits);
        self.ipv6_prefix = bits;
        self
    }

    /// Derives client keys with `key` (an OAuth subject from the request's
    /// extensions, an API key's id); it takes precedence over the address
    /// rules, which apply where it returns `None`.
    ///
    /// Return only keys the client cannot choose: an identity your
    /// authentication verified, or an id looked up from a credential. A key
    /// taken from a raw header is whatever the client writes there, so each
    /// request could bring a fresh key with a fresh budget. (A key's size is
    /// bounded either way: [`ClientKey::named`] keeps a value longer than 64
    /// bytes as a digest.)
    ///
    /// ```
    /// # use std::collections::HashMap;
    /// # use std::sync::Arc;
    /// # use mcp_bounded_session::{BoundedSessionManagerBuilder, ClientKey};
    /// // API keys this server issued, and the account each belongs to.
    /// let accounts: Arc<HashMap<String, ClientKey>> = Arc::new(HashMap::from([
    ///     ("sk-7f3a".to_owned(), ClientKey::named("account-1")),
    ///     ("sk-91c2".to_owned(), ClientKey::named("account-2")),
    /// ]));
    /// let manager = BoundedSessionManagerBuilder::new(1_000)
    ///     .client_key(move |parts| {
    ///         let presented = parts.headers.get("x-api-key")?.to_str().ok()?;
    ///         // An unknown key falls through to the peer address.
    ///         accounts.get(presented).cloned()
    ///     })
    ///     .build();
    /// # drop(manager);
    /// ```
    pub fn client_key(
        mut self,
        key: impl Fn(&http::request::Parts) -> Option<ClientKey> + Send + Sync + 'static,
    ) -> Self {
        self.client_key = Some(ClientKeyFn(Arc::new(key)));
        self
    }

    /// A session answers only requests with the client key that created it;
    /// others get the same `404` as an unknown id, so a leaked id is useless
    /// elsewhere. Off by default: with keys from addresses, a client whose
    /// address changes (mobile networks, several egress addresses) loses its
    /// session; prefer a [`Self::client_key`] from an authenticated identity.
    ///
    /// ```
    /// # use mcp_bounded_session::BoundedSessionManagerBuilder;
    /// let manager = BoundedSessionManagerBuilder::new(1_000)
    ///     .bind_sessions_to_client(true)
    ///     .build();
    /// # drop(manager);
    /// ```
    pub fn bind_sessions_to_client(mut self, bind: bool) -> Self {
        self.bind_sessions_to_client = bind;
        self
    }

    /// Which idle session a creation at the full cap evicts (default: the
    /// least recently active). A session with a request in flight is never
    /// evicted, whatever the policy.
    ///
    /// ```
    /// # use mcp_bounded_session::{BoundedSessionManagerBuilder, EvictionPolicy};
    /// let manager = BoundedSessionManagerBuilder::new(8)
    ///     .eviction_policy(EvictionPolicy::OldestCreated)
    ///     .build();
    /// assert_eq!(manager.eviction_policy(), EvictionPolicy::OldestCreated);
    /// ```
    pub fn eviction_policy(mut self, policy: EvictionPolicy) -> Self {
        self.eviction_policy = policy;
        self
    }

    /// What a creation does when the cap is full: evict an idle session
    /// (the default), or refuse (`503` with `Retry-After` behind the HTTP
    /// layer).
    ///
    /// ```
    /// # use mcp_bounded_session::{AtCapacity, BoundedSessionManagerBuilder};
    /// let manager = BoundedSessionManagerBuilder::new(8)
    ///     .at_capacity(AtCapacity::Refuse)
    ///     .build();
    /// assert_eq!(manager.at_capacity(), AtCapacity::Refuse);
    /// ```
    pub fn at_capacity(mut self, at_capacity: AtCapacity) -> Self {
        self.at_capacity = at_capacity;
        self
    }

    /// Calls `hook` with every session that ends: its id, why
    /// ([`CloseReason`]), and how long it lived. It runs synchronously on
    /// the thread that ended the session (a request's, or a timer's): keep
    /// it short and never block in it.
    ///
    /// ```
    /// # use std::sync::Arc;
    /// # use std::sync::atomic::{AtomicUsize, Ordering};
    /// # use mcp_bounded_session::{BoundedSessionManagerBuilder, CloseReason};
    /// let evictions = Arc::new(AtomicUsize::new(0));
    /// let counter = evictions.clone();
    /// let manager = BoundedSessionManagerBuilder::new(8)
    ///     .on_close(move |_id, reason, _lived| {
    ///         if reason == CloseReason::Evicted {
    ///             counter.fetch_add(1, Ordering::Relaxed);
    ///         }
    ///     })
    ///     .build();
    /// # drop(manager);
    /// ```
    pub fn on_close(
        mut self,
        hook: impl Fn(&SessionId, CloseReason, Duration) + Send + Sync + 'static,
    ) -> Self {
        self.on_close = Some(CloseHook(Arc::new(hook)));
        self
    }

    /// Closes a session after `duration` without activity. This is
    /// `SessionConfig::keep_alive`, and overrides it when both are given.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use mcp_bounded_session::BoundedSessionManagerBuilder;
    /// let manager = BoundedSessionManagerBuilder::new(8)
    ///     .idle_timeout(Duration::from_secs(60))
    ///     .build();
    /// assert_eq!(manager.session_config().keep_alive, Some(Duration::from_secs(60)));
    /// ```
    pub fn idle_timeout(mut self, duration: Duration) -> Self {
        self.idle_timeout = Some(duration);
        self
    }

    /// Closes every session `duration` after its creation, whatever its
    /// activity. With parking in a `MemorySessionStore`, the lifetime
    /// counts from the creation across parks and restores: a parked
    /// session is not restored past it. (A session parked in the Redis
    /// stores, restored, counts it from its restore.)
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use mcp_bounded_session::BoundedSessionManagerBuilder;
    /// let manager = BoundedSessionManagerBuilder::new(8)
    ///     .max_lifetime(Duration::from_secs(3600))
    ///     .build();
    /// # drop(manager);
    /// ```
    pub fn max_lifetime(mut self, duration: Duration) -> Self {
        self.max_lifetime = Some(duration);
        self
    }

    /// The configuration each session runs with. An
    /// [`idle_timeout`](Self::idle_timeout) given as well overrides its
    /// `keep_alive`.
    ///
    /// ```
    /// # use mcp_bounded_session::{BoundedSessionManagerBuilder, SessionConfig};
    /// let mut config = SessionConfig::default();
    /// config.channel_capacity = 64;
    /// let manager = BoundedSessionManagerBuilder::new(8).session_config(config).build();
    /// assert_eq!(manager.session_config().channel_capacity, 64);
    /// ```
    ///
    /// # Panics
    ///
    /// Panics if `config.channel_capacity` is 0.
    pub fn session_config(mut self, config: SessionConfig) -> Self {
        validate::session_config(&config);
        self.session_config = Some(config);
        self
    }

    /// At most `max_creates` session creations in any rolling `window`.
    ///
    /// # Panics
    ///
    /// Panics if `max_creates` is 0 or `window` is zero.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use mcp_bounded_session::BoundedSessionManagerBuilder;
    /// let manager = BoundedSessionManagerBuilder::new(8)
    ///     .rate_limit(5, Duration::from_secs(1))
    ///     .build();
    /// assert_eq!(manager.rate_limit_retry_after(), Some(Duration::ZERO));
    /// ```
    pub fn rate_limit(mut self, max_creates: usize, window: Duration) -> Self {
        RateLimiter::validate(max_creates, window);
        self.rate_limit = Some((max_creates, window));
        self
    }

    /// How many events each SSE stream keeps for replay after a
    /// reconnection (`Last-Event-ID`; by default the session
    /// configuration's `channel_capacity`, rmcp's 16); older ones are
    /// overwritten, and a client that comes back later than that gets the
    /// kept ones, the jump in their ids showing what it lost.
    ///
    /// # Panics
    ///
    /// Panics if `capacity` is 0.
    ///
    /// ```
    /// # use mcp_bounded_session::BoundedSessionManagerBuilder;
    /// let manager = BoundedSessionManagerBuilder::new(8).replay_capacity(128).build();
    /// assert_eq!(manager.replay_capacity(), 128);
    /// ```
    pub fn replay_capacity(mut self, capacity: usize) -> Self {
        validate::replay_capacity(capacity);
        self.replay_capacity = Some(capacity);
        self
    }

    /// At most `limit` requests in flight per session (each has its own
    /// SSE stream; by default
    /// [`BoundedSessionManager::DEFAULT_MAX_REQUEST_STREAMS`]); one more is
    /// refused (`429` behind [`BoundedSessionLayer`](crate::BoundedSessionLayer)).
    /// As many completed request streams are kept for late resumes, for at
    /// most `SessionConfig::completed_cache_ttl`.
    ///
    /// # Panics
    ///
    /// Panics if `limit` is 0.
    ///
    /// ```
    /// # use mcp_bounded_session::BoundedSessionManagerBuilder;
    /// let manager = BoundedSessionManagerBuilder::new(8).max_request_streams(16).build();
    /// # drop(manager);
    /// ```
    pub fn max_request_streams(mut self, limit: usize) -> Self {
        validate::max_request_streams(limit);
        self.max_request_streams = Some(limit);
        self
    }
}
