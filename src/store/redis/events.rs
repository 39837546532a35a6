//! [`RedisEventStore`]: rmcp's `EventStore` on Redis streams.
//!
//! # Invariants kept here
//!
//! - Ids are `<stream>#<generation>-<sequence>` (see `store::stored_id`):
//!   the stream's Redis stream entry id prefixed by its name. A stream's
//!   generation is the Redis server time (µs) of its first event, and its
//!   entries are numbered 1, 2, 3, ... within it by `XADD <generation>-*`:
//!   a stream that expired and started again has a new generation, so an
//!   old id cannot point into it, and a replay can tell a trimmed event
//!   from a foreign one.
//! - Appending, trimming to the capacity (`MAXLEN`, exact), refreshing the
//!   TTL and indexing a new stream under its session happen in one Lua
//!   script: atomic, one round trip, and no stream ever holds more than its
//!   capacity.
//! - A replay reads from the requested entry on (inclusive): if that entry
//!   or the one right after it is there, everything after it is too, in
//!   order, once; if not, the replay is an error rather than a stream with
//!   a hole.

use std::sync::{Arc, LazyLock};
use std::time::Duration;

use futures::future::BoxFuture;
use redis::Script;
use redis::streams::StreamRangeReply;
use rmcp::model::ServerJsonRpcMessage;
use rmcp::transport::streamable_http_server::session::store::{EventStoreError, EventStream};
use rmcp::transport::streamable_http_server::session::{EventStore, ServerSseMessage};

use super::Inner;
use crate::store::{StoreError, StoredEventId, check_stream_name};

/// rmcp's `EventStore` on Redis: from [`RedisStores::event_store`](super::RedisStores::event_store).
///
/// # Example
///
/// ```no_run
/// # async fn demo(redis: mcp_bounded_session::RedisStores) {
/// let store = redis.event_store();
/// // Returned by the manager's `event_store()` once given to its builder.
/// # drop(store);
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct RedisEventStore {
    pub(super) inner: Arc<Inner>,
}

/// Appends one event. KEYS[1]: the stream; KEYS[2], if any: its session's
/// stream index. ARGV: capacity, TTL (ms), message JSON or "", retry (ms)
/// or "". Returns the entry id.
///
/// A new stream's generation is the server's time in microseconds: two
/// scripts never run in the same microsecond, so a stream dropped and
/// started again gets a generation of its own. The index scores each stream
/// by its last use, so pruning entries older than the TTL drops only
/// streams whose keys expired.
static APPEND: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local now = redis.call('TIME')
local last = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
local entry
if #last == 0 then
  entry = now[1] .. string.format('%06d', tonumber(now[2])) .. '-1'
else
  entry = string.match(last[1][1], '^(%d+)-') .. '-*'
end
if #KEYS == 2 then
  local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
  redis.call('ZADD', KEYS[2], now_ms, KEYS[1])
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now_ms - tonumber(ARGV[2]))
  redis.call('PEXPIRE', KEYS[2], ARGV[2])
end
local fields = {}
if ARGV[3] ~= '' then table.insert(fields, 'm'); table.insert(fields, ARGV[3]) end
if ARGV[4] ~= '' then table.insert(fields, 'r'); table.insert(fields, ARGV[4]) end
if #fields == 0 then fields = {'e', ''} end
local id = redis.call('XADD', KEYS[1], 'MAXLEN', ARGV[1], entry, unpack(fields))
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return id
",
    )
});

/// Reads a stream from an entry on (inclusive) and refreshes its TTL and
/// its place in its session's index. KEYS[1]: the stream; KEYS[2], if any:
/// the index. ARGV: the first entry id, the TTL (ms).
static REPLAY: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local entries = redis.call('XRANGE', KEYS[1], ARGV[1], '+')
if #entries > 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  if #KEYS == 2 then
    local now = redis.call('TIME')
    local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
    redis.call('ZADD', KEYS[2], 'XX', now_ms, KEYS[1])
    redis.call('PEXPIRE', KEYS[2], ARGV[2])
  end
end
return entries
",
    )
});

