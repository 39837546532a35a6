//! The upkeep: a background round, every upkeep interval, that keeps the
//! stored copies of this instance's sessions alive and makes Redis catch up
//! after an outage.
//!
//! Each round
//! 1. sends the DELETEs that could not reach Redis when they came;
//! 2. forgets the sessions this instance no longer holds (closed, evicted,
//!    expired here: their stored copy then lives out its TTL, so the
//!    client can still be restored on its next request);
//! 3. refreshes the TTL of the others (`PEXPIRE`, one pipelined round
//!    trip per batch);
//! 4. for each one whose key is gone (Redis lost it, or it was never
//!    written because Redis was away, or a DELETE elsewhere removed it while
//!    this instance was not subscribed): ends the local copy if its
//!    tombstone is there, else writes it again, atomically (a Lua script),
//!    so a DELETE racing the rewrite cannot be undone by it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock, Weak};

use redis::Script;
use rmcp::transport::streamable_http_server::session::SessionId;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::Inner;
use crate::store::StoreError;

/// Sessions refreshed per pipelined round trip.
const BATCH: usize = 512;

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
}

impl Held {
    pub(super) fn written(json: Arc<str>) -> Self {
        Self {
            json,
            written: AtomicBool::new(true),
        }
    }

    pub(super) fn unwritten(json: Arc<str>) -> Self {
        Self {
            json,
            written: AtomicBool::new(false),
        }
    }
}

impl Inner {
    pub(super) fn queue_delete(&self, id: SessionId) {
        self.pending_deletes.lock().push(id);
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
    let deletes = std::mem::take(&mut *inner.pending_deletes.lock());
    for (done, id) in deletes.iter().enumerate() {
        let deleted = inner.delete_everywhere(id).await;
        if inner.observe("delete session (retry)", deleted).is_err() {
            inner
                .pending_deletes
                .lock()
                .extend_from_slice(&deletes[done..]);
            return Ok(());
        }
    }
    let Some(manager) = inner.manager() else {
        return Ok(());
    };
    inner.held.retain(|id, _| manager.holds_session(id));
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
    for batch in held.chunks(BATCH) {
        let mut refresh = redis::pipe();
        for (id, _, _) in batch.iter().filter(|(_, _, written)| *written) {
            refresh
                .cmd("PEXPIRE")
                .arg(inner.keys.session(id))
                .arg(inner.ttl_ms());
        }
        let mut connection = inner.connection.clone();
        let refreshed: Vec<i64> = inner.observe(
            "refresh session TTLs",
            refresh.query_async(&mut connection).await,
        )?;
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
