//! Appending to a stream: the events a session queued for one stream go in
//! one call (one round trip for a tool call's priming event and its
//! answer), and a request's stream records, until its answer is stored,
//! which request it answers and which instance serves it (`lost`).

use std::sync::LazyLock;

use redis::Script;
use rmcp::model::{JsonRpcMessage, RequestId};
use rmcp::transport::streamable_http_server::session::ServerSseMessage;

use super::super::relay;
use super::super::unsettled::{Pending, SERVER};
use super::{RedisEventStore, lost};
use crate::store::{StoreError, check_stream_name};

/// Streams a session's index keeps, its standalone stream always among
/// them: the least recently used beyond are dropped, events and all.
const MAX_STREAMS_PER_SESSION: usize = 128;

/// The most events one append takes: a session stores the rest of its
/// queue in the next.
pub(crate) const MAX_EVENTS_PER_APPEND: usize = 32;

/// Appends events to one stream. KEYS[1]: the stream; KEYS[2]: its void
/// set; for a session's stream, KEYS[3]: the session's stream index and
/// KEYS[4]: its unfinished requests (a hash, field: the stream's suffix).
/// ARGV: [1] capacity, [2] TTL (ms), [3] the append's nonce, [4] the most
/// streams a session's index keeps, [5] the channel to publish entries on
/// or "" (`relay`), [6] the publication's head, [7] the number of events
/// n, [8] the stream's suffix in the requests hash or "", [9] its value
/// `<instance> <request id JSON>` to record or "", [10] "1" if the events
/// hold the request's answer (its field is removed), [11] a value the
/// field must hold for the append to happen, or "" (`lost`); then n pairs
/// (retry ms or "-", message JSON or ""); then the nonces to settle
/// (`unsettled`). Returns `{ids..., evicted...}` (n ids), `{}` if the
/// field did not hold ARGV[11], or nil if the nonce was settled already
/// (this append landed after its failure was reported: the client has
/// the events, without ids).
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
/// least recently used goes first) and keeps ARGV[4]: the
/// standalone stream (`<id>:common`), however quiet, and the most recently
/// used others. The ones beyond leave the index and are returned
/// (`evicted`): the script may not touch a key it did not declare, so the
/// caller deletes them, events and all, right after (should that fail,
/// they live out their TTL), and their records leave the requests hash.
/// So a session's index, streams and records stay bounded however many
/// requests it makes (a request cancelled before its answer keeps its
/// record until its stream leaves the index).
static APPEND: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        r"
{SERVER}
if redis.call('SISMEMBER', KEYS[2], ARGV[3]) == 1 then return false end
if ARGV[11] ~= '' and redis.call('HGET', KEYS[4], ARGV[8]) ~= ARGV[11] then return {{}} end
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
local n = tonumber(ARGV[7])
local settling = 12 + 2 * n
if #ARGV >= settling then
  for i = settling, #ARGV do redis.call('SADD', KEYS[2], ARGV[i]) end
  redis.call('PEXPIRE', KEYS[2], ARGV[2])
  redis.call('RPUSH', KEYS[1], generation .. '-' .. string.format('%d', sequence) .. ' ' .. server .. ' ! ')
  sequence = sequence + 1
end
local reply = {{}}
for e = 0, n - 1 do
  local message = ARGV[13 + 2 * e]
  local id = generation .. '-' .. string.format('%d', sequence)
  local entry = id .. ' ' .. server .. ' ' .. ARGV[12 + 2 * e] .. ' ' .. message
  redis.call('RPUSH', KEYS[1], entry)
  if ARGV[5] ~= '' and message ~= '' then redis.call('PUBLISH', ARGV[5], ARGV[6] .. ' ' .. entry) end
  table.insert(reply, id)
  sequence = sequence + 1
end
redis.call('LTRIM', KEYS[1], -tonumber(ARGV[1]), -1)
redis.call('PEXPIRE', KEYS[1], ARGV[2])
if #KEYS >= 3 then
  local now_us = tonumber(now[1]) * 1000000 + tonumber(now[2])
  redis.call('ZADD', KEYS[3], now_us, KEYS[1])
  local excess = redis.call('ZCARD', KEYS[3]) - tonumber(ARGV[4])
  if excess > 0 then
    for _, stream in ipairs(redis.call('ZRANGE', KEYS[3], 0, excess)) do
      if excess > 0 and string.sub(stream, -7) ~= ':common' then
        redis.call('ZREM', KEYS[3], stream)
        local suffix = string.match(stream, '}}:stream:(.*)$')
        if suffix then redis.call('HDEL', KEYS[4], suffix) end
        table.insert(reply, stream)
        excess = excess - 1
      end
    end
  end
  redis.call('PEXPIRE', KEYS[3], ARGV[2])
