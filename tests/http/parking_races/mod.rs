//! Parking under races, through real HTTP: exact counts under concurrent
//! restores and evictions and a DELETE racing a restore
//! (`conservation`); the client quota and bound sessions under parking,
//! the idle timeout and the maximum lifetime across parks, refused
//! restores, and a long call under `park_after` of 1 ms (`limits`).
//!
//! Most helpers are `parking.rs`'s.

mod conservation;
mod limits;

use crate::common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{TestServer, eventually};
use mcp_bounded_session::{BoundedSessionManagerBuilder, MemorySessionStore};
use reqwest::StatusCode;
use rmcp::transport::streamable_http_server::session::SessionId;
use serde_json::json;
use tokio::time::Instant;

pub(crate) use crate::parking::{echo, loopback, racing_echo};

/// A server of `cap` slots whose manager (from `build`) parks in a fresh
/// store of `max_parked` entries, the same store as rmcp's.
async fn probe_server(
    cap: usize,
    max_parked: usize,
    build: impl FnOnce(BoundedSessionManagerBuilder) -> BoundedSessionManagerBuilder,
) -> (TestServer, MemorySessionStore) {
    crate::parking::server_of(cap, max_parked, |builder, _| build(builder)).await
}

fn sid(id: &str) -> SessionId {
    SessionId::from(id)
}

/// A `count` call (`steps` steps, `delay_ms` apart) in `session`: its
/// status and whether its result arrived.
async fn count(
    client: &common::Client,
    session: &str,
    id: u64,
    steps: u64,
    delay_ms: u64,
) -> (StatusCode, bool) {
    let (status, messages) = client
        .request(
            session,
            json!({ "jsonrpc": "2.0", "id": id, "method": "tools/call",
                    "params": { "name": "count",
                                "arguments": { "steps": steps, "delay_ms": delay_ms } } }),
        )
        .await;
    let done = messages.iter().any(|m| {
        m["id"] == json!(id)
            && m["result"]["content"][0]["text"] == format!("counted to {steps}").as_str()
    });
    (status, done)
}
