//! Parking under races, through real HTTP: exact counts under concurrent
//! restores and evictions and a DELETE racing a restore
//! (`conservation`); the client quota and bound sessions under parking,
//! the idle timeout and the maximum lifetime across parks, refused
//! restores, and a long call under `park_after` of 1 ms (`limits`).
//!
//! (`parking.rs`'s helpers are private to it: the few needed are repeated
//! here, with the cap as a parameter.)

mod conservation;
mod limits;

use crate::common;

use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{TestServer, eventually};
use mcp_bounded_session::{
    BoundedSessionManager, BoundedSessionManagerBuilder, MemorySessionStore,
};
use reqwest::StatusCode;
use rmcp::transport::streamable_http_server::StreamableHttpServerConfig;
use rmcp::transport::streamable_http_server::session::SessionId;
use serde_json::json;
use tokio::time::Instant;

/// A server of `cap` slots whose manager (from `build`) parks in a fresh
/// store of `max_parked` entries, the same store as rmcp's.
async fn probe_server(
    cap: usize,
    max_parked: usize,
    build: impl FnOnce(BoundedSessionManagerBuilder) -> BoundedSessionManagerBuilder,
) -> (TestServer, MemorySessionStore) {
    let store = MemorySessionStore::builder().max_parked(max_parked).build();
    let manager = build(BoundedSessionManager::builder(cap))
        .park_in(&store)
        .build();
    let mut config = StreamableHttpServerConfig::default();
    config.session_store = Some(Arc::new(store.clone()));
    (TestServer::start_with(manager, config).await, store)
}

fn loopback(n: u8) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 0, n)
}

fn sid(id: &str) -> SessionId {
    SessionId::from(id)
}

/// An `echo` call in `session`: its status (a `200` checked to be the
/// tool's answer, not a new `initialize`'s).
async fn echo(client: &common::Client, session: &str, id: u64) -> StatusCode {
    let (status, messages) = client
        .request(
            session,
            json!({ "jsonrpc": "2.0", "id": id, "method": "tools/call",
                    "params": { "name": "echo", "arguments": { "text": "hi" } } }),
        )
        .await;
    if status == StatusCode::OK {
        assert!(
            messages
                .iter()
                .any(|m| m["id"] == json!(id) && m["result"]["content"][0]["text"] == "hi"),
            "{messages:?}"
        );
    }
    status
}

/// An `echo` call in `session` whose answer may be cut short (a DELETE
/// racing it ends its stream): its status and whether the tool answered.
async fn racing_echo(client: &common::Client, session: &str, id: u64) -> (StatusCode, bool) {
    let (status, messages) = client
        .request(
            session,
            json!({ "jsonrpc": "2.0", "id": id, "method": "tools/call",
                    "params": { "name": "echo", "arguments": { "text": "hi" } } }),
        )
        .await;
    let answered = messages
        .iter()
        .any(|m| m["id"] == json!(id) && m["result"]["content"][0]["text"] == "hi");
    (status, answered)
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
