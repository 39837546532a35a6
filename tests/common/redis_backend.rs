//! The Redis a test runs on, single or clustered, behind one type: the
//! store tests run their bodies on both ([`redis_test!`]), and look at
//! what the stores wrote through [`Backend`]'s helpers, which read every
//! node of a cluster. And the stores' key names (`src/store/redis/keys.rs`
//! has the table), spelled out once for the tests.

use std::sync::Arc;

use crate::common::redis_cluster::RedisCluster;
use crate::common::redis_server::{self, SHARED_URL};
use mcp_bounded_session::{RedisStores, RedisStoresBuilder};
use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, RedisFuture, Value};

/// Defines a test twice, as a module of the test's name holding `single`
/// (on the shared Redis) and `cluster` (on a three-primary Redis
/// Cluster): the body takes the backend, `&Backend`. The attributes (the
/// docs, the test's) go to both.
#[macro_export]
macro_rules! redis_test {
    (
        $(#[$attr:meta])*
        async fn $name:ident($backend:ident) $body:block
    ) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            use $crate::common::redis_backend::Backend;

            async fn body($backend: &Backend) $body

            $(#[$attr])*
            async fn single() {
                body(&Backend::single()).await
            }

            $(#[$attr])*
            async fn cluster() {
                body(&Backend::cluster()).await
            }
        }
    };
}

/// Where a test's stores live.
#[derive(Clone)]
pub enum Backend {
    /// The Redis at this URL (the shared one on 127.0.0.1:6379, or a
    /// test's private one), under the test's prefix.
    Single(String),
    /// A Redis Cluster (the shared one of the running tests).
    Cluster(Arc<RedisCluster>),
}

impl Backend {
    /// The shared Redis.
    pub fn single() -> Self {
        Self::Single(SHARED_URL.to_owned())
    }

    /// The Redis at `url`.
    pub fn at(url: &str) -> Self {
        Self::Single(url.to_owned())
    }

    pub fn cluster() -> Self {
        Self::Cluster(RedisCluster::shared())
    }

    pub fn is_cluster(&self) -> bool {
        matches!(self, Self::Cluster(_))
    }

    /// The stores' builder for this Redis.
    pub fn builder(&self) -> RedisStoresBuilder {
        match self {
            Self::Single(url) => RedisStores::builder(url.as_str()),
            Self::Cluster(cluster) => RedisStores::cluster_builder(cluster.urls()),
        }
    }

    /// The example server's flags naming this Redis.
    pub fn server_flags(&self) -> Vec<String> {
        match self {
            Self::Single(url) => vec!["--redis".to_owned(), url.clone()],
            Self::Cluster(cluster) => {
                vec!["--redis-cluster".to_owned(), cluster.urls().join(",")]
            }
        }
    }

    /// The URL of every node to read keys from.
    fn node_urls(&self) -> Vec<String> {
        match self {
            Self::Single(url) => vec![url.clone()],
            Self::Cluster(cluster) => cluster.primary_urls(),
        }
    }

    /// The URL of the Redis, or of the cluster's first node.
    pub fn url(&self) -> String {
        self.node_urls().remove(0)
    }

    /// A connection that sends each command to the node of its key.
    pub async fn connection(&self) -> TestConnection {
        match self {
            Self::Single(url) => TestConnection::Node(redis_server::connection(url).await),
            Self::Cluster(cluster) => TestConnection::Cluster(
                redis::cluster::ClusterClient::new(cluster.urls())
                    .unwrap()
                    .get_async_connection()
                    .await
                    .expect("the test's Redis Cluster answers"),
            ),
        }
    }

    /// Every key under `prefix`, on every node, sorted.
    pub async fn keys(&self, prefix: &str) -> Vec<String> {
        let mut keys = Vec::new();
        for url in self.node_urls() {
            keys.extend(redis_server::keys(&url, prefix).await);
        }
        keys.sort();
        keys
    }

    /// The keys under `prefix` but the instances' liveness keys: those of
    /// sessions and streams.
    #[allow(dead_code)] // not every test target looks
    pub async fn stored_keys(&self, prefix: &str) -> Vec<String> {
        let mut keys = self.keys(prefix).await;
        keys.retain(|key| !key::is_liveness(key));
        keys
    }

    /// Removes every key under `prefix` (at the end of a test): one `DEL`
    /// a key, on the node that has it (a cluster refuses one `DEL` across
    /// slots).
    pub async fn clean(&self, prefix: &str) {
        for url in self.node_urls() {
            let keys = redis_server::keys(&url, prefix).await;
            if keys.is_empty() {
                continue;
            }
            let mut pipe = redis::pipe();
            for key in keys {
                pipe.cmd("DEL").arg(key).ignore();
            }
            let _: () = pipe
                .query_async(&mut redis_server::connection(&url).await)
                .await
                .unwrap();
        }
    }

    /// [`clean`](Self::clean) without a runtime, best effort: errors are
    /// ignored.
    pub fn clean_blocking(&self, prefix: &str) {
        for url in self.node_urls() {
            let Ok(mut connection) =
                redis::Client::open(url.as_str()).and_then(|client| client.get_connection())
            else {
                continue;
            };
            let found: Vec<String> = redis::cmd("KEYS")
                .arg(format!("{prefix}*"))
                .query(&mut connection)
                .unwrap_or_default();
            for key in found {
                let _: redis::RedisResult<()> = redis::cmd("DEL").arg(key).query(&mut connection);
            }
        }
    }

    pub async fn query<T: redis::FromRedisValue>(&self, cmd: &Cmd) -> T {
        cmd.query_async(&mut self.connection().await)
            .await
            .unwrap_or_else(|error| panic!("{cmd:?}: {error}"))
    }

    pub async fn exists(&self, key: &str) -> bool {
        self.query::<i64>(redis::cmd("EXISTS").arg(key)).await == 1
    }

    pub async fn pttl(&self, key: &str) -> i64 {
        self.query(redis::cmd("PTTL").arg(key)).await
    }

    pub async fn del(&self, key: &str) {
        self.query::<i64>(redis::cmd("DEL").arg(key)).await;
    }
}

/// A plain connection, to one Redis or to a cluster.
#[derive(Clone)]
pub enum TestConnection {
    Node(MultiplexedConnection),
    Cluster(ClusterConnection),
}

impl ConnectionLike for TestConnection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Node(connection) => connection.req_packed_command(cmd),
            Self::Cluster(connection) => connection.req_packed_command(cmd),
        }
    }

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
        0
    }
}

