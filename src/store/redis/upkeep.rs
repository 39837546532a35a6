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
//!    index (a Lua script per session, pipelined per batch): a stream lives
//!    as long as its session, however quiet it is, and the index loses the
//!    streams that expired anyway;
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
//! A round stops early only when Redis is unreachable (`is_outage`): an
//! error of one session's script (out of memory, say) does not keep the
//! others from being refreshed, nor the queued DELETEs from being sent.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock, Weak};
use std::time::Duration;

use redis::Script;
use rmcp::transport::streamable_http_server::session::SessionId;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::SessionHost;
use super::{Inner, is_outage};
use crate::store::StoreError;

/// Sessions refreshed per pipelined round trip.
const BATCH: usize = 512;
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
/// index; ARGV[1] the TTL (ms). Returns 1 if the value was there. Every
/// stream in the index gets the TTL too; those already gone leave it.
static REFRESH: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local alive = redis.call('PEXPIRE', KEYS[1], ARGV[1])
if alive == 1 then
  local streams = redis.call('ZRANGE', KEYS[2], 0, -1)
  for _, stream in ipairs(streams) do
    if redis.call('PEXPIRE', stream, ARGV[1]) == 0 then redis.call('ZREM', KEYS[2], stream) end
  end
  if #streams > 0 then redis.call('PEXPIRE', KEYS[2], ARGV[1]) end
end
return alive
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
}

impl Held {
    pub(super) fn new(json: Arc<str>, written: bool) -> Self {
        Self {
            json,
            written: AtomicBool::new(written),
            deleted: AtomicBool::new(false),
            since: Instant::now(),
            confirmed: parking_lot::Mutex::new(Instant::now()),
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
            tracing::debug!(%error, "redis upkeep round stopped early; the next one goes on");
        }
    }
}

pub(super) async fn round(inner: &Inner) -> Result<(), StoreError> {
    if let Some(host) = inner.host() {
        refresh_held(inner, &*host).await?;
    }
    retry_deletes(inner).await;
    inner.settle_appends().await;
    Ok(())
}

/// A failure that stops the round if Redis is unreachable; otherwise (an
/// error of this one call) logged and passed over.
fn tolerate<T>(result: Result<T, StoreError>) -> Result<Option<T>, StoreError> {
    match result {
        Ok(value) => Ok(Some(value)),
        Err(StoreError::Redis(error)) if !is_outage(&error) => Ok(None),
        Err(error) => Err(error),
    }
}

async fn refresh_held(inner: &Inner, host: &dyn SessionHost) -> Result<(), StoreError> {
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
    let mut connection = inner.connection.clone();
    for batch in held.chunks(BATCH) {
        let written: Vec<&SessionId> = batch
            .iter()
            .filter(|(_, _, written)| *written)
            .map(|(id, _, _)| id)
            .collect();
        // redis-rs refuses an empty pipeline. Each session's outcome on its
        // own: one session's error (a key of the wrong type, say) must not
        // leave the others unrefreshed.
        let refreshed: Vec<redis::RedisResult<i64>> = if written.is_empty() {
            Vec::new()
        } else {
            let mut refresh = redis::pipe();
            refresh.ignore_errors();
            // Loaded in the same round trip: a Redis restarted empty (or
            // after SCRIPT FLUSH) knows no script.
            refresh.load_script(&REFRESH).ignore();
            for id in &written {
                let mut invocation = REFRESH.key(inner.keys.session(id));
                invocation
                    .key(inner.keys.session_streams(id))
                    .arg(inner.ttl_ms());
                refresh.invoke_script(&invocation);
            }
            let result = inner.observe(
                "refresh sessions",
                refresh.query_async(&mut connection).await,
            );
            // Unknown outcomes count as gone: the rewrite below checks.
            tolerate(result)?.unwrap_or_default()
        };
        let mut refreshed = refreshed.into_iter();
        for (id, json, written) in batch {
            let outcome = if *written { refreshed.next() } else { None };
            if let Some(Err(error)) = &outcome {
                inner.errors.refused("refresh session", error);
            }
            if matches!(outcome, Some(Ok(1))) {
                if let Some(held) = inner.held.get(id) {
                    *held.confirmed.lock() = Instant::now();
                }
                continue;
            }
            let result = inner.observe(
                "rewrite session",
                REVIVE
                    .key(inner.keys.session(id))
                    .key(inner.keys.tombstone(id))
                    .arg(&**json)
                    .arg(inner.ttl_ms())
                    .invoke_async::<i64>(&mut connection)
                    .await,
            );
            match tolerate(result)? {
                Some(1) => {
                    inner.held.remove(id);
                    host.close_deleted_elsewhere(id);
                }
                Some(_) => {
                    if let Some(held) = inner.held.get(id) {
                        held.written.store(true, Ordering::Relaxed);
                        *held.confirmed.lock() = Instant::now();
                    }
                }
                None => {}
            }
        }
    }
    Ok(())
}

async fn retry_deletes(inner: &Inner) {
    let batch: Vec<(SessionId, bool)> = {
        let mut pending = inner.pending_deletes.lock();
        std::iter::from_fn(|| pending.pop_front())
            .take(DELETES_PER_ROUND)
            .collect()
    };
    for (done, (id, held)) in batch.iter().enumerate() {
        let deleted = inner.delete_everywhere(id, *held).await;
        let outage = match inner.observe("delete session (retry)", deleted) {
            Ok(()) => continue,
            Err(StoreError::Redis(error)) => is_outage(&error),
            Err(_) => false,
        };
        // Kept for the next round; the others are still tried unless Redis
        // is unreachable.
        if !outage {
            inner.queue_delete(id.clone(), *held);
            continue;
        }
        for (id, held) in &batch[done..] {
            inner.queue_delete(id.clone(), *held);
        }
        return;
    }
}
