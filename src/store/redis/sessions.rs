//! [`RedisSessionStore`]: rmcp's `SessionStore` on Redis strings, with
//! DELETEs announced to every instance.
//!
//! # Invariants kept here
//!
//! - A DELETE is never undone. It removes every key of the session (its
//!   value, its streams and their index), leaves a tombstone and publishes
//!   the id, in one Lua script: atomic, so no instance can see the value
//!   gone without the tombstone there. The script declares every key it
//!   removes (a cluster requires it): it learns the streams from the
//!   index, and runs again with them if the caller did not name them all
//!   ([`DELETE`]). The tombstone is written whether or
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
/// KEYS[3] its stream index, KEYS[4] its unfinished requests
/// (`events::lost`), KEYS[5..] its streams as the caller knows them. ARGV[2]: the tombstone's TTL (ms) for a session that existed;
/// ARGV[3]: the channel to publish the id on; ARGV[4]: "1" if the deleting
/// instance held the session; ARGV[5]: the tombstone's TTL (ms) otherwise;
/// ARGV[6]: "1" to delete what is declared even if the index holds more.
///
/// A script may touch only the keys it declares (a cluster checks them
/// before it runs), and only the index knows the session's streams: if it
/// holds a stream not declared, the script changes nothing and returns
/// `{'declare', streams...}`, the index, for the caller to come again
/// with; else it deletes and returns `{'done'}`.
///
/// A session whose value is gone may still live on another instance
/// (Redis lost the value), so every DELETE leaves a tombstone; one of an
/// id nobody here knew lives shorter, since clients can send any
/// (well-shaped) id. A tombstone is never shortened. It is written first:
/// a Redis out of memory refuses the `SET` before anything was removed, so
/// the script does all or nothing.
static DELETE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local indexed = redis.call('ZRANGE', KEYS[3], 0, -1)
if ARGV[6] ~= '1' then
  local declared = {}
  for i = 5, #KEYS do declared[KEYS[i]] = true end
  for _, stream in ipairs(indexed) do
    if not declared[stream] then
      table.insert(indexed, 1, 'declare')
      return indexed
    end
  end
end
local ttl = ARGV[5]
if redis.call('EXISTS', KEYS[1]) == 1 or ARGV[4] == '1' then ttl = ARGV[2] end
if redis.call('PTTL', KEYS[2]) < tonumber(ttl) then
  redis.call('SET', KEYS[2], '1', 'PX', ttl)
end
for i = 5, #KEYS do redis.call('DEL', KEYS[i]) end
redis.call('DEL', KEYS[1], KEYS[3], KEYS[4])
redis.call('PUBLISH', ARGV[3], ARGV[1])
return {'done'}
",
    )
});

/// Times the DELETE script is run with the streams its last run named;
/// the last run deletes what it declares even if a stream was added
/// meanwhile (that one then lives out its TTL). Streams are added by
/// appends, so a second run almost always finds the index as the first
/// returned it.
const DELETE_RUNS: usize = 4;

impl Inner {
    /// Runs the DELETE script for `id` (see [`DELETE`]); `held`: whether
    /// this instance held the session.
    pub(super) async fn delete_everywhere(&self, id: &str, held: bool) -> redis::RedisResult<()> {
        let mut connection = self.connection.clone();
        // The streams this instance's upkeep last saw, if it held the
        // session: then one run is enough.
        let mut streams = self.held_streams(id);
        for run in 1..=DELETE_RUNS {
            let mut invocation = DELETE.key(self.keys.session(id));
            invocation
                .key(self.keys.tombstone(id))
                .key(self.keys.session_streams(id))
                .key(self.keys.session_requests(id));
            for stream in &*streams {
                invocation.key(stream);
            }
            invocation
                .arg(id)
                .arg(self.tombstone_ttl_ms())
                .arg(self.keys.deletions_channel())
                .arg(if held { "1" } else { "0" })
                .arg(self.ttl_ms())
                .arg(if run == DELETE_RUNS { "1" } else { "0" });
            let reply: Vec<String> = invocation.invoke_async(&mut connection).await?;
            match reply.split_first() {
                Some((status, indexed)) if status == "declare" => streams = indexed.into(),
                _ => return Ok(()),
            }
        }
        Ok(())
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
                inner.session_slot(id),
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
            .call(
                "store session",
                inner.session_slot(id),
                set.query_async::<()>(&mut connection),
            )
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
            .call(
                "delete session",
                inner.session_slot(id),
                inner.delete_everywhere(id, held),
            )
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
