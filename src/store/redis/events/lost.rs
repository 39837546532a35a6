//! Requests lost with their instance: a client resuming, on another
//! instance, the stream of a request whose instance stopped without
//! answering it (a crash, or a drain that cut it) gets an answer saying
//! so, and can send the request again, rather than resuming forever.
//!
//! # Invariants kept here
//!
//! - While a request's answer is not stored, its session's `requests` hash
//!   (`keys`) records, under its stream's suffix, the instance serving it
//!   and its JSON-RPC id; the append that stores the answer removes the
//!   record in the same script (`append`). A tool call whose events are
//!   all stored in one append (a quick one) writes no record at all.
//! - Each instance keeps a liveness key (`<prefix>{<instance>}:live`)
//!   with a TTL of [`request_lost_after`], written again every third of
//!   it, and deletes it when a drain ends. So within
//!   `request_lost_after` of a crash (at once after a drain) the key is
//!   gone, and only then.
//! - Only a replay looks (no cost on the way of a call): a replay of a
//!   stream whose request is recorded, by an instance whose key is gone,
//!   appends the "request lost" error for the recorded id as the stream's
//!   last event, and replays it. The append is conditional on the record
//!   still reading as it did (one script): an answer stored meanwhile, or
//!   another replay's error, wins, so two replays never both append it.
//!
//! A live instance is never taken for a lost one while Redis works: its
//! key is written every third of its TTL. An instance cut off from Redis
//! for longer than `request_lost_after` is taken for lost, and its
//! requests' answers, if it gives them, come after the error (the client
//! took the error and moved on). The liveness key is per `RedisStores`:
//! managers sharing one set of stores in one process share it, and a
//! drain of one retires it for all.
//!
//! [`request_lost_after`]: crate::RedisStoresBuilder::request_lost_after

use std::sync::{Arc, Weak};
use std::time::Duration;

use rmcp::model::{ErrorCode, ErrorData, JsonRpcError, JsonRpcMessage, RequestId};
use rmcp::transport::streamable_http_server::session::ServerSseMessage;
use tokio_util::sync::CancellationToken;

use super::super::Inner;
use super::RedisEventStore;
use super::append::Request;
use crate::store::StoreError;

/// The default of [`crate::RedisStoresBuilder::request_lost_after`].
pub(crate) const DEFAULT_LOST_AFTER: Duration = Duration::from_secs(10);

/// The `reason` in the lost request's error data.
pub(crate) const LOST_REASON: &str = "request_lost";

/// The field of a session's request stream in its `requests` hash (its
/// suffix), or `None` for a standalone or stateless stream.
pub(super) fn request_stream_field(stream: &str) -> Option<&str> {
    let (session, suffix) = stream.split_once(':')?;
    (crate::store::is_session_id(session) && suffix != "common").then_some(suffix)
}

/// What the `requests` hash records for a request served here.
pub(super) fn record(instance: &str, id: &RequestId) -> Result<String, StoreError> {
    Ok(format!("{instance} {}", serde_json::to_string(id)?))
}

/// The error a client gets for request `id`, lost with its instance.
fn lost_answer(id: RequestId) -> ServerSseMessage {
    let error = ErrorData::new(
        ErrorCode::INTERNAL_ERROR,
        "request lost: the server instance serving it stopped before answering; send it again",
        Some(serde_json::json!({ "reason": LOST_REASON })),
    );
    let mut event = ServerSseMessage::default();
    event.message = Some(Arc::new(JsonRpcMessage::Error(JsonRpcError::new(
        Some(id),
        error,
    ))));
    event
}

impl RedisEventStore {
    /// The answer that request stream `stream`'s request was lost, stored
    /// as its last event, if `record` (its record as a replay read it)
    /// names an instance whose liveness key is gone; `None` if that
    /// instance lives, or the stream got an answer meanwhile.
    pub(super) async fn answer_if_lost(
        &self,
        stream: &str,
        record: &str,
    ) -> Result<Option<ServerSseMessage>, StoreError> {
        let inner = &self.inner;
        let Some((instance, id)) = record.split_once(' ') else {
            return Ok(None);
        };
        if instance == inner.instance {
            return Ok(None);
        }
        let Ok(id) = serde_json::from_str::<RequestId>(id) else {
            return Ok(None);
        };
        let live_key = inner.keys.live(instance);
        let mut exists = redis::cmd("EXISTS");
        exists.arg(&live_key);
        let mut connection = inner.connection.clone();
        let alive: bool = inner
            .call(
                "check instance liveness",
                inner.key_slot(&live_key),
                exists.query_async(&mut connection),
            )
            .await?;
        if alive {
            return Ok(None);
        }
        let mut answer = lost_answer(id);
        let Some(ids) = self
            .append_all(
                stream,
                std::slice::from_ref(&answer),
                Request::LostAnswer { expected: record },
            )
            .await?
        else {
            return Ok(None);
        };
        answer.event_id = ids.into_iter().next();
        tracing::info!(
            stream,
            instance,
            "request lost with its instance: answered so"
        );
        Ok(Some(answer))
    }
}

impl Inner {
    /// Writes this instance's liveness key, unless retired; whether it
    /// did. Holds the liveness lock while Redis works, so a retirement
    /// cannot come between and have its delete undone.
    async fn refresh_liveness(&self) -> Result<bool, StoreError> {
        let retired = self.liveness.lock().await;
        if *retired {
            return Ok(false);
        }
        let key = self.keys.live(&self.instance);
        let mut set = redis::cmd("SET");
        set.arg(&key)
            .arg("1")
            .arg("PX")
            .arg(u64::try_from(self.lost_after.as_millis()).unwrap_or(u64::MAX));
        let mut connection = self.connection.clone();
        self.call(
            "refresh instance liveness",
            self.key_slot(&key),
            set.query_async::<()>(&mut connection),
        )
        .await?;
        Ok(true)
    }

    /// Stops the liveness key's refresh and deletes it: from now on, the
    /// requests this instance did not answer count as lost (a drain's
    /// end).
    ///
    /// # Cancel safety
    ///
    /// Dropped while Redis works, the key may be left to expire.
    pub(crate) async fn retire(&self) {
        let mut retired = self.liveness.lock().await;
        *retired = true;
        let key = self.keys.live(&self.instance);
        let mut delete = redis::cmd("DEL");
        delete.arg(&key);
        let mut connection = self.connection.clone();
        let _ = self
            .call(
                "delete instance liveness",
                self.key_slot(&key),
                delete.query_async::<()>(&mut connection),
            )
            .await;
    }
}

/// Writes the liveness key every third of its TTL until the stores are
/// dropped or retired; after a failed write, again a tenth of the TTL
/// later.
pub(in super::super) async fn keep_alive(inner: Weak<Inner>, shutdown: CancellationToken) {
    loop {
        let Some(strong) = inner.upgrade() else {
            return;
        };
        let next = match strong.refresh_liveness().await {
            Ok(true) => strong.lost_after / 3,
            Ok(false) => return,
            Err(_) => strong.lost_after / 10,
        };
        drop(strong);
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(next) => {}
        }
    }
}
