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
//! - No id is issued twice, even by a Redis that lost writes: each entry
//!   records the server that wrote it (the start of its `run_id`, new on
//!   every restart, another on a replica or another cluster node), and a
//!   stream continues only on that server. After a restart from an older
//!   snapshot, a failover to a replica, or its slot's migration to another
//!   node, the next append starts a new generation, and a replay of the
//!   old one is refused ([`StoreError::UnknownEvent`]): events after its
//!   newest kept one may have been sent and lost.
//! - Appending, trimming to the capacity (`LTRIM`, exact), refreshing the
//!   TTL and indexing the stream under its session (scored by last use,
//!   bounded in count) happen in one Lua script: atomic, one round trip,
//!   and no stream ever holds more than its capacity. The script touches
//!   only the keys it declares, all of the stream's slot: the streams the
//!   index lets go are deleted by the caller right after. The same script
//!   publishes an event stored on a session's standalone stream
//!   (`relay`), so a stream's publications come in its id order, and only
//!   events that were stored are published.
//! - A replay returns the kept events after the id only if none between
//!   the id and them is missing (else [`StoreError::EventTrimmed`]), none
//!   is a gap left by a failed append (else [`StoreError::ReplayGap`], see
//!   `unsettled` for what "exactly once" means), and only in the id's
//!   generation and up to the stream's newest event (else
//!   [`StoreError::UnknownEvent`]). It only reads.

use std::sync::{Arc, LazyLock};
use std::time::Duration;

use redis::Script;
use rmcp::model::ServerJsonRpcMessage;
use rmcp::transport::streamable_http_server::session::store::{EventStoreError, EventStream};
use rmcp::transport::streamable_http_server::session::{EventStore, ServerSseMessage};

use super::unsettled::{Pending, SERVER};
use super::{Inner, relay};
use crate::store::{StoreError, StoredEventId, check_stream_name};

/// Streams a session's index keeps, its standalone stream always among
/// them: the least recently used beyond are dropped, events and all.
const MAX_STREAMS_PER_SESSION: usize = 128;

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

/// Appends one event. KEYS[1]: the stream; KEYS[2]: its void set;
/// KEYS[3], if any: its session's stream index. ARGV: capacity, TTL (ms),
/// message JSON or "", retry (ms) or "-", the append's nonce, the most
/// streams a session's index keeps, the channel to publish the entry on
/// or "" (`relay`), the publication's head, then the nonces to settle
/// (`unsettled`). Returns `{<generation>-<sequence>, evicted...}`, or nil
/// if the nonce was settled already (this append landed after its failure
/// was reported: the client has the event, without an id).
///
/// A stream continues only on the server that wrote it: one last written
/// by another server (Redis restarted, from a snapshot older than the
/// stream's newest events or empty; or a replica took over, lagging or
/// not) is dropped and started again in a new generation, so no id is
/// ever issued twice. Two scripts never run in the same microsecond of the
/// server's clock (each takes longer), so a stream dropped and started
/// again gets a generation of its own.
///
/// The index scores each stream by its last use (µs: no two scripts share
/// one, so streams appended one after the other never tie, and the
/// least recently used goes first) and keeps ARGV[6]: the
/// standalone stream (`<id>:common`), however quiet, and the most recently
/// used others. The ones beyond leave the index and are returned
/// (`evicted`): the script may not touch a key it did not declare, so the
/// caller deletes them, events and all, right after (should that fail,
/// they live out their TTL). So a session's index and streams stay
/// bounded however many requests it makes.
static APPEND: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        r"
{SERVER}
if redis.call('SISMEMBER', KEYS[2], ARGV[5]) == 1 then return false end
local now = redis.call('TIME')
local last = redis.call('LINDEX', KEYS[1], -1)
local generation, sequence
if last then
  local kept_generation, kept, writer = string.match(last, '^(%d+)-(%d+) (%x+) ')
  if writer == server then
    generation = kept_generation
    sequence = tonumber(kept) + 1
  else
    redis.call('DEL', KEYS[1])
  end
end
if not generation then
  generation = now[1] .. string.format('%06d', tonumber(now[2]))
  sequence = 1
end
if #ARGV > 8 then
  for i = 9, #ARGV do redis.call('SADD', KEYS[2], ARGV[i]) end
  redis.call('PEXPIRE', KEYS[2], ARGV[2])
  redis.call('RPUSH', KEYS[1], generation .. '-' .. string.format('%d', sequence) .. ' ' .. server .. ' ! ')
  sequence = sequence + 1
