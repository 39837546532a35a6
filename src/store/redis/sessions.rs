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
/// the channel to publish the id on; ARGV[4]: "1" if the deleting instance
/// held the session. The tombstone and the announcement are only for a
/// session that existed: rmcp passes on the DELETE of any id a client
/// sends, and tombstones of made-up ids would fill Redis.
static DELETE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local streams = redis.call('ZRANGE', KEYS[3], 0, -1)
for _, stream in ipairs(streams) do redis.call('DEL', stream) end
local existed = redis.call('DEL', KEYS[1])
redis.call('DEL', KEYS[3])
if existed == 1 or ARGV[4] == '1' then
  redis.call('SET', KEYS[2], '1', 'PX', ARGV[2])
  redis.call('PUBLISH', ARGV[3], ARGV[1])
end
return #streams
",
    )
});

impl Inner {
    /// Runs the DELETE script for `id`; `held`: whether this instance held
    /// the session.
    pub(super) async fn delete_everywhere(&self, id: &str, held: bool) -> redis::RedisResult<()> {
        let mut connection = self.connection.clone();
        DELETE
            .key(self.keys.session(id))
            .key(self.keys.tombstone(id))
            .key(self.keys.session_streams(id))
            .arg(id)
            .arg(self.tombstone_ttl_ms())
            .arg(self.keys.deletions_channel())
            .arg(if held { "1" } else { "0" })
            .invoke_async::<i64>(&mut connection)
            .await
            .map(drop)
    }
}

impl RedisSessionStore {
    async fn load_state(&self, id: &str) -> Result<Option<SessionState>, StoreError> {
        let inner = &self.inner;
        let loaded = match inner.check_available() {
            Ok(()) => {
                let mut connection = inner.connection.clone();
                let result = redis::cmd("GET")
                    .arg(inner.keys.session(id))
                    .query_async::<Option<String>>(&mut connection)
                    .await;
                inner.observe("load session", result)
            }
            Err(unavailable) => Err(unavailable),
        };
        let json = match loaded {
            Ok(json) => json,
            Err(error) => {
                // 503 with Retry-After through the crate's layer, rather
                // than rmcp's 500: the session may well exist.
                http::record(Refusal::StoreUnavailable);
                return Err(error);
            }
        };
        let Some(json) = json else { return Ok(None) };
        let state = serde_json::from_str(&json)?;
        // rmcp restores the session next; this instance keeps the value
        // alive from now on (the upkeep drops it if the restore failed).
        if inner.attached() {
            inner.held.insert(id.into(), Held::new(json.into(), true));
        }
        Ok(Some(state))
    }

    async fn store_state(&self, id: &str, state: &SessionState) -> Result<(), StoreError> {
        let inner = &self.inner;
        let json: Arc<str> = serde_json::to_string(state)?.into();
        let written = match inner.check_available() {
            Ok(()) => {
                let mut connection = inner.connection.clone();
                let written = redis::cmd("SET")
                    .arg(inner.keys.session(id))
                    .arg(&*json)
                    .arg("PX")
                    .arg(inner.ttl_ms())
                    .query_async::<()>(&mut connection)
                    .await;
                inner.observe("store session", written).is_ok()
            }
            Err(_) => false,
        };
        // Without a manager, nothing would ever forget the entry.
        if inner.attached() {
            // If unwritten, the upkeep writes it when Redis is back.
            inner.held.insert(id.into(), Held::new(json, written));
        }
        Ok(())
    }

    async fn delete_state(&self, id: &str) {
        let inner = &self.inner;
        let held = inner.held.remove(id).is_some();
        let deleted = match inner.check_available() {
            Ok(()) => inner
                .observe("delete session", inner.delete_everywhere(id, held).await)
                .is_ok(),
            Err(_) => false,
        };
        if !deleted {
            inner.queue_delete(id.into(), held);
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
