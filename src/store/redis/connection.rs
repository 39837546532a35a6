//! The one connection the stores talk through: a single Redis (redis-rs's
//! `ConnectionManager`) or a Redis Cluster (its async cluster connection),
//! behind redis-rs's own `ConnectionLike`, so every command and script of
//! the stores is written once.
//!
//! # Invariants kept here
//!
//! - A command is sent again only when Redis refused it before running
//!   it: a redirect (`MOVED`, `ASK`: the slot moved or is moving) or
//!   `TRYAGAIN` (the keys of a multi-key command or script are split
//!   between the two nodes of a migrating slot). Every script declares the
//!   keys it touches (`keys`), so the cluster checks them all before the
//!   script runs and none of these can come halfway through one. A call
//!   whose outcome is unknown (a timeout, a dropped connection) is never
//!   sent again: the append script is not idempotent (`unsettled` deals
//!   with those). So redis-rs's own retries are off, in both modes.
//! - `MOVED` goes at once to the node it names (redis-rs refreshes its
//!   slot map meanwhile); `ASK` goes to the node it names after `ASKING`,
//!   on one connection, as a pipeline; `TRYAGAIN` waits (5 ms, doubling,
//!   at most 100 ms). All within [`REDIRECT_BUDGET`] and
//!   [`MAX_REDIRECTS`]; then the last error is the call's.
//! - Either way a call waits at most about twice the response timeout for
//!   an unreachable node, as the single-node connection does.

use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::{ClusterClientBuilder, ClusterConfig};
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
use redis::{Cmd, ErrorKind, RedisError, RedisFuture, RedisResult, ServerErrorKind, Value};
use tokio::time::Instant;

use super::RESPONSE_TIMEOUT;
use crate::store::StoreError;

/// The longest a call spends on redirects and `TRYAGAIN` waits.
pub(super) const REDIRECT_BUDGET: Duration = Duration::from_secs(1);
/// The most times a call is sent again.
const MAX_REDIRECTS: u32 = 16;
/// The first wait after a `TRYAGAIN`, doubled each time up to
/// [`MAX_TRYAGAIN_WAIT`].
const FIRST_TRYAGAIN_WAIT: Duration = Duration::from_millis(5);
const MAX_TRYAGAIN_WAIT: Duration = Duration::from_millis(100);

/// Where the stores' Redis is: one server, or the nodes of a cluster
/// (any of them: the others are found from them).
#[derive(Debug, Clone)]
pub(super) enum Nodes {
    One(String),
    Cluster(Vec<String>),
}

/// The stores' connection: cheap to clone, every clone multiplexed on the
/// same sockets.
#[derive(Clone)]
pub(crate) enum Connection {
    Node(ConnectionManager),
    Cluster(ClusterConnection),
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Node(_) => "Connection::Node",
            Self::Cluster(_) => "Connection::Cluster",
        })
    }
}

/// What the stores talk to: the connection, and the servers the pub/sub
/// listener may subscribe on (the one server, or every node given, tried
/// in turn).
pub(super) struct Opened {
    pub(super) connection: Connection,
    pub(super) subscribers: Vec<redis::Client>,
    pub(super) cluster: bool,
}

impl Nodes {
    /// Opens the connection without waiting for Redis: it connects on
    /// first use, and again after each failure.
    pub(super) fn open(&self) -> Result<Opened, StoreError> {
        match self {
            Self::One(url) => {
                let client = redis::Client::open(url.as_str())?;
                let config = ConnectionManagerConfig::new()
                    .set_response_timeout(Some(RESPONSE_TIMEOUT))
                    .set_connection_timeout(Some(RESPONSE_TIMEOUT))
                    // A call fails fast while Redis is away; the manager
                    // reconnects on the next one.
                    .set_number_of_retries(0);
                let connection = ConnectionManager::new_lazy_with_config(client.clone(), config)?;
                Ok(Opened {
                    connection: Connection::Node(connection),
                    subscribers: vec![client],
                    cluster: false,
                })
            }
            Self::Cluster(urls) => {
                if urls.is_empty() {
                    return Err(StoreError::InvalidConfig(
                        "a Redis Cluster needs at least one node URL".to_owned(),
                    ));
                }
                let subscribers = urls
                    .iter()
                    .map(|url| redis::Client::open(url.as_str()))
                    .collect::<Result<Vec<_>, _>>()?;
                let client = ClusterClientBuilder::new(urls.iter().map(String::as_str))
                    // Sent again only when surely not run (module docs).
                    .retries(0)
                    .overall_response_timeout(Some(RESPONSE_TIMEOUT * 2))
                    .build()?;
                let config = ClusterConfig::new()
                    .set_connection_timeout(RESPONSE_TIMEOUT)
                    .set_response_timeout(RESPONSE_TIMEOUT);
                let connection = client.get_pending_async_connection_with_config(config);
                Ok(Opened {
                    connection: Connection::Cluster(connection),
                    subscribers,
                    cluster: true,
                })
            }
        }
    }
}