end
if #KEYS == 4 and ARGV[8] ~= '' then
  if ARGV[10] == '1' then
    redis.call('HDEL', KEYS[4], ARGV[8])
  elseif ARGV[9] ~= '' then
    redis.call('HSET', KEYS[4], ARGV[8], ARGV[9])
  end
  redis.call('PEXPIRE', KEYS[4], ARGV[2])
end
return reply
"
    ))
});

/// What an append records of the request a stream answers.
#[derive(Debug, Clone, Copy)]
pub(super) enum Request<'a> {
    /// No request (a standalone or stateless stream).
    None,
    /// The stream answers this request: recorded as unfinished, served by
    /// this instance, until the events hold its answer.
    Served(&'a RequestId),
    /// The request's answer, appended only if the stream's record still
    /// reads `expected` (`lost`).
    LostAnswer { expected: &'a str },
}

impl RedisEventStore {
    /// Appends `events` to `stream` in one call; their ids, in order.
    /// Fails as one: Redis stored all of them or none (an append whose
    /// outcome is unknown leaves a gap, `unsettled`). `Ok(None)`: a
    /// [`Request::LostAnswer`] whose record no longer read as expected.
    pub(super) async fn append_all(
        &self,
        stream: &str,
        events: &[ServerSseMessage],
        request: Request<'_>,
    ) -> Result<Option<Vec<String>>, StoreError> {
        check_stream_name(stream)?;
        let inner = &self.inner;
        let mut encoded = Vec::with_capacity(events.len() * 2);
        let mut answers = false;
        for event in events {
            encoded.push(
                event
                    .retry
                    .map_or_else(|| "-".to_owned(), |retry| retry.as_millis().to_string()),
            );
            encoded.push(match &event.message {
                Some(message) => {
                    answers |= matches!(
                        **message,
                        JsonRpcMessage::Response(_) | JsonRpcMessage::Error(_)
                    );
                    serde_json::to_string(&**message)?
                }
                None => String::new(),
            });
        }
        let session_stream = inner.keys.streams_of(stream);
        let (field, record, expected) = match (lost::request_stream_field(stream), request) {
            (None, _) | (_, Request::None) => ("", String::new(), ""),
            (Some(field), Request::Served(id)) => (field, lost::record(&inner.instance, id)?, ""),
            (Some(field), Request::LostAnswer { expected }) => (field, String::new(), expected),
        };
        let nonce = inner.next_nonce();
        // A lost request's answer is sent to no client unless the append
        // succeeds, and lands at most once (it is conditional): a failed
        // one leaves no gap, and settles nothing. Any other append, from
        // here on, leaves a gap to settle unless it succeeds.
        let lost_answer = matches!(request, Request::LostAnswer { .. });
        let settling = match lost_answer {
            true => Vec::new(),
            false => inner.take_unsettled(stream),
        };
        let pending =
            (!lost_answer).then(|| Pending::new(inner.clone(), stream, &nonce, &settling));
        let mut invocation = APPEND.key(inner.keys.stream(stream));
        invocation.key(inner.keys.void(stream));
        if let Some(index) = session_stream {
            invocation.key(index).key(inner.keys.requests_of(stream));
        }
        invocation
            .arg(inner.stream_capacity())
            .arg(inner.ttl_ms())
            .arg(&nonce)
            .arg(MAX_STREAMS_PER_SESSION);
        // Other instances deliver a session's standalone notifications live
        // to a GET open there (`relay`).
        match relay::publication_head(inner, stream) {
            Some(head) => invocation.arg(inner.keys.standalone_channel()).arg(head),
            None => invocation.arg("").arg(""),
        };
        invocation
            .arg(events.len())
            .arg(field)
            .arg(record)
            .arg(if answers { "1" } else { "0" })
            .arg(expected);
        for part in &encoded {
            invocation.arg(part);
        }
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
        let mut reply = reply.ok_or_else(|| StoreError::ReplayGap(format!("{stream}#?")))?;
        if let Some(pending) = pending {
            pending.succeeded();
        }
        if reply.is_empty() {
            return Ok(None);
        }
        let evicted = reply.split_off(events.len().min(reply.len()));
        if !evicted.is_empty() {
            // Streams the index let go (see APPEND): in this stream's slot.
            let mut delete = redis::cmd("DEL");
            delete.arg(&evicted);
            let _ = inner
                .call(
                    "drop evicted streams",
                    slot,
                    delete.query_async::<()>(&mut connection),
                )
                .await;
        }
        Ok(Some(
            reply
                .into_iter()
                .map(|entry| format!("{stream}#{entry}"))
                .collect(),
        ))
    }
}
