//! [`RedisEventStore`]: rmcp's `EventStore` on Redis lists, one per
//! stream.
//!
//! Each entry is `<generation>-<sequence> <retry ms or -> <message JSON>`.
//! A list, rather than a Redis stream: a stream preallocates its first node
//! (4 KB), and most streams here (one per request) hold two or three
//! events; a list of small entries costs about what they hold.
//!
//! # Invariants kept here
//!
//! - Ids are `<stream>#<generation>-<sequence>` (see `store::stored_id`).
//!   A stream's generation is the Redis server time (µs) of its first
//!   event, and its entries are numbered 1, 2, 3, ... within it: a stream
//!   that expired and started again has a new generation, so an old id
//!   cannot point into it, and a replay can tell a trimmed event from a
//!   foreign one.
//! - Appending, trimming to the capacity (`LTRIM`, exact), refreshing the
//!   TTL and indexing the stream under its session (scored by last use)
//!   happen in one Lua script: atomic, one round trip, and no stream ever
//!   holds more than its capacity.
//! - A replay returns the kept events after the id only if none between
//!   the id and them is missing (else [`StoreError::EventTrimmed`]), and
//!   only in the id's generation and up to the stream's newest event (else
//!   [`StoreError::UnknownEvent`]); it refreshes the TTL only of the stream
//!   of the id's generation, so replaying stale ids keeps nothing alive.

use std::sync::{Arc, LazyLock};
use std::time::Duration;

use redis::Script;
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
/// or "-". Returns `<generation>-<sequence>`.
///
/// Two scripts never run in the same microsecond of the server's clock
/// (each takes longer), so a stream dropped and started again gets a
/// generation of its own. The index scores each stream by its last use, so
/// pruning entries older than the TTL drops only streams whose keys
/// expired.
static APPEND: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local now = redis.call('TIME')
local last = redis.call('LINDEX', KEYS[1], -1)
local generation, sequence
if last then
  local kept
  generation, kept = string.match(last, '^(%d+)-(%d+) ')
  sequence = tonumber(kept) + 1
else
  generation = now[1] .. string.format('%06d', tonumber(now[2]))
  sequence = 1
end
local id = generation .. '-' .. string.format('%d', sequence)
redis.call('RPUSH', KEYS[1], id .. ' ' .. ARGV[4] .. ' ' .. ARGV[3])
redis.call('LTRIM', KEYS[1], -tonumber(ARGV[1]), -1)
redis.call('PEXPIRE', KEYS[1], ARGV[2])
if #KEYS == 2 then
  local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
  redis.call('ZADD', KEYS[2], now_ms, KEYS[1])
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now_ms - tonumber(ARGV[2]))
  redis.call('PEXPIRE', KEYS[2], ARGV[2])
end
return id
",
    )
});

/// Reads a stream's kept entries; refreshes its TTL and its place in its
/// session's index if they are of generation ARGV[1]. KEYS[1]: the stream;
/// KEYS[2], if any: the index. ARGV[2]: the TTL (ms).
static REPLAY: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local entries = redis.call('LRANGE', KEYS[1], 0, -1)
if #entries > 0 and string.sub(entries[1], 1, #ARGV[1] + 1) == ARGV[1] .. '-' then
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

/// One kept entry, parsed.
struct Entry<'a> {
    generation: u64,
    sequence: u64,
    retry: Option<Duration>,
    message: &'a str,
}

impl<'a> Entry<'a> {
    /// `<generation>-<sequence> <retry ms or -> <message JSON or nothing>`.
    fn parse(text: &'a str) -> Option<Self> {
        let (id, rest) = text.split_once(' ')?;
        let (retry, message) = rest.split_once(' ')?;
        let (generation, sequence) = id.split_once('-')?;
        Some(Self {
            generation: generation.parse().ok()?,
            sequence: sequence.parse().ok()?,
            retry: match retry {
                "-" => None,
                ms => Some(Duration::from_millis(ms.parse().ok()?)),
            },
            message,
        })
    }
}

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
            .map_or_else(|| "-".to_owned(), |retry| retry.as_millis().to_string());
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
        let entry: String = inner
            .call("store_event", invocation.invoke_async(&mut connection))
            .await?;
        Ok(format!("{stream}#{entry}"))
    }

    async fn replay(&self, last_event_id: &str) -> Result<Vec<ServerSseMessage>, StoreError> {
        let id = StoredEventId::parse(last_event_id)?;
        let inner = &self.inner;
        let mut invocation = REPLAY.key(inner.keys.stream(id.stream));
        if let Some(index) = inner.keys.streams_of(id.stream) {
            invocation.key(index);
        }
        invocation.arg(id.generation).arg(inner.ttl_ms());
        let mut connection = inner.connection.clone();
        let kept: Vec<String> = inner
            .call(
                "replay_events_after",
                invocation.invoke_async(&mut connection),
            )
            .await?;
        let unknown = || StoreError::UnknownEvent(last_event_id.to_owned());
        let entries = kept
            .iter()
            .map(|text| Entry::parse(text).ok_or_else(unknown))
            .collect::<Result<Vec<_>, _>>()?;
        let (Some(first), Some(last)) = (entries.first(), entries.last()) else {
            return Err(unknown());
        };
        if first.generation != id.generation || last.sequence < id.sequence {
            return Err(unknown());
        }
        if first.sequence > id.sequence.saturating_add(1) {
            return Err(StoreError::EventTrimmed {
                id: last_event_id.to_owned(),
                oldest_kept: first.sequence,
            });
        }
        entries
            .iter()
            .filter(|entry| entry.sequence > id.sequence)
            .map(|entry| {
                let mut event = ServerSseMessage::default();
                if !entry.message.is_empty() {
                    let message: ServerJsonRpcMessage = serde_json::from_str(entry.message)?;
                    event.message = Some(Arc::new(message));
                }
                event.retry = entry.retry;
                event.event_id = Some(format!(
                    "{}#{}-{}",
                    id.stream, entry.generation, entry.sequence
                ));
                Ok(event)
            })
            .collect()
    }
}

#[async_trait::async_trait]
impl EventStore for RedisEventStore {
    /// # Cancel safety
    ///
    /// Dropped while Redis works, the event may or may not be stored; its
    /// id is then never sent, so the store may hold an event no client
    /// will ask for (trimmed and expired like any other).
    async fn store_event(
        &self,
        stream_id: &str,
        event: &ServerSseMessage,
    ) -> Result<String, EventStoreError> {
        Ok(self.append(stream_id, event).await?)
    }

    /// # Cancel safety
    ///
    /// Cancel safe: it only reads (and refreshes the stream's TTL).
    async fn replay_events_after(
        &self,
        last_event_id: &str,
    ) -> Result<EventStream, EventStoreError> {
        let events = self.replay(last_event_id).await?;
        Ok(Box::pin(futures::stream::iter(events)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_parses_into_its_parts() {
        let entry = Entry::parse("1795646469674123-7 3000 {\"a\": 1}").unwrap();
        assert_eq!(
            (entry.generation, entry.sequence),
            (1_795_646_469_674_123, 7)
        );
        assert_eq!(entry.retry, Some(Duration::from_secs(3)));
        assert_eq!(entry.message, "{\"a\": 1}");
        let priming = Entry::parse("5-1 - ").unwrap();
        assert_eq!((priming.retry, priming.message), (None, ""));
        for bad in ["", "5-1", "5-1 -", "x-1 - ", "5 - ", "5-1 x {}"] {
            assert!(Entry::parse(bad).is_none(), "{bad:?}");
        }
    }
}
