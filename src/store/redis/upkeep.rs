//! The upkeep: a background round, every upkeep interval, that keeps the
//! stored copies of this instance's sessions alive and makes Redis catch up
//! after an outage.
//!
//! Each round
//! 1. forgets the sessions this instance no longer holds (closed, evicted,
//!    expired here: their stored copy then lives out its TTL, so the
//!    client can still be restored on its next request), except those
//!    loaded in the last two intervals (a restore may still be registering
//!    them); ends a copy of a session DELETEd here that a restore
//!    registered anyway (the DELETE came between rmcp's `load` and its
//!    `restore_session`);
//! 2. refreshes the TTL of the others' values and of every stream in their
//!    index (a Lua script per session, up to [`CONCURRENCY`] at once on the
//!    multiplexed connection): a stream lives as long as its session,
//!    however quiet it is, and the index loses the streams that expired
//!    anyway. The script may touch only the keys it declares, so each held
//!    session keeps the list of its streams the last round saw; the script
//!    refreshes those and answers the index when it differs, and a stream
//!    new since then is refreshed by a second run in the same round;
//! 3. for each one whose key is gone (Redis lost it, or it was never
//!    written because Redis was away, or a DELETE elsewhere removed it,
//!    whether or not this instance heard of it over pub/sub): ends the
//!    local copy if its tombstone is there, else writes it again,
//!    atomically (a Lua script), so a DELETE racing the rewrite cannot be
//!    undone by it. A value Redis has not confirmed for longer than a
//!    tombstone lives (four TTLs: this instance could not see Redis that
//!    long) is not written back: a DELETE elsewhere may have come and its
//!    tombstone gone, so the copy goes on here only;
//! 4. sends up to [`DELETES_PER_ROUND`] of the DELETEs that could not reach
//!    Redis when they came (after the refreshes, so a backlog cannot let
//!    live sessions' keys expire);
//! 5. settles the appends whose outcome is unknown (`events`).
//!
//! The upkeep calls Redis whatever the short circuit says: it is what
//! probes an outage, and its first success lets the store calls through
//! again. Redis unreachable (`is_outage`) for a slot skips that slot for
//! the rest of the round: on a single Redis, every slot, so the round
//! ends; on a cluster with one node down, only the sessions of the slots
//! seen failing wait, the others are refreshed. An error of one
//! session's script (out of memory, say) does not keep the others from
//! being refreshed, nor the queued DELETEs from being sent.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock, Weak};
use std::time::Duration;

use futures::StreamExt;
use redis::Script;
use rmcp::transport::streamable_http_server::session::SessionId;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::SessionHost;
use super::{Inner, is_outage};
use crate::store::StoreError;

/// Sessions refreshed at once (their scripts share the connection's
/// round trips).
const CONCURRENCY: usize = 256;
/// DELETEs retried per round.
const DELETES_PER_ROUND: usize = 256;
/// DELETEs kept for a retry while Redis is away; beyond, the oldest of
/// sessions this instance did not hold are dropped (a DELETE of an id
/// nobody here knew may be of no session at all).
const MAX_PENDING_DELETES: usize = 10_000;

/// Writes a session's value unless its tombstone is there. KEYS[1]: value,
/// KEYS[2]: tombstone; ARGV: the value, the TTL (ms). Returns 1 if the
/// session was DELETEd.
static REVIVE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('EXISTS', KEYS[2]) == 1 then return 1 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2], 'NX')
return 0
",
    )
});

