//! The upkeep: a background round, every upkeep interval, that keeps the
//! stored copies of this instance's sessions alive and makes Redis catch up
//! after an outage.
//!
//! Each round
//! 1. forgets the sessions this instance no longer holds (closed, evicted,
//!    expired here: their stored copy then lives out its TTL, so the
//!    client can still be restored on its next request), except those
//!    loaded in the last two intervals (a restore may still be registering
//!    them);
//! 2. refreshes the TTL of the others (`PEXPIRE`, one pipelined round
//!    trip per batch);
//! 3. for each one whose key is gone (Redis lost it, or it was never
//!    written because Redis was away, or a DELETE elsewhere removed it,
//!    whether or not this instance heard of it over pub/sub): ends the
//!    local copy if its tombstone is there, else writes it again,
//!    atomically (a Lua script), so a DELETE racing the rewrite cannot be
//!    undone by it;
//! 4. sends up to [`DELETES_PER_ROUND`] of the DELETEs that could not reach
//!    Redis when they came (after the refreshes, so a backlog cannot let
//!    live sessions' keys expire).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock, Weak};

use redis::Script;
use rmcp::transport::streamable_http_server::session::SessionId;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::Inner;
use crate::manager::BoundedSessionManager;
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

/// A session whose stored copy this instance keeps alive.
#[derive(Debug)]
pub(crate) struct Held {
    /// The stored value, to write it again if Redis lost it.
    json: Arc<str>,
    /// Whether the value is known to have reached Redis.
    written: AtomicBool,
    /// When it was stored or loaded here.
    since: Instant,
}

impl Held {
    pub(super) fn new(json: Arc<str>, written: bool) -> Self {
        Self {
            json,
            written: AtomicBool::new(written),
            since: Instant::now(),
        }
    }
}

impl Inner {
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

async fn round(inner: &Inner) -> Result<(), StoreError> {
    if let Some(manager) = inner.manager() {
        refresh_held(inner, &manager).await?;
    }
    retry_deletes(inner).await;
    Ok(())
}

async fn refresh_held(inner: &Inner, manager: &BoundedSessionManager) -> Result<(), StoreError> {
    let grace = inner.upkeep_interval() * 2;
    inner
        .held
        .retain(|id, held| manager.holds_session(id) || held.since.elapsed() < grace);
    let held: Vec<(SessionId, Arc<str>, bool)> = inner
        .held
        .iter()
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
        // redis-rs refuses an empty pipeline.
        let refreshed: Vec<i64> = if written.is_empty() {
            Vec::new()
        } else {
            let mut refresh = redis::pipe();
            for id in &written {
                refresh
                    .cmd("PEXPIRE")
                    .arg(inner.keys.session(id))
                    .arg(inner.ttl_ms());
            }
            inner.observe(
                "refresh session TTLs",
                refresh.query_async(&mut connection).await,
            )?
        };
        let mut refreshed = refreshed.into_iter();
        for (id, json, written) in batch {
            if *written && refreshed.next() == Some(1) {
                continue;
            }
            let deleted: i64 = inner.observe(
                "rewrite session",
                REVIVE
                    .key(inner.keys.session(id))
                    .key(inner.keys.tombstone(id))
                    .arg(&**json)
                    .arg(inner.ttl_ms())
                    .invoke_async(&mut connection)
                    .await,
            )?;
            if deleted == 1 {
                inner.held.remove(id);
                manager.close_deleted_elsewhere(id);
            } else if let Some(held) = inner.held.get(id) {
                held.written.store(true, Ordering::Relaxed);
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
        if inner.observe("delete session (retry)", deleted).is_err() {
            for (id, held) in &batch[done..] {
                inner.queue_delete(id.clone(), *held);
            }
            return;
        }
    }
}
