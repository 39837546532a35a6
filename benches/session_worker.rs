//! The session worker's hot paths, this crate's worker against rmcp 3.11's
//! local worker (`LocalSessionManager`), each driven through the
//! `SessionManager` trait and the session's transport exactly as rmcp's
//! `StreamableHttpService` drives them:
//!
//! - `sse_send`: messages from the handler (`Transport::send`) to a request's
//!   SSE stream read by another task; throughput in messages per second;
//! - `resume_replay`: `resume` with a `Last-Event-ID` that replays 16 kept
//!   events, and reading them.
//!
//! ```text
//! cargo bench --bench session_worker
//! ```

mod common;

use std::time::{Duration, Instant};

use common::runtime;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use futures::StreamExt;
use mcp_bounded_session::{BoundedSessionManager, SessionConfig};
use rmcp::model::{ClientJsonRpcMessage, ServerJsonRpcMessage};
use rmcp::transport::Transport;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::session::{SessionId, SessionManager};
use serde_json::json;

const REPLAYED: u32 = 16;

fn client(value: serde_json::Value) -> ClientJsonRpcMessage {
    serde_json::from_value(value).expect("client message")
}

fn server(value: serde_json::Value) -> ServerJsonRpcMessage {
    serde_json::from_value(value).expect("server message")
}

fn progress(n: u64) -> ServerJsonRpcMessage {
    server(json!({
        "jsonrpc": "2.0", "method": "notifications/progress",
        "params": { "progressToken": "bench", "progress": n }
    }))
}

fn tool_call(id: u64) -> ClientJsonRpcMessage {
    client(json!({
        "jsonrpc": "2.0", "id": id, "method": "tools/call",
        "params": { "name": "work", "arguments": {}, "_meta": { "progressToken": "bench" } }
    }))
}

/// A session that has done its handshake, with the test playing the MCP
/// handler on its transport.
async fn initialized<M: SessionManager>(manager: &M) -> (SessionId, M::Transport) {
    let (id, mut transport) = manager.create_session().await.unwrap();
    let initialize = client(json!({
        "jsonrpc": "2.0", "id": 0, "method": "initialize",
        "params": {
            "protocolVersion": "2025-06-18", "capabilities": {},
            "clientInfo": { "name": "bench", "version": "0" }
        }
    }));
    let handler = async {
        transport.receive().await.expect("initialize");
        let answer = server(json!({
            "jsonrpc": "2.0", "id": 0,
            "result": {
                "protocolVersion": "2025-06-18", "capabilities": {},
                "serverInfo": { "name": "bench", "version": "0" }
            }
        }));
        let _ = transport.send(answer).await;
    };
    let (answered, ()) = tokio::join!(manager.initialize_session(&id, initialize), handler);
    answered.unwrap();
    let initialized = client(json!({ "jsonrpc": "2.0", "method": "notifications/initialized" }));
    manager.accept_message(&id, initialized).await.unwrap();
    transport.receive().await.expect("initialized");
    (id, transport)
}

/// Opens a request stream (a tool call with a progress token) and has the
/// handler take the request.
async fn open_call<M: SessionManager>(
    manager: &M,
    id: &SessionId,
    transport: &mut M::Transport,
    request_id: u64,
) -> impl futures::Stream<Item = rmcp::transport::streamable_http_server::session::ServerSseMessage>
+ Send
+ Unpin
+ 'static {
    let stream = manager
        .create_stream(id, tool_call(request_id))
        .await
        .unwrap();
    transport.receive().await.expect("the call");
    Box::pin(stream)
}

fn sse_send_on<M: SessionManager>(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    rt: &tokio::runtime::Runtime,
    name: &str,
    manager: M,
) where
    M::Transport: Send + 'static,
{
    let manager = std::sync::Arc::new(manager);
    let (id, transport) = rt.block_on(initialized(&*manager));
    let mut transport = Some(transport);
    let mut next_request = 1;
    group.bench_function(BenchmarkId::new(name, "progress"), |b| {
        b.iter_custom(|iters| {
            let (manager, id) = (manager.clone(), id.clone());
            let mut handler = transport.take().expect("the transport is returned");
            let request_id = next_request;
            next_request += 1;
            // Handler and reader on runtime workers, as in a server.
            let (handler, elapsed) = rt
                .block_on(rt.spawn(async move {
                    let mut stream = open_call(&*manager, &id, &mut handler, request_id).await;
                    // Priming event first (both workers send one).
                    stream.next().await.expect("priming");
                    let reader = tokio::spawn(async move {
                        for _ in 0..iters {
                            stream.next().await.expect("every message arrives");
                        }
                        stream
                    });
                    // Built once: the bench measures the worker, not serde.
                    let message = progress(1);
                    let start = Instant::now();
                    for _ in 0..iters {
                        handler.send(message.clone()).await.unwrap();
                    }
                    let stream = reader.await.unwrap();
                    let elapsed = start.elapsed();
                    drop(stream);
                    (handler, elapsed)
                }))
                .unwrap();
            transport = Some(handler);
            elapsed
        });
    });
}

fn sse_send(c: &mut Criterion) {
    let rt = runtime();
    let mut group = c.benchmark_group("sse_send");
    group
        .throughput(Throughput::Elements(1))
        .sample_size(30)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    sse_send_on(
        &mut group,
        &rt,
        "bounded",
        BoundedSessionManager::new(SessionConfig::default(), 16),
    );
    sse_send_on(
        &mut group,
        &rt,
        "rmcp_local",
        LocalSessionManager::default(),
    );
    group.finish();
}

fn resume_replay_on<M: SessionManager>(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    rt: &tokio::runtime::Runtime,
    name: &str,
    manager: M,
) {
    let manager = std::sync::Arc::new(manager);
    let (id, mut transport) = rt.block_on(initialized(&*manager));
    rt.block_on(async {
        let stream = open_call(&*manager, &id, &mut transport, 1).await;
        // The client's connection breaks; 16 messages are kept meanwhile.
        drop(stream);
        for n in 1..=u64::from(REPLAYED) {
            transport.send(progress(n)).await.unwrap();
        }
    });
    // Seen: the priming event only (`0/0` for both workers).
    let last_event_id = "0/0".to_owned();
    group.bench_function(BenchmarkId::new(name, REPLAYED), |b| {
        b.iter_custom(|iters| {
            let (manager, id, last_event_id) = (manager.clone(), id.clone(), last_event_id.clone());
            // On a runtime worker, as rmcp's service runs a GET.
            rt.block_on(rt.spawn(async move {
                let start = Instant::now();
                for _ in 0..iters {
                    let stream = manager.resume(&id, last_event_id.clone()).await.unwrap();
                    let mut stream = Box::pin(stream);
                    for _ in 0..REPLAYED {
                        stream.next().await.expect("a kept event");
                    }
                }
                start.elapsed()
            }))
            .unwrap()
        });
    });
    drop(transport);
}

fn resume_replay(c: &mut Criterion) {
    let rt = runtime();
    let mut group = c.benchmark_group("resume_replay");
    group
        .sample_size(30)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    resume_replay_on(
        &mut group,
        &rt,
        "bounded",
        BoundedSessionManager::new(SessionConfig::default(), 16),
    );
    resume_replay_on(
        &mut group,
        &rt,
        "rmcp_local",
        LocalSessionManager::default(),
    );
    group.finish();
}

criterion_group!(benches, sse_send, resume_replay);
criterion_main!(benches);