/// Refreshes a held session: KEYS[1] its value, KEYS[2] its stream
/// index, KEYS[3] its unfinished requests (`events::lost`), KEYS[4..] its
/// streams as the caller knows them; ARGV[1] the TTL
/// (ms). Returns `{'gone'}` if the value was not there; else refreshes
/// every declared stream still in the index (those expired leave it, and
/// their records the requests hash) and
/// returns `{'same'}`, or `{'changed', streams...}`, the index as it is
/// now, if it differs from what was declared (a stream in it that was not
/// declared is not refreshed: the caller declares it next time).
static REFRESH: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('PEXPIRE', KEYS[1], ARGV[1]) == 0 then return {'gone'} end
local declared = {}
for i = 4, #KEYS do declared[KEYS[i]] = true end
local indexed = redis.call('ZRANGE', KEYS[2], 0, -1)
local kept = {'changed'}
local changed = #indexed ~= #KEYS - 3
for _, stream in ipairs(indexed) do
  if not declared[stream] then
    changed = true
    table.insert(kept, stream)
  elseif redis.call('PEXPIRE', stream, ARGV[1]) == 1 then
    table.insert(kept, stream)
  else
    redis.call('ZREM', KEYS[2], stream)
    local suffix = string.match(stream, '}:stream:(.*)$')
    if suffix then redis.call('HDEL', KEYS[3], suffix) end
    changed = true
  end
end
if #indexed > 0 then redis.call('PEXPIRE', KEYS[2], ARGV[1]) end
redis.call('PEXPIRE', KEYS[3], ARGV[1])
if changed then return kept end
return {'same'}
",
    )
});

/// A session whose stored copy this instance keeps alive.
#[derive(Debug)]
pub(crate) struct Held {
    /// The stored value, to write it again if Redis lost it.
    json: Arc<str>,
    /// Whether the value is known to have reached Redis.
    pub(super) written: AtomicBool,
    /// DELETEd on this instance: never refreshed or written again; a copy
    /// restored anyway is ended.
    pub(super) deleted: AtomicBool,
    /// When it was stored or loaded here.
    since: Instant,
    /// When Redis last confirmed its value (written, loaded or refreshed).
    confirmed: parking_lot::Mutex<Instant>,
    /// The keys of its streams the last round found in its index.
    streams: parking_lot::Mutex<Arc<[String]>>,
}

impl Held {
    pub(super) fn new(json: Arc<str>, written: bool) -> Self {
        Self {
            json,
            written: AtomicBool::new(written),
            deleted: AtomicBool::new(false),
            since: Instant::now(),
            confirmed: parking_lot::Mutex::new(Instant::now()),
            streams: parking_lot::Mutex::new(Arc::from([])),
        }
    }
}

impl Inner {
    /// Marks `id` DELETEd here; whether this instance held (or was
    /// restoring) it.
    pub(super) fn mark_deleted(&self, id: &str) -> bool {
        self.held
            .get(id)
            .map(|held| held.deleted.store(true, Ordering::Relaxed))
            .is_some()
    }

    /// The keys of the streams of `id` the upkeep last found, if this
    /// instance holds it.
    pub(super) fn held_streams(&self, id: &str) -> Arc<[String]> {
        self.held
            .get(id)
            .map_or_else(|| Arc::from([]), |held| held.streams.lock().clone())
    }

    /// Whether a restore of `id` must be refused: DELETEd on this instance
    /// since rmcp loaded it, or its DELETE waits for Redis here.
    pub(super) fn deleted_here(&self, id: &str) -> bool {
        self.held
            .get(id)
            .is_some_and(|held| held.deleted.load(Ordering::Relaxed))
            || self.pending_deletes.lock().contains_key(id)
    }

    /// Keeps a DELETE for the upkeep to send; `held`: whether this instance
    /// held the session (so it surely exists).
    pub(super) fn queue_delete(&self, id: SessionId, held: bool) {
        let mut pending = self.pending_deletes.lock();
        pending.replace(id, held);
        while pending.len() > MAX_PENDING_DELETES {
            let oldest_unknown = pending
                .iter()
                .find(|(_, held)| !**held)
                .map(|(id, _)| id.clone());
            match oldest_unknown {
                Some(id) => pending.remove(&id),
                None => pending.pop_front().map(|(_, held)| held),
            };
        }
    }
}

