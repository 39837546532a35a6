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
        let mut connection = inner.connection.clone();
        let mut get = redis::cmd("GET");
        get.arg(inner.keys.session(id));
        let json = inner
            .call(
                "load session",
                get.query_async::<Option<String>>(&mut connection),
            )
            .await
            .inspect_err(|_| {
                // 503 with Retry-After through the crate's layer, rather than
                // rmcp's 500: the session may well exist.
                http::record(Refusal::StoreUnavailable);
            })?;
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
        let mut connection = inner.connection.clone();
        let mut set = redis::cmd("SET");
        set.arg(inner.keys.session(id))
            .arg(&*json)
            .arg("PX")
            .arg(inner.ttl_ms());
        let written = inner
            .call("store session", set.query_async::<()>(&mut connection))
            .await
            .is_ok();
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
        let deleted = inner
            .call("delete session", inner.delete_everywhere(id, held))
            .await
            .is_ok();
        if !deleted {
            inner.queue_delete(id.into(), held);
        }
    }
}

#[async_trait::async_trait]
impl SessionStore for RedisSessionStore {
    /// # Cancel safety
    ///
    /// Cancel safe: it only reads.
    async fn load(&self, session_id: &str) -> Result<Option<SessionState>, SessionStoreError> {
        Ok(self.load_state(session_id).await?)
    }

    /// Writes the session's value with the TTL; if Redis cannot be reached,
    /// keeps it for the upkeep to write later and succeeds.
    ///
    /// # Cancel safety
    ///
    /// Dropped while Redis works, the value may or may not be written, and
    /// this instance does not keep it alive.
    async fn store(&self, session_id: &str, state: &SessionState) -> Result<(), SessionStoreError> {
        Ok(self.store_state(session_id, state).await?)
    }

    /// Removes every key of the session and tells every instance to end its
    /// copy; if Redis cannot be reached, the upkeep does so later.
    ///
    /// # Cancel safety
    ///
    /// Dropped while Redis works, the DELETE may or may not be done.
    async fn delete(&self, session_id: &str) -> Result<(), SessionStoreError> {
        self.delete_state(session_id).await;
        Ok(())
    }
}