end
local id = generation .. '-' .. string.format('%d', sequence)
local entry = id .. ' ' .. server .. ' ' .. ARGV[4] .. ' ' .. ARGV[3]
redis.call('RPUSH', KEYS[1], entry)
if ARGV[7] ~= '' then redis.call('PUBLISH', ARGV[7], ARGV[8] .. ' ' .. entry) end
redis.call('LTRIM', KEYS[1], -tonumber(ARGV[1]), -1)
redis.call('PEXPIRE', KEYS[1], ARGV[2])
local reply = {{id}}
if #KEYS == 3 then
  local now_us = tonumber(now[1]) * 1000000 + tonumber(now[2])
  redis.call('ZADD', KEYS[3], now_us, KEYS[1])
  local excess = redis.call('ZCARD', KEYS[3]) - tonumber(ARGV[6])
  if excess > 0 then
    for _, stream in ipairs(redis.call('ZRANGE', KEYS[3], 0, excess)) do
      if excess > 0 and string.sub(stream, -7) ~= ':common' then
        redis.call('ZREM', KEYS[3], stream)
        table.insert(reply, stream)
        excess = excess - 1
      end
    end
  end
  redis.call('PEXPIRE', KEYS[3], ARGV[2])
end
return reply
"
    ))
});

/// Reads a stream's kept entries and the server's identity, as
/// `{{server, entries...}}`. Only reads: a replay works on a replica too,
/// and the upkeep keeps a held session's streams alive.
static REPLAY: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        r"
{SERVER}
local entries = redis.call('LRANGE', KEYS[1], 0, -1)
table.insert(entries, 1, server)
return entries
"
    ))
});

/// One kept entry, parsed.
pub(super) struct Entry<'a> {
    generation: u64,
    sequence: u64,
    /// The start of the `run_id` of the server that wrote it.
    server: &'a str,
    /// A gap: an event went to the client without an id here (`unsettled`).
    gap: bool,
    retry: Option<Duration>,
    message: &'a str,
}

impl<'a> Entry<'a> {
    /// `<generation>-<sequence> <server> <retry ms, - or ! for a gap>
    /// <message JSON or nothing>`.
    pub(super) fn parse(text: &'a str) -> Option<Self> {
        let (id, rest) = text.split_once(' ')?;
        let (server, rest) = rest.split_once(' ')?;
        let (retry, message) = rest.split_once(' ')?;
        let (generation, sequence) = id.split_once('-')?;
        Some(Self {
            generation: generation.parse().ok()?,
            sequence: sequence.parse().ok()?,
            server,
            gap: retry == "!",
            retry: match retry {
                "-" | "!" => None,
                ms => Some(Duration::from_millis(ms.parse().ok()?)),
            },
            message,
        })
    }
}

