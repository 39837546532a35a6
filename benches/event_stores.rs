//! The event stores' two operations, as rmcp calls them: `store_event`
//! (one event, a tool's progress notification) and `replay_events_after`
//! (the last 16 events of a stream), for `RedisEventStore` against the
//! Redis on 127.0.0.1:6379 (beside a bare `PING`, the round trip under
//! both) and for `MemoryEventStore`; first the Redis memory a session and
//! an event take (`MEMORY USAGE`).
//!
//! Needs the `redis` feature and a Redis server on 127.0.0.1:6379
//! (`REDIS_URL` to use another):
//!
//! ```text
//! cargo bench --bench event_stores --features redis
//! ```

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use mcp_bounded_session::{MemoryEventStore, RedisStores};
use rmcp::model::{
    NumberOrString, ProgressNotification, ProgressNotificationParam, ProgressToken,
    ServerJsonRpcMessage, ServerNotification,
};
use rmcp::transport::streamable_http_server::session::EventStore;
use rmcp::transport::streamable_http_server::session::ServerSseMessage;
use rmcp::transport::streamable_http_server::session::store::SessionState;

/// Events a replay returns.
const REPLAYED: usize = 16;

fn url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/".to_owned())
}

fn prefix() -> String {
    format!("bench:event_stores:{}:", std::process::id())
}

/// A progress notification, the most frequent event of a tool call.
fn progress(step: u32) -> ServerSseMessage {
    let notification = ServerNotification::ProgressNotification(ProgressNotification::new(
        ProgressNotificationParam::new(ProgressToken(NumberOrString::Number(7)), f64::from(step))
            .with_total(100.0)
            .with_message("working"),
    ));
    let mut event = ServerSseMessage::default();
    event.message = Some(Arc::new(ServerJsonRpcMessage::notification(notification)));
    event
}

async fn redis_stores() -> RedisStores {
    RedisStores::builder(url())
        .prefix(prefix())
        .connect()
        .await
        .expect("a Redis URL")
}

/// Stores `REPLAYED + 1` events on `stream` and returns the first id: a
/// replay after it returns the other `REPLAYED`.
async fn fill(store: &dyn EventStore, stream: &str) -> String {
    let first = store.store_event(stream, &progress(0)).await.unwrap();
    for step in 1..=REPLAYED as u32 {
        store.store_event(stream, &progress(step)).await.unwrap();
    }
    first
}

fn bench_store(
    c: &mut Criterion,
    name: &str,
    store: Arc<dyn EventStore>,
    rt: &tokio::runtime::Runtime,
) {
    let mut group = c.benchmark_group("event_store");
    group
        .sample_size(30)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    let event = progress(1);
    group.bench_function(format!("{name}/store_event"), |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                // A stream per session, as the manager names them.
                let stream = "0b7e1c2a-5f7e-4c1b-9d7e-1c2a5f7e4c1b:common";
                let start = Instant::now();
                for _ in 0..iters {
                    store.store_event(stream, &event).await.unwrap();
                }
                start.elapsed()
            })
        });
    });
    let first = rt.block_on(fill(&*store, "replayed-stream"));
    group.bench_function(format!("{name}/replay_events_after_16"), |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                use futures::StreamExt;
                let start = Instant::now();
                for _ in 0..iters {
                    let replay = store.replay_events_after(&first).await.unwrap();
                    assert_eq!(replay.count().await, REPLAYED);
                }
                start.elapsed()
            })
        });
    });
    group.finish();
}

async fn memory_usage(connection: &mut redis::aio::MultiplexedConnection, key: &str) -> i64 {
    redis::cmd("MEMORY")
        .arg("USAGE")
        .arg(key)
        .arg("SAMPLES")
        .arg(0)
        .query_async::<Option<i64>>(connection)
        .await
        .unwrap()
        .unwrap_or(0)
}

/// Bytes Redis holds for one session's value and per kept event.
async fn report_memory(stores: &RedisStores) {
    let prefix = prefix();
    let client = redis::Client::open(url()).unwrap();
    let mut connection = client.get_multiplexed_async_connection().await.unwrap();
    let session = "0b7e1c2a-5f7e-4c1b-9d7e-1c2a5f7e4c1b";
    let params: rmcp::model::InitializeRequestParams = serde_json::from_value(serde_json::json!({
        "protocolVersion": "2025-11-25",
        "capabilities": {},
        "clientInfo": {"name": "bench-client", "version": "1.0.0"}
    }))
    .unwrap();
    stores
        .session_store()
        .store(session, &SessionState::new(params))
        .await
        .unwrap();
    let session_bytes =
        memory_usage(&mut connection, &format!("{prefix}{{{session}}}:session")).await;
    let events = stores.event_store();
    let suffix = "memory";
    let stream = format!("{session}:{suffix}");
    let mut sizes = Vec::new();
    for count in 1..=64u32 {
        events.store_event(&stream, &progress(count)).await.unwrap();
        if [1, 16, 64].contains(&count) {
            sizes.push((
                count,
                memory_usage(
                    &mut connection,
                    &format!("{prefix}{{{session}}}:stream:{suffix}"),
                )
                .await,
            ));
        }
    }
    let index_bytes =
        memory_usage(&mut connection, &format!("{prefix}{{{session}}}:streams")).await;
    println!(
        "redis memory: session value {session_bytes} B (initialize params of a minimal client)"
    );
    for (count, bytes) in &sizes {
        println!("redis memory: stream of {count} progress events {bytes} B");
    }
    let per_event = (sizes[2].1 - sizes[1].1) as f64 / 48.0;
    println!(
        "redis memory: {per_event:.1} B per progress event (between 16 and 64 events); \
         session's stream index {index_bytes} B"
    );
}

async fn clean() {
    let client = redis::Client::open(url()).unwrap();
    let mut connection = client.get_multiplexed_async_connection().await.unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{}*", prefix()))
        .query_async(&mut connection)
        .await
        .unwrap();
    if !keys.is_empty() {
        let _: () = redis::cmd("DEL")
            .arg(keys)
            .query_async(&mut connection)
            .await
            .unwrap();
    }
}

/// One `PING` through redis-rs: the round trip every Redis call pays, the
/// floor under `store_event` and `replay_events_after`.
fn bench_ping(c: &mut Criterion, rt: &tokio::runtime::Runtime) {
    let client = redis::Client::open(url()).unwrap();
    let mut connection = rt
        .block_on(client.get_multiplexed_async_connection())
        .unwrap();
    let mut group = c.benchmark_group("event_store");
    group
        .sample_size(30)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    group.bench_function("redis/ping_round_trip", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    let _: String = redis::cmd("PING")
                        .query_async(&mut connection)
                        .await
                        .unwrap();
                }
                start.elapsed()
            })
        });
    });
    group.finish();
}

fn event_stores(c: &mut Criterion) {
    let rt = common::runtime();
    let stores = rt.block_on(redis_stores());
    rt.block_on(report_memory(&stores));
    bench_ping(c, &rt);
    bench_store(c, "redis", stores.event_store(), &rt);
    bench_store(c, "memory", Arc::new(MemoryEventStore::default()), &rt);
    rt.block_on(clean());
}

criterion_group!(benches, event_stores);
criterion_main!(benches);