impl RedisEventStore {
    async fn append(&self, stream: &str, event: &ServerSseMessage) -> Result<String, StoreError> {
        check_stream_name(stream)?;
        let inner = &self.inner;
        let message = match &event.message {
            Some(message) => serde_json::to_string(&**message)?,
            None => String::new(),
        };
        let retry = event
            .retry
            .map(|retry| retry.as_millis().to_string())
            .unwrap_or_default();
        let mut invocation = APPEND.key(inner.keys.stream(stream));
        if let Some(index) = inner.keys.streams_of(stream) {
            invocation.key(index);
        }
        invocation
            .arg(inner.stream_capacity())
            .arg(inner.ttl_ms())
            .arg(message)
            .arg(retry);
        let mut connection = inner.connection.clone();
        let entry: String = inner.observe(
            "store_event",
            invocation.invoke_async(&mut connection).await,
        )?;
        Ok(format!("{stream}#{entry}"))
    }

    async fn replay(&self, last_event_id: &str) -> Result<Vec<ServerSseMessage>, StoreError> {
        let id = StoredEventId::parse(last_event_id)?;
        let inner = &self.inner;
        let key = inner.keys.stream(id.stream);
        let from = format!("{}-{}", id.generation, id.sequence);
        let mut invocation = REPLAY.key(&key);
        if let Some(index) = inner.keys.streams_of(id.stream) {
            invocation.key(index);
        }
        invocation.arg(&from).arg(inner.ttl_ms());
        let mut connection = inner.connection.clone();
        let range: StreamRangeReply = inner.observe(
            "replay_events_after",
            invocation.invoke_async(&mut connection).await,
        )?;
        let mut entries = range.ids.into_iter().peekable();
        let first = entries.peek().map(|entry| parse_entry_id(&entry.id));
        match first {
            // The id's own event is kept: everything after it is.
            Some(Some(first)) if first == (id.generation, id.sequence) => {
                entries.next();
            }
            // The id's event was trimmed, but none after it.
            Some(Some(first)) if first == (id.generation, id.sequence.saturating_add(1)) => {}
            Some(Some((generation, oldest_kept)))
                if generation == id.generation && oldest_kept > id.sequence =>
            {
                return Err(StoreError::EventTrimmed {
                    id: last_event_id.to_owned(),
                    oldest_kept,
                });
            }
            _ => return Err(StoreError::UnknownEvent(last_event_id.to_owned())),
        }
        entries
            .map(|entry| {
                let mut event = ServerSseMessage::default();
                if let Some(json) = entry.get::<Vec<u8>>("m") {
                    let message: ServerJsonRpcMessage = serde_json::from_slice(&json)?;
                    event.message = Some(Arc::new(message));
                }
                event.retry = entry.get::<u64>("r").map(Duration::from_millis);
                event.event_id = Some(format!("{}#{}", id.stream, entry.id));
                Ok(event)
            })
            .collect()
    }
}

/// `<generation>-<sequence>` of a Redis stream entry id.
fn parse_entry_id(entry: &str) -> Option<(u64, u64)> {
    let (generation, sequence) = entry.split_once('-')?;
    Some((generation.parse().ok()?, sequence.parse().ok()?))
}

impl EventStore for RedisEventStore {
    /// # Cancel safety
    ///
    /// Dropped while Redis works, the event may or may not be stored; its
    /// id is then never sent, so the store may hold an event no client
    /// will ask for (trimmed and expired like any other).
    fn store_event<'a, 'b, 'c, 'd>(
        &'a self,
        stream_id: &'b str,
        event: &'c ServerSseMessage,
    ) -> BoxFuture<'d, Result<String, EventStoreError>>
    where
        'a: 'd,
        'b: 'd,
        'c: 'd,
        Self: 'd,
    {
        Box::pin(async move { Ok(self.append(stream_id, event).await?) })
    }

    /// # Cancel safety
    ///
    /// Cancel safe: it only reads (and refreshes the stream's TTL).
    fn replay_events_after<'a, 'b, 'c>(
        &'a self,
        last_event_id: &'b str,
    ) -> BoxFuture<'c, Result<EventStream, EventStoreError>>
    where
        'a: 'c,
        'b: 'c,
        Self: 'c,
    {
        Box::pin(async move {
            let events = self.replay(last_event_id).await?;
            Ok(Box::pin(futures::stream::iter(events)) as EventStream)
        })
    }
}
