//! Events, stores, servers and Redis look-ups for the tests.

use std::sync::Arc;
use std::time::Duration;

use crate::common::TestServer;
use crate::common::redis_backend::Backend;
use crate::common::redis_server::connection;
use futures::StreamExt;
use mcp_bounded_session::{BoundedSessionManager, RedisStores, StoreError};
use rmcp::model::{InitializeRequestParams, ServerJsonRpcMessage};
use rmcp::transport::streamable_http_server::StreamableHttpServerConfig;
use rmcp::transport::streamable_http_server::session::store::{EventStoreError, SessionState};
use rmcp::transport::streamable_http_server::session::{EventStore, ServerSseMessage};
use serde_json::{Value, json};

/// Stores on `backend` under `prefix`.
pub async fn stores(backend: &Backend, prefix: &str, ttl: Option<Duration>) -> RedisStores {
    let mut builder = backend.builder().prefix(prefix);
    if let Some(ttl) = ttl {
        builder = builder.ttl(ttl);
    }
    builder.connect().await.expect("a Redis URL")
}

/// A session id of the shape rmcp issues (the stores refuse others),
/// numbered `n`.
pub fn session_id(n: u64) -> String {
    format!("0b7e1c2a-5f7e-4c1b-9d7e-{n:012x}")
}

pub fn init_params() -> InitializeRequestParams {
    serde_json::from_value(crate::common::initialize_body()["params"].clone()).unwrap()
}

pub fn session_state() -> SessionState {
    SessionState::new(init_params())
}

pub fn notification_json(n: usize) -> Value {
    json!({
        "jsonrpc": "2.0",
        "method": "notifications/resources/updated",
        "params": { "uri": format!("demo://test/{n}") }
    })
}

/// An event carrying notification `n`.
pub fn message(n: usize) -> ServerSseMessage {
    let mut event = ServerSseMessage::default();
    let message: ServerJsonRpcMessage = serde_json::from_value(notification_json(n)).unwrap();
    event.message = Some(Arc::new(message));
    event
}

pub fn retry(ms: u64) -> ServerSseMessage {
    let mut event = ServerSseMessage::default();
    event.retry = Some(Duration::from_millis(ms));
    event
}

/// The JSON of an event's message, if any.
pub fn json_of(event: &ServerSseMessage) -> Option<Value> {
    event
        .message
        .as_ref()
        .map(|message| serde_json::to_value(&**message).unwrap())
}

pub async fn store(store: &Arc<dyn EventStore>, stream: &str, event: &ServerSseMessage) -> String {
    store
        .store_event(stream, event)
        .await
        .unwrap_or_else(|error| panic!("store_event({stream:?}) failed: {error}"))
}

pub async fn replay(
    store: &Arc<dyn EventStore>,
    id: &str,
) -> Result<Vec<ServerSseMessage>, EventStoreError> {
    let stream = store.replay_events_after(id).await?;
    Ok(stream.collect().await)
}

pub fn store_error(error: &EventStoreError) -> &StoreError {
    error
        .downcast_ref::<StoreError>()
        .unwrap_or_else(|| panic!("not a StoreError: {error:?}"))
}

pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

pub async fn exists(url: &str, key: &str) -> bool {
    let n: i64 = redis::cmd("EXISTS")
        .arg(key)
        .query_async(&mut connection(url).await)
        .await
        .unwrap();
    n == 1
}

pub async fn stream_len(backend: &Backend, key: &str) -> i64 {
    backend.query(redis::cmd("LLEN").arg(key)).await
}

/// A server on a Redis-backed manager (one "instance").
pub async fn instance(stores: &RedisStores, max_sessions: usize) -> TestServer {
    let manager = BoundedSessionManager::builder(max_sessions)
        .redis(stores)
        .build();
    let mut config = StreamableHttpServerConfig::default();
    config.session_store = Some(stores.session_store());
    TestServer::start_with(manager, config).await
}
