//! Appends whose outcome is unknown, and the gaps they leave.
//!
//! # What "exactly once" means here
//!
//! An event reaches a client at most once through the store: an event the
//! client got (live, with an id, or in a replay) is never replayed to it
//! again, and a replay that succeeds holds every event the session sent on
//! that stream after the `Last-Event-ID`. When the store cannot promise
//! both, the replay is refused ([`StoreError::ReplayGap`]) and the client
//! starts the stream over; nothing is skipped or repeated silently.
//!
//! # Invariant kept here
//!
//! An event the store failed on (an error, a timeout, a dropped call, the
//! short circuit) goes to the client without an id, and Redis may still
//! store it after the failure was reported (a timed-out script runs
//! anyway). Each append carries a nonce chosen before the call; a failed
//! one's nonce is kept here until it is *settled*: added to the stream's
//! void set (its `void` key, `keys`: so an append that lands late is
//! dropped, never numbered after events the client already has) together
//! with a gap entry in the stream (so a replay from before it is refused:
//! the client may or may not have got the unnumbered event). Settling
//! rides on the stream's next append, runs before a replay of the stream
//! on this instance, and the upkeep settles the rest every round. Until
//! then (at most one upkeep interval once Redis answers), a replay on
//! another instance can still repeat or skip that event.
//!
//! [`StoreError::ReplayGap`]: crate::StoreError::ReplayGap

use std::sync::atomic::Ordering;
use std::sync::{Arc, LazyLock};

use redis::Script;

use super::Inner;

/// Nonces kept for settling; beyond, the oldest stream's are dropped (and
/// logged): its replays may then repeat or skip an event.
const MAX_UNSETTLED: usize = 10_000;

/// Settles nonces. KEYS[1]: the stream, KEYS[2]: its void set. ARGV[1]:
/// the TTL (ms), ARGV[2]: the capacity, ARGV[3..]: the nonces. Adds a gap
/// entry only to a stream of this server (`events`' generations).
pub(super) static SETTLE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        r"
{SERVER}
for i = 3, #ARGV do redis.call('SADD', KEYS[2], ARGV[i]) end
redis.call('PEXPIRE', KEYS[2], ARGV[1])
local last = redis.call('LINDEX', KEYS[1], -1)
if last then
  local generation, kept, writer = string.match(last, '^(%d+)-(%d+) (%x+) ')
  if writer == server then
    local id = generation .. '-' .. string.format('%d', tonumber(kept) + 1)
    redis.call('RPUSH', KEYS[1], id .. ' ' .. server .. ' ! ')
    redis.call('LTRIM', KEYS[1], -tonumber(ARGV[2]), -1)
  end
end
return 1
"
    ))
});

/// Lua that sets `server` to the Redis server's identity: the start of its
/// `run_id`, which changes on every restart and differs between a primary
/// and its replicas.
pub(super) const SERVER: &str = r"
local server = string.sub(string.match(redis.call('INFO', 'server'), 'run_id:(%x+)'), 1, 16)
";

impl Inner {
    /// A nonce no other append of any instance carries.
    pub(super) fn next_nonce(&self) -> String {
        let n = self.nonces.fetch_add(1, Ordering::Relaxed);
        format!("{}.{n}", self.instance)
    }

    /// Appends whose outcome is unknown, over every stream.
    pub(super) fn unsettled_appends(&self) -> usize {
        self.unsettled.lock().values().map(Vec::len).sum()
    }

    /// Takes the unsettled nonces of `stream`, to settle with its next
    /// append.
    pub(super) fn take_unsettled(&self, stream: &str) -> Vec<String> {
        self.unsettled.lock().remove(stream).unwrap_or_default()
    }

    /// Keeps `nonces` of `stream` for settling.
    pub(super) fn keep_unsettled(&self, stream: &str, nonces: Vec<String>) {
        if nonces.is_empty() {
            return;
        }
        let mut unsettled = self.unsettled.lock();
        match unsettled.get_mut(stream) {
            Some(kept) => kept.extend(nonces),
            None => {
                unsettled.insert(stream.to_owned(), nonces);
            }
        }
        let mut total: usize = unsettled.values().map(Vec::len).sum();
        while total > MAX_UNSETTLED {
            let Some((stream, dropped)) = unsettled.pop_front() else {
                break;
            };
            total -= dropped.len();
            tracing::warn!(
                stream,
                "too many event-store appends of unknown outcome to track; replays of this \
                 stream may repeat or skip an event"
            );
        }
    }

    /// Settles the nonces of `stream` kept here; kept again if Redis fails.
    pub(super) async fn settle(&self, stream: &str) -> Result<(), crate::store::StoreError> {
        let nonces = self.take_unsettled(stream);
        if nonces.is_empty() {
            return Ok(());
        }
        let mut invocation = SETTLE.key(self.keys.stream(stream));
        invocation
            .key(self.keys.void(stream))
            .arg(self.ttl_ms())
            .arg(self.stream_capacity());
        for nonce in &nonces {
            invocation.arg(nonce);
        }
        let mut connection = self.connection.clone();
        let result = invocation.invoke_async::<i64>(&mut connection).await;
        let slot = self.stream_slot(stream);
        let result = self.observe("settle event appends", slot, result).map(drop);
        if result.is_err() {
            self.keep_unsettled(stream, nonces);
        }
        result
    }

    /// The upkeep's part: settles every stream's nonces, but those of the
    /// slots `round` could not reach.
    pub(super) async fn settle_appends(&self, round: &super::upkeep::Round) {
        let streams: Vec<String> = self.unsettled.lock().keys().cloned().collect();
        for stream in streams {
            let slot = self.stream_slot(&stream);
            if !round.skips(slot) {
                let result = self.settle(&stream).await;
                round.record(slot, &result);
            }
        }
    }
}

/// An append in flight: unless [`Pending::succeeded`] is called, its nonce
/// (and the nonces it was to settle) are kept for settling, also when the
/// call is dropped.
pub(super) struct Pending {
    inner: Arc<Inner>,
    stream: String,
    nonces: Vec<String>,
}

impl Pending {
    /// `nonce` and `settling` (already taken from the unsettled ones).
    pub(super) fn new(inner: Arc<Inner>, stream: &str, nonce: &str, settling: &[String]) -> Self {
        let mut nonces = settling.to_vec();
        nonces.push(nonce.to_owned());
        Self {
            inner,
            stream: stream.to_owned(),
            nonces,
        }
    }

    pub(super) fn succeeded(mut self) {
        self.nonces.clear();
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        self.inner
            .keep_unsettled(&self.stream, std::mem::take(&mut self.nonces));
    }
}