/// Runs rounds until the stores are dropped. Holds no strong reference
/// between rounds, so dropping the last `RedisStores` ends it.
pub(super) async fn run(inner: Weak<Inner>, shutdown: CancellationToken, now: Arc<Notify>) {
    loop {
        let Some(interval) = inner.upgrade().map(|inner| inner.upkeep_interval()) else {
            return;
        };
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
            _ = now.notified() => {}
        }
        let Some(inner) = inner.upgrade() else { return };
        if let Err(error) = round(&inner).await {
            tracing::debug!(%error, "redis upkeep round skipped slots it could not reach; the next one tries them");
        }
    }
}

/// One round (module docs); an error if some slot could not be reached
/// (what it skipped waits for the next round).
pub(super) async fn round(inner: &Inner) -> Result<(), StoreError> {
    let round = Round::default();
    if let Some(host) = inner.host() {
        refresh_held(inner, &*host, &round).await;
    }
    retry_deletes(inner, &round).await;
    inner.settle_appends(&round).await;
    if round.unreached.lock().is_empty() {
        Ok(())
    } else {
        Err(StoreError::RedisUnavailable)
    }
}

/// The slots a round found unreachable: it skips them from then on.
#[derive(Default)]
pub(super) struct Round {
    unreached: parking_lot::Mutex<std::collections::HashSet<usize>>,
}

impl Round {
    pub(super) fn skips(&self, slot: usize) -> bool {
        self.unreached.lock().contains(&slot)
    }

    /// Records the outcome of a call on `slot`: an outage makes the round
    /// skip the slot.
    pub(super) fn record<T>(&self, slot: usize, result: &Result<T, StoreError>) {
        if matches!(result, Err(StoreError::Redis(error)) if is_outage(error)) {
            self.unreached.lock().insert(slot);
        }
    }
}

/// What became of one session's refresh.
enum Refreshed {
    /// Confirmed or written again (or found DELETEd), or an error of its
    /// own, logged: the next round tries again.
    Done,
    /// Its slot could not be reached.
    Unreached,
}

/// A failure that makes the session's slot unreached if Redis cannot be
/// reached; otherwise (an error of this one call, logged by `observe`)
/// `None`, and the round goes on.
fn tolerate<T>(result: Result<T, StoreError>) -> Result<Option<T>, Refreshed> {
    match result {
        Ok(value) => Ok(Some(value)),
        Err(StoreError::Redis(error)) if !is_outage(&error) => Ok(None),
        Err(_) => Err(Refreshed::Unreached),
    }
}

/// Steps 1 to 3 of a round.
async fn refresh_held(inner: &Inner, host: &dyn SessionHost, round: &Round) {
    let grace = inner.upkeep_interval() * 2;
    let mut restored_after_delete = Vec::new();
    inner.held.retain(|id, held| {
        let holds = host.holds_session(id);
        if held.deleted.load(Ordering::Relaxed) {
            if holds {
                restored_after_delete.push(id.clone());
                return false;
            }
            return held.since.elapsed() < grace;
        }
        holds || held.since.elapsed() < grace
    });
    for id in &restored_after_delete {
        host.close_deleted_elsewhere(id);
    }
    // A value unconfirmed for longer than a tombstone lives may have been
    // DELETEd while this instance could not see Redis, its tombstone gone
    // since: writing it back could undo that DELETE for every instance.
    // The copy goes on here only, no longer kept in Redis.
    let tombstone_life = Duration::from_millis(inner.tombstone_ttl_ms());
    inner.held.retain(|_, held| {
        !held.written.load(Ordering::Relaxed) || held.confirmed.lock().elapsed() < tombstone_life
    });
    let held: Vec<(SessionId, Arc<str>, bool)> = inner
        .held
        .iter()
        .filter(|entry| !entry.value().deleted.load(Ordering::Relaxed))
        .map(|entry| {
            let held = entry.value();
            (
                entry.key().clone(),
                held.json.clone(),
                held.written.load(Ordering::Relaxed),
            )
        })
        .collect();
    futures::stream::iter(held)
        .map(|(id, json, written)| async move {
            let slot = inner.session_slot(&id);
            if round.skips(slot) {
                return;
            }
            if let Refreshed::Unreached = refresh_one(inner, host, id, json, written, slot).await {
                round.unreached.lock().insert(slot);
            }
        })
        .buffer_unordered(CONCURRENCY)
        .collect::<()>()
        .await;
}