/// Where a refused call goes next.
enum Redirect {
    Moved(String, u16),
    Ask(String, u16),
}

impl Redirect {
    /// The redirect `error` names, if it is one.
    fn of(error: &RedisError) -> Option<Self> {
        let (address, _slot) = error.redirect_node()?;
        let (host, port) = address.rsplit_once(':')?;
        let port = port.parse().ok()?;
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        match error.kind() {
            ErrorKind::Server(ServerErrorKind::Moved) => Some(Self::Moved(host, port)),
            ErrorKind::Server(ServerErrorKind::Ask) => Some(Self::Ask(host, port)),
            _ => None,
        }
    }
}

impl Connection {
    /// Sends `cmd` once, to `redirect`'s node if given.
    async fn send_once(&mut self, cmd: &Cmd, redirect: Option<Redirect>) -> RedisResult<Value> {
        let value = match (self, redirect) {
            (Self::Node(connection), _) => connection.req_packed_command(cmd).await?,
            (Self::Cluster(connection), None) => connection.req_packed_command(cmd).await?,
            (Self::Cluster(connection), Some(Redirect::Moved(host, port))) => {
                let node = SingleNodeRoutingInfo::ByAddress { host, port };
                connection
                    .route_command(cmd.clone(), RoutingInfo::SingleNode(node))
                    .await?
            }
            (Self::Cluster(connection), Some(Redirect::Ask(host, port))) => {
                let mut asking = redis::pipe();
                asking.cmd("ASKING").add_command(cmd.clone());
                let node = SingleNodeRoutingInfo::ByAddress { host, port };
                let mut values = connection.route_pipeline(asking, 1, 1, node).await?;
                values.pop().unwrap_or(Value::Nil)
            }
        };
        value.extract_error()
    }

    /// Sends `cmd`, again after a redirect or `TRYAGAIN` (module docs).
    async fn send(&mut self, cmd: &Cmd) -> RedisResult<Value> {
        let started = Instant::now();
        let mut wait = FIRST_TRYAGAIN_WAIT;
        let mut redirect = None;
        let mut attempts = 0;
        loop {
            let error = match self.send_once(cmd, redirect.take()).await {
                Ok(value) => return Ok(value),
                Err(error) => error,
            };
            attempts += 1;
            if attempts > MAX_REDIRECTS || started.elapsed() >= REDIRECT_BUDGET {
                return Err(error);
            }
            match error.kind() {
                ErrorKind::Server(ServerErrorKind::Moved | ServerErrorKind::Ask) => {
                    match Redirect::of(&error) {
                        Some(next) => redirect = Some(next),
                        None => return Err(error),
                    }
                }
                ErrorKind::Server(ServerErrorKind::TryAgain) => {
                    if started.elapsed() + wait > REDIRECT_BUDGET {
                        return Err(error);
                    }
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(MAX_TRYAGAIN_WAIT);
                }
                _ => return Err(error),
            }
        }
    }
}

impl ConnectionLike for Connection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        Box::pin(self.send(cmd))
    }

    /// Pipelines go as they are: a cluster refuses one across slots, and
    /// the stores send none.
    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Node(connection) => connection.req_packed_commands(pipeline, offset, count),
            Self::Cluster(connection) => connection.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Node(connection) => connection.get_db(),
            Self::Cluster(_) => 0,
        }
    }
}