/// The stores' key names.
pub mod key {
    /// A session's value.
    pub fn session(prefix: &str, id: &str) -> String {
        format!("{prefix}{{{id}}}:session")
    }

    /// A DELETE's tombstone.
    pub fn tombstone(prefix: &str, id: &str) -> String {
        format!("{prefix}{{{id}}}:deleted")
    }

    /// The index of a session's streams.
    pub fn index(prefix: &str, id: &str) -> String {
        format!("{prefix}{{{id}}}:streams")
    }

    /// The list of `stream` (a session's `<id>:<suffix>` or a stateless
    /// one without a colon; names without `{`, `}` or `%`).
    pub fn stream(prefix: &str, stream: &str) -> String {
        match stream.split_once(':') {
            Some((id, suffix)) => format!("{prefix}{{{id}}}:stream:{suffix}"),
            None => format!("{prefix}{{{stream}}}:stream"),
        }
    }

    /// The prefix of every stream key of session `id`.
    pub fn streams_of(prefix: &str, id: &str) -> String {
        format!("{prefix}{{{id}}}:stream:")
    }

    /// Whether `key` is an instance's liveness key.
    pub fn is_liveness(key: &str) -> bool {
        key.ends_with(":live")
    }

    /// The hash tag of a key: what Redis Cluster hashes.
    pub fn tag(key: &str) -> Option<&str> {
        let open = key.find('{')?;
        let close = key[open..].find('}')?;
        Some(&key[open + 1..open + close])
    }
}