/// Steps 2 and 3 for one session.
async fn refresh_one(
    inner: &Inner,
    host: &dyn SessionHost,
    id: SessionId,
    json: Arc<str>,
    written: bool,
    slot: usize,
) -> Refreshed {
    let alive = if written {
        match refresh_value_and_streams(inner, &id, slot).await {
            Ok(alive) => alive,
            Err(unreached) => return unreached,
        }
    } else {
        false
    };
    if alive {
        if let Some(held) = inner.held.get(&id) {
            *held.confirmed.lock() = Instant::now();
        }
        return Refreshed::Done;
    }
    let mut connection = inner.connection.clone();
    let result = inner.observe(
        "rewrite session",
        slot,
        REVIVE
            .key(inner.keys.session(&id))
            .key(inner.keys.tombstone(&id))
            .arg(&*json)
            .arg(inner.ttl_ms())
            .invoke_async::<i64>(&mut connection)
            .await,
    );
    match tolerate(result) {
        Ok(Some(1)) => {
            inner.held.remove(&id);
            host.close_deleted_elsewhere(&id);
        }
        Ok(Some(_)) => {
            if let Some(held) = inner.held.get(&id) {
                held.written.store(true, Ordering::Relaxed);
                *held.confirmed.lock() = Instant::now();
            }
        }
        Ok(None) => {}
        Err(unreached) => return unreached,
    }
    Refreshed::Done
}

/// Runs [`REFRESH`] for a held session (twice if its index holds streams
/// the last round did not see); whether its value was there. An error of
/// this one session counts as gone: the rewrite checks.
async fn refresh_value_and_streams(
    inner: &Inner,
    id: &SessionId,
    slot: usize,
) -> Result<bool, Refreshed> {
    let mut connection = inner.connection.clone();
    let mut streams = inner.held_streams(id);
    for _ in 0..2 {
        let mut invocation = REFRESH.key(inner.keys.session(id));
        invocation
            .key(inner.keys.session_streams(id))
            .key(inner.keys.session_requests(id));
        for stream in &*streams {
            invocation.key(stream);
        }
        invocation.arg(inner.ttl_ms());
        let result = inner.observe(
            "refresh session",
            slot,
            invocation
                .invoke_async::<Vec<String>>(&mut connection)
                .await,
        );
        let Some(reply) = tolerate(result)? else {
            return Ok(false);
        };
        let Some((status, indexed)) = reply.split_first() else {
            return Ok(false);
        };
        match status.as_str() {
            "same" => return Ok(true),
            "changed" => {
                let unseen = indexed.iter().any(|stream| !streams.contains(stream));
                streams = indexed.into();
                if let Some(held) = inner.held.get(id) {
                    *held.streams.lock() = streams.clone();
                }
                if !unseen {
                    return Ok(true);
                }
            }
            _ => return Ok(false),
        }
    }
    Ok(true)
}

/// Step 4.
async fn retry_deletes(inner: &Inner, round: &Round) {
    let batch: Vec<(SessionId, bool)> = {
        let mut pending = inner.pending_deletes.lock();
        std::iter::from_fn(|| pending.pop_front())
            .take(DELETES_PER_ROUND)
            .collect()
    };
    for (id, held) in batch {
        let slot = inner.session_slot(&id);
        // Kept for the next round; the others are still tried.
        if round.skips(slot) {
            inner.queue_delete(id, held);
            continue;
        }
        let deleted = inner.delete_everywhere(&id, held).await;
        let result = inner.observe("delete session (retry)", slot, deleted);
        round.record(slot, &result);
        if result.is_err() {
            inner.queue_delete(id, held);
        }
    }
}
