//! [`RedisSessionStore`]: rmcp's `SessionStore` on Redis strings, with
//! DELETEs announced to every instance.
//!
//! # Invariants kept here
//!
//! - A DELETE is never undone. It removes every key of the session (its
//!   value, its streams and their index), leaves a tombstone and publishes
//!   the id, in one Lua script: atomic, so no instance can see the value
//!   gone without the tombstone there. The tombstone is written whether or
//!   not Redis still has the session's value: Redis may have lost it (an
//!   eviction, an empty restart, a session made during an outage and not
//!   written yet) while an instance still holds a copy, whose upkeep would
//!   otherwise write it back. A tombstone of a session nobody here knew
//!   lives one TTL (long enough for every holder's upkeep, which runs at
//!   least twice per TTL, to find it), one of a session that existed four.
//! - A DELETE on this instance between rmcp's `load` of the session and
//!   its `restore_session` wins: the id stays marked as DELETEd here, the
//!   restore is refused, and a copy restored anyway (a DELETE landing in
//!   the middle of the restore) is ended by the next upkeep round.
//! - Only ids shaped like this crate's (`store::is_session_id`) reach
//!   Redis or this instance's memory: rmcp hands the store any id a client
//!   sends.
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
use crate::http;
use crate::refusal::Refusal;
use crate::store::{StoreError, is_session_id};

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
/// KEYS[3] its stream index. ARGV[2]: the tombstone's TTL (ms) for a
/// session that existed; ARGV[3]: the channel to publish the id on;
/// ARGV[4]: "1" if the deleting instance held the session; ARGV[5]: the
/// tombstone's TTL (ms) otherwise. A session whose value is gone may still
/// live on another instance (Redis lost the value), so every DELETE leaves
/// a tombstone; one of an id nobody here knew lives shorter, since
/// clients can send any (well-shaped) id. A tombstone is never shortened.
/// It is written first: a Redis out of memory refuses the `SET` before
/// anything was removed, so the script does all or nothing.
static DELETE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local ttl = ARGV[5]
if redis.call('EXISTS', KEYS[1]) == 1 or ARGV[4] == '1' then ttl = ARGV[2] end
if redis.call('PTTL', KEYS[2]) < tonumber(ttl) then
  redis.call('SET', KEYS[2], '1', 'PX', ttl)
end
local streams = redis.call('ZRANGE', KEYS[3], 0, -1)
for _, stream in ipairs(streams) do redis.call('DEL', stream) end
redis.call('DEL', KEYS[1], KEYS[3])
redis.call('PUBLISH', ARGV[3], ARGV[1])
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
            .arg(self.ttl_ms())
            .invoke_async::<i64>(&mut connection)
            .await
            .map(drop)
    }
}

impl RedisSessionStore {
    async fn load_state(&self, id: &str) -> Result<Option<SessionState>, StoreError> {
        // Not an id this crate issued: no session has it.
        if !is_session_id(id) {
            return Ok(None);
        }
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
        if !is_session_id(id) {
            return Err(StoreError::InvalidSessionId { length: id.len() });
        }
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
        // Not an id this crate issued: nothing to delete, and nothing of it
        // is kept (the pending DELETEs, Redis).
        if !is_session_id(id) {
            return;
        }
        let inner = &self.inner;
        // Marked, not forgotten: a restore of the id that rmcp loaded just
        // before is refused, and a copy restored anyway is ended by the
        // upkeep (which never writes a marked session back).
        let held = inner.mark_deleted(id);
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
    /// The session's `initialize` parameters, if Redis has them; `None`
    /// at once, without asking Redis, for an id no session of this crate
    /// can have.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it only reads.
    async fn load(&self, session_id: &str) -> Result<Option<SessionState>, SessionStoreError> {
        Ok(self.load_state(session_id).await?)
    }

    /// Writes the session's value with the TTL; if Redis cannot be reached,
    /// keeps it for the upkeep to write later and succeeds. Refuses
    /// ([`StoreError::InvalidSessionId`]) an id not shaped like rmcp's.
    ///
    /// # Cancel safety
    ///
    /// Dropped while Redis works, the value may or may not be written, and
    /// this instance does not keep it alive.
    async fn store(&self, session_id: &str, state: &SessionState) -> Result<(), SessionStoreError> {
        Ok(self.store_state(session_id, state).await?)
    }

    /// Removes every key of the session, leaves its tombstone and tells
    /// every instance to end its copy; if Redis cannot be reached, the
    /// upkeep does so later. An id not shaped like rmcp's names no session:
    /// nothing is done or kept for it.
    ///
    /// # Cancel safety
    ///
    /// Dropped while Redis works, the DELETE may or may not be done.
    async fn delete(&self, session_id: &str) -> Result<(), SessionStoreError> {
        self.delete_state(session_id).await;
        Ok(())
    }
}