impl Entry<'_> {
    /// The event this entry of `stream` holds, under its id.
    pub(super) fn to_event(&self, stream: &str) -> Result<ServerSseMessage, StoreError> {
        let mut event = ServerSseMessage::default();
        if !self.message.is_empty() {
            let message: ServerJsonRpcMessage = serde_json::from_str(self.message)?;
            event.message = Some(Arc::new(message));
        }
        event.retry = self.retry;
        event.event_id = Some(format!("{stream}#{}-{}", self.generation, self.sequence));
        Ok(event)
    }

    /// A gap left by a failed append (`unsettled`), no event.
    pub(super) fn is_gap(&self) -> bool {
        self.gap
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
        let nonce = inner.next_nonce();
        let settling = inner.take_unsettled(stream);
        // From here on, any way out but a success leaves a gap to settle.
        let pending = Pending::new(inner.clone(), stream, &nonce, &settling);
        let mut invocation = APPEND.key(inner.keys.stream(stream));
        invocation.key(inner.keys.void(stream));
        if let Some(index) = inner.keys.streams_of(stream) {
            invocation.key(index);
        }
        invocation
            .arg(inner.stream_capacity())
            .arg(inner.ttl_ms())
            .arg(message)
            .arg(retry)
            .arg(&nonce)
            .arg(MAX_STREAMS_PER_SESSION);
        // Other instances deliver a session's standalone notifications live
        // to a GET open there (`relay`).
        match relay::publication_head(inner, stream, event) {
            Some(head) => invocation.arg(inner.keys.standalone_channel()).arg(head),
            None => invocation.arg("").arg(""),
        };
        for settled in &settling {
            invocation.arg(settled);
        }
        let mut connection = inner.connection.clone();
        let slot = inner.stream_slot(stream);
        let reply: Option<Vec<String>> = inner
            .call(
                "store_event",
                slot,
                invocation.invoke_async(&mut connection),
            )
            .await?;
        // A fresh nonce is never settled before its own append.
        let mut reply = reply
            .filter(|reply| !reply.is_empty())
            .ok_or_else(|| StoreError::ReplayGap(format!("{stream}#?")))?;
        pending.succeeded();
        let entry = reply.remove(0);
        if !reply.is_empty() {
            // Streams the index let go (see APPEND): in this stream's slot.
            let mut delete = redis::cmd("DEL");
            delete.arg(&reply);
            let _ = inner
                .call(
                    "drop evicted streams",
                    slot,
                    delete.query_async::<()>(&mut connection),
                )
                .await;
        }
        Ok(format!("{stream}#{entry}"))
    }

    async fn replay(&self, last_event_id: &str) -> Result<Vec<ServerSseMessage>, StoreError> {
        let id = StoredEventId::parse(last_event_id)?;
        let inner = &self.inner;
        // Appends of this instance that failed on this stream leave their
        // gap first, so this replay cannot repeat or skip them.
        inner.settle(id.stream).await?;
        let invocation = REPLAY.key(inner.keys.stream(id.stream));
        let mut connection = inner.connection.clone();
        let mut kept: Vec<String> = inner
            .call(
                "replay_events_after",
                inner.stream_slot(id.stream),
                invocation.invoke_async(&mut connection),
            )
            .await?;
        let unknown = || StoreError::UnknownEvent(last_event_id.to_owned());
        if kept.is_empty() {
            return Err(unknown());
        }
        let server = kept.remove(0);
        let entries = kept
            .iter()
            .map(|text| Entry::parse(text).ok_or_else(unknown))
            .collect::<Result<Vec<_>, _>>()?;
        let (Some(first), Some(last)) = (entries.first(), entries.last()) else {
            return Err(unknown());
        };
        // Written by another server (Redis restarted, or a replica took
        // over): events after the newest kept may have been sent and lost.
        if first.generation != id.generation || last.sequence < id.sequence || last.server != server
        {
            return Err(unknown());
        }
        if first.sequence > id.sequence.saturating_add(1) {
            return Err(StoreError::EventTrimmed {
                id: last_event_id.to_owned(),
                oldest_kept: first.sequence,
            });
        }
        let after = entries.iter().filter(|entry| entry.sequence > id.sequence);
        if after.clone().any(|entry| entry.gap) {
            return Err(StoreError::ReplayGap(last_event_id.to_owned()));
        }
        after.map(|entry| entry.to_event(id.stream)).collect()
    }
}

#[async_trait::async_trait]
impl EventStore for RedisEventStore {
    /// Fails on a stream name no id could carry, or when Redis fails; the
    /// event then goes to the client without an id, and a replay across it
    /// is refused ([`StoreError::ReplayGap`]) rather than repeating or
    /// skipping it.
    ///
    /// # Cancel safety
    ///
    /// Dropped while Redis works, the event may or may not be stored; it
    /// counts as failed (its id is never sent): a replay across it is
    /// refused, and should Redis run it after the gap is recorded, it is
    /// dropped.
    async fn store_event(
        &self,
        stream_id: &str,
        event: &ServerSseMessage,
    ) -> Result<String, EventStoreError> {
        Ok(self.append(stream_id, event).await?)
    }

    /// # Cancel safety
    ///
    /// Cancel safe: it only reads (after recording, if this instance has
    /// some, the gaps of appends that failed on the stream).
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
        let entry = Entry::parse("1795646469674123-7 ab12 3000 {\"a\": 1}").unwrap();
        assert_eq!(
            (entry.generation, entry.sequence, entry.server, entry.gap),
            (1_795_646_469_674_123, 7, "ab12", false)
        );
        assert_eq!(entry.retry, Some(Duration::from_secs(3)));
        assert_eq!(entry.message, "{\"a\": 1}");
        let priming = Entry::parse("5-1 ab12 - ").unwrap();
        assert_eq!((priming.retry, priming.message), (None, ""));
        let gap = Entry::parse("5-2 ab12 ! ").unwrap();
        assert!(gap.gap);
        for bad in [
            "",
            "5-1",
            "5-1 ab12 -",
            "x-1 ab12 - ",
            "5 ab12 - ",
            "5-1 ab12 x {}",
            "5-1 - ",
        ] {
            assert!(Entry::parse(bad).is_none(), "{bad:?}");
        }
    }
}
