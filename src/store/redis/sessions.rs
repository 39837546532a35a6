//! [`RedisSessionStore`]: rmcp's `SessionStore` on Redis strings, with
//! DELETEs announced to every instance.
//!
//! # Invariants kept here
//!
//! - A DELETE removes every key of the session (its value, its streams and
//!   their index), leaves a tombstone and publishes the id, in one Lua
//!   script: atomic, so no instance can see the value gone without the
//!   tombstone there.
//! - A write or a DELETE that could not reach Redis is not lost: it waits
//!   in memory for the upkeep, which retries it until Redis answers. So
//!   rmcp's calls succeed while Redis is away (rmcp would log a warning per
//!   call; the store logs one line per outage instead).

use std::sync::{Arc, LazyLock};

use futures::future::BoxFuture;
use redis::Script;
use rmcp::transport::streamable_http_server::session::store::{
    SessionState, SessionStore, SessionStoreError,
};

use super::Inner;
use super::upkeep::Held;
use crate::http::{self, Refusal};
use crate::store::StoreError;

/// rmcp's `SessionStore` on Redis: from
/// [`RedisStores::session_store`](super::RedisStores::session_store).
///
/// # Example
///
/// ```no_run
/// # async fn demo(redis: mcp_bounded_session::RedisStores) {
/// let mut config =
///     rmcp::transport::streamable_http_server::StreamableHttpServerConfig::default();
/// config.session_store = Some(redis.session_store());
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct RedisSessionStore {
    pub(super) inner: Arc<Inner>,
}

/// Deletes session ARGV[1]: KEYS[1] its value, KEYS[2] its tombstone,
/// KEYS[3] its stream index. ARGV[2]: the tombstone's TTL (ms); ARGV[3]:
/// the channel to publish the id on.
static DELETE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local streams = redis.call('ZRANGE', KEYS[3], 0, -1)
for _, stream in ipairs(streams) do redis.call('DEL', stream) end
redis.call('DEL', KEYS[1], KEYS[3])
redis.call('SET', KEYS[2], '1', 'PX', ARGV[2])
redis.call('PUBLISH', ARGV[3], ARGV[1])
return #streams
",
    )
});

impl Inner {
    /// Runs the DELETE script for `id`.
    pub(super) async fn delete_everywhere(&self, id: &str) -> redis::RedisResult<()> {
        let mut connection = self.connection.clone();
        DELETE
            .key(self.keys.session(id))
            .key(self.keys.tombstone(id))
            .key(self.keys.session_streams(id))
            .arg(id)
            .arg(self.ttl_ms())
            .arg(self.keys.deletions_channel())
            .invoke_async::<i64>(&mut connection)
            .await
            .map(drop)
    }
}

impl RedisSessionStore {
    async fn load_state(&self, id: &str) -> Result<Option<SessionState>, StoreError> {
        let inner = &self.inner;
        let mut connection = inner.connection.clone();
        let result = redis::cmd("GET")
            .arg(inner.keys.session(id))
            .query_async::<Option<String>>(&mut connection)
            .await;
        let json = match result {
            Ok(json) => {
                inner.errors.succeeded();
                json
            }
            Err(error) => {
                inner.errors.failed("load session", &error);
                // 503 with Retry-After through the crate's layer, rather
                // than rmcp's 500: the session may well exist.
                http::record(Refusal::StoreUnavailable);
                return Err(StoreError::Redis(error));
            }
        };
        let Some(json) = json else { return Ok(None) };
        let state = serde_json::from_str(&json)?;
        // rmcp restores the session next; this instance keeps the value
        // alive from now on (the upkeep drops it if the restore failed).
        inner.held.insert(id.into(), Held::written(json.into()));
        Ok(Some(state))
    }

    async fn store_state(&self, id: &str, state: &SessionState) -> Result<(), StoreError> {
        let inner = &self.inner;
        let json: Arc<str> = serde_json::to_string(state)?.into();
        let mut connection = inner.connection.clone();
        let written = redis::cmd("SET")
            .arg(inner.keys.session(id))
            .arg(&*json)
            .arg("PX")
            .arg(inner.ttl_ms())
            .query_async::<()>(&mut connection)
            .await;
        let held = match inner.observe("store session", written) {
            Ok(()) => Held::written(json),
            // The upkeep writes it when Redis is back.
            Err(_) => Held::unwritten(json),
        };
        inner.held.insert(id.into(), held);
        Ok(())
    }

    async fn delete_state(&self, id: &str) {
        let inner = &self.inner;
        inner.held.remove(id);
        let deleted = inner.delete_everywhere(id).await;
        if inner.observe("delete session", deleted).is_err() {
            inner.queue_delete(id.into());
        }
    }
}

impl SessionStore for RedisSessionStore {
    /// # Cancel safety
    ///
    /// Cancel safe: it only reads.
    fn load<'a, 'b, 'c>(
        &'a self,
        session_id: &'b str,
    ) -> BoxFuture<'c, Result<Option<SessionState>, SessionStoreError>>
    where
        'a: 'c,
        'b: 'c,
        Self: 'c,
    {
        Box::pin(async move { Ok(self.load_state(session_id).await?) })
    }

    /// Writes the session's value with the TTL; if Redis cannot be reached,
    /// keeps it for the upkeep to write later and succeeds.
    ///
    /// # Cancel safety
    ///
    /// Dropped while Redis works, the value may or may not be written, and
    /// this instance does not keep it alive.
    fn store<'a, 'b, 'c, 'd>(
        &'a self,
        session_id: &'b str,
        state: &'c SessionState,
    ) -> BoxFuture<'d, Result<(), SessionStoreError>>
    where
        'a: 'd,
        'b: 'd,
        'c: 'd,
        Self: 'd,
    {
        Box::pin(async move { Ok(self.store_state(session_id, state).await?) })
    }

    /// Removes every key of the session and tells every instance to end its
    /// copy; if Redis cannot be reached, the upkeep does so later.
    ///
    /// # Cancel safety
    ///
    /// Dropped while Redis works, the DELETE may or may not be done.
    fn delete<'a, 'b, 'c>(
        &'a self,
        session_id: &'b str,
    ) -> BoxFuture<'c, Result<(), SessionStoreError>>
    where
        'a: 'c,
        'b: 'c,
        Self: 'c,
    {
        Box::pin(async move {
            self.delete_state(session_id).await;
            Ok(())
        })
    }
}
