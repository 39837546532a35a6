//! End to end over loopback HTTP, through the real `StreamableHttpService`,
//! for this crate, rmcp 3.11's `LocalSessionManager` and `mcp-session` 0.2
//! (on rmcp 1.x's service), one after the other in one run:
//!
//! - with 10,000 idle initialized sessions live, 32 concurrent clients each
//!   loop over a whole session (initialize, notifications/initialized, one
//!   `tools/call`, DELETE): sessions per second;
//! - then 32 concurrent clients, each on one of the live sessions, loop over
//!   `tools/call`: tool calls per second.
//!
//! Server and clients share the machine's two cores, as in any loopback
//! test; compare the managers within one run. Not a criterion bench: each
//! phase is a fixed-duration load, reported as a rate. Each manager is
//! measured in its own child process, `HTTP_LOAD_ROUNDS` times (default 3),
//! in an order rotated every round; the medians are compared.
//!
//! With `--features redis`, a fourth contestant, `bounded_redis`: this
//! crate with its Redis stores on (sessions stored, every event stored,
//! DELETEs published) against the Redis on 127.0.0.1:6379, for the cost of
//! the stores (the Redis server's own CPU is not in the CPU figures).
//!
//! With `--stateless`, instead: protocol 2026-07-28 tool calls without
//! sessions, with this crate's request admission off and on (see
//! `common/stateless_load.rs`).
//!
//! ```text
//! cargo bench --bench http_load
//! cargo bench --bench http_load -- --stateless
//! HTTP_LOAD_SECS=10 HTTP_LOAD_LIVE=1000 HTTP_LOAD_ROUNDS=5 cargo bench --bench http_load
//! cargo bench --bench http_load --features redis
//! ```

mod common;

#[path = "../examples/server/handler.rs"]
#[allow(dead_code, reason = "the bench calls only `echo`")]
mod handler;
#[path = "common/stateless.rs"]
mod stateless;
#[path = "common/stateless_load.rs"]
mod stateless_load;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use mcp_bounded_session::{BoundedSessionLayer, BoundedSessionManager, SessionConfig};
use rmcp::transport::streamable_http_server::session::SessionManager;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use tower_layer::Layer;

const CLIENTS: usize = 32;
const PROTOCOL_VERSION: &str = "2025-06-18";

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(default)
}

/// An rmcp 1.x handler with the same `echo` tool as the example server, for
/// `mcp-session` (built on rmcp 1.x).
#[derive(Clone)]
struct EchoV1;

impl rmcp_v1::ServerHandler for EchoV1 {
    fn get_info(&self) -> rmcp_v1::model::ServerInfo {
        let mut info = rmcp_v1::model::ServerInfo::default();
        info.capabilities = rmcp_v1::model::ServerCapabilities::builder()
            .enable_tools()
            .build();
        info
    }

    async fn call_tool(
        &self,
        request: rmcp_v1::model::CallToolRequestParams,
        _context: rmcp_v1::service::RequestContext<rmcp_v1::RoleServer>,
    ) -> Result<rmcp_v1::model::CallToolResult, rmcp_v1::ErrorData> {
        let text = request
            .arguments
            .as_ref()
            .and_then(|arguments| arguments.get("text"))
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        Ok(rmcp_v1::model::CallToolResult::success(vec![
            rmcp_v1::model::Content::text(text),
        ]))
    }
}

/// Serves `router` on 127.0.0.1:0 until `shutdown`; returns the MCP URL.
async fn serve(router: axum::Router, shutdown: CancellationToken) -> String {
    use axum::serve::ListenerExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/mcp", listener.local_addr().unwrap());
    // An SSE answer goes out in several small writes; without TCP_NODELAY,
    // Nagle's algorithm and the client's delayed ACK add ~40 ms to each one
    // and every manager measures the same 40 ms.
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    tokio::spawn(async move {
        axum::serve(listener, router)
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await
            .unwrap();
    });
    url
}

async fn serve_v3<M: SessionManager>(
    manager: Arc<M>,
    config: StreamableHttpServerConfig,
    shutdown: CancellationToken,
) -> String {
    let service = StreamableHttpService::new(
        || Ok(handler::DemoServer::new()),
        manager,
        config.with_cancellation_token(shutdown.child_token()),
    );
    let router =
        axum::Router::new().nest_service("/mcp", BoundedSessionLayer::default().layer(service));
    serve(router, shutdown).await
}

async fn serve_mcp_session(shutdown: CancellationToken, cap: usize) -> String {
    use rmcp_v1::transport::streamable_http_server as v1;
    let manager = Arc::new(mcp_session::BoundedSessionManager::new(
        mcp_session::SessionConfig::default(),
        cap,
    ));
    let mut config = v1::StreamableHttpServerConfig::default();
    config.cancellation_token = shutdown.child_token();
    let service = v1::StreamableHttpService::new(|| Ok(EchoV1), manager, config);
    let router = axum::Router::new().nest_service("/mcp", service);
    serve(router, shutdown).await
}

/// A raw MCP client over one shared connection pool.
#[derive(Clone)]
struct Client {
    http: reqwest::Client,
    url: String,
}

impl Client {
    async fn post(&self, session: Option<&str>, body: &Value) -> (Option<String>, String) {
        let mut request = self
            .http
            .post(&self.url)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .header("mcp-protocol-version", PROTOCOL_VERSION)
            .json(body);
        if let Some(session) = session {
            request = request.header("mcp-session-id", session);
        }
        let response = request.send().await.expect("server reachable");
        assert!(
            response.status().is_success(),
            "{} for {body}",
            response.status()
        );
        let session = response
            .headers()
            .get("mcp-session-id")
            .map(|value| value.to_str().unwrap().to_owned());
        (session, response.text().await.unwrap())
    }

    async fn initialize(&self) -> String {
        let (session, body) = self
            .post(
                None,
                &json!({
                    "jsonrpc": "2.0", "id": 0, "method": "initialize",
                    "params": {
                        "protocolVersion": PROTOCOL_VERSION, "capabilities": {},
                        "clientInfo": { "name": "http_load", "version": "1" }
                    }
                }),
            )
            .await;
        assert!(body.contains("serverInfo"), "{body}");
        let session = session.expect("a session id");
        self.post(
            Some(&session),
            &json!({ "jsonrpc": "2.0", "method": "notifications/initialized" }),
        )
        .await;
        session
    }

    async fn echo(&self, session: &str, id: u64) {
        let (_, body) = self
            .post(
                Some(session),
                &json!({
                    "jsonrpc": "2.0", "id": id, "method": "tools/call",
                    "params": { "name": "echo", "arguments": { "text": "ping" } }
                }),
            )
            .await;
        assert!(body.contains("ping"), "{body}");
    }

    async fn delete(&self, session: &str) {
        let status = self
            .http
            .delete(&self.url)
            .header("mcp-session-id", session)
            .header("mcp-protocol-version", PROTOCOL_VERSION)
            .send()
            .await
            .unwrap()
            .status();
        assert!(status.is_success(), "DELETE: {status}");
    }
}

/// The CPU time this process has used so far (user + system, all threads),
/// from `/proc/self/stat`, in USER_HZ ticks (100 per second on Linux).
fn process_cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("Linux /proc");
    // The command name may hold spaces: count fields from its closing ')'.
    let after_name = &stat[stat.rfind(')').expect("stat format") + 2..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // utime and stime are the 14th and 15th fields; the state, 3rd, is [0].
    let ticks: u64 =
        fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime");
    Duration::from_millis(ticks * 10)
}

/// A phase's outcome: completed repetitions per second, and this process's
/// CPU time per repetition (clients and server together: the same client
/// work for every manager, and immune to other processes' load).
struct Rate {
    per_sec: f64,
    cpu_per_op: Duration,
}

/// Runs `CLIENTS` tasks, each repeating `work` until `duration` has passed.
async fn rate<F, Fut>(duration: Duration, work: F) -> Rate
where
    F: Fn(usize, u64) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = ()> + Send,
{
    let done = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicU64::new(0));
    let cpu_before = process_cpu();
    let start = Instant::now();
    let tasks: Vec<_> = (0..CLIENTS)
        .map(|client| {
            let (done, count, work) = (done.clone(), count.clone(), work.clone());
            tokio::spawn(async move {
                let mut round = 0;
                while !done.load(Ordering::Relaxed) {
                    round += 1;
                    work(client, round).await;
                    count.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    tokio::time::sleep(duration).await;
    done.store(true, Ordering::Relaxed);
    for task in tasks {
        task.await.unwrap();
    }
    let elapsed = start.elapsed();
    let count = count.load(Ordering::Relaxed);
    Rate {
        per_sec: count as f64 / elapsed.as_secs_f64(),
        cpu_per_op: (process_cpu() - cpu_before) / u32::try_from(count.max(1)).unwrap_or(u32::MAX),
    }
}

struct Measured {
    sessions: Rate,
    calls: Rate,
}

/// Reads the manager's count of eviction-queue pushes (this crate's only).
type Pushes = Arc<dyn Fn() -> u64 + Send + Sync>;

async fn measure(url: String, live: usize, duration: Duration, pushes: Option<Pushes>) -> Measured {
    let client = Client {
        http: reqwest::Client::builder()
            .pool_max_idle_per_host(CLIENTS)
            .build()
            .unwrap(),
        url,
    };
    // Fill: `live` idle initialized sessions, created by CLIENTS at once.
    let sessions = Arc::new(tokio::sync::Mutex::new(Vec::with_capacity(live)));
    let per_client = live.div_ceil(CLIENTS);
    let fillers: Vec<_> = (0..CLIENTS)
        .map(|n| {
            let (client, sessions) = (client.clone(), sessions.clone());
            let count = per_client.min(live.saturating_sub(n * per_client));
            tokio::spawn(async move {
                for _ in 0..count {
                    let session = client.initialize().await;
                    sessions.lock().await.push(session);
                }
            })
        })
        .collect();
    for filler in fillers {
        filler.await.unwrap();
    }
    let sessions = Arc::new(std::mem::take(&mut *sessions.lock().await));
    assert_eq!(sessions.len(), live);

    let session_rate = rate(duration, {
        let client = client.clone();
        move |_, _| {
            let client = client.clone();
            async move {
                let session = client.initialize().await;
                client.echo(&session, 1).await;
                client.delete(&session).await;
            }
        }
    })
    .await;
    let pushed_before = pushes.as_ref().map(|pushes| pushes());
    let call_rate = rate(duration, {
        let (client, sessions) = (client.clone(), sessions.clone());
        move |n, round| {
            let (client, sessions) = (client.clone(), sessions.clone());
            async move { client.echo(&sessions[n * 7 % sessions.len()], round).await }
        }
    })
    .await;
    if let (Some(pushes), Some(before)) = (&pushes, pushed_before) {
        // How often a tool call moved its session to the tail of the
        // eviction order. Above, each client calls on its own session (as
        // real clients do), which stays near the tail; here the calls go
        // round all the live sessions, each called once every `live` calls.
        let own = (pushes() - before) as f64 / (call_rate.per_sec * duration.as_secs_f64());
        let spread_duration = Duration::from_secs(2);
        let before = pushes();
        let spread_rate = rate(spread_duration, {
            let (client, sessions) = (client.clone(), sessions.clone());
            move |n, round| {
                let (client, sessions) = (client.clone(), sessions.clone());
                let index = (round as usize * CLIENTS + n) % sessions.len();
                async move { client.echo(&sessions[index], round).await }
            }
        })
        .await;
        let spread =
            (pushes() - before) as f64 / (spread_rate.per_sec * spread_duration.as_secs_f64());
        println!("pushes per tool call: own session {own:.3}, round all sessions {spread:.3}");
    }
    Measured {
        sessions: session_rate,
        calls: call_rate,
    }
}

#[cfg(not(feature = "redis"))]
const MANAGERS: [&str; 3] = ["bounded", "rmcp_local", "mcp_session"];
#[cfg(feature = "redis")]
const MANAGERS: [&str; 4] = ["bounded", "rmcp_local", "mcp_session", "bounded_redis"];

/// The Redis key prefix of one measurement.
#[cfg(feature = "redis")]
fn redis_prefix() -> String {
    format!("bench:http_load:{}:", std::process::id())
}

/// Removes what a measurement left in Redis.
#[cfg(feature = "redis")]
async fn clean_redis() {
    let client = redis::Client::open("redis://127.0.0.1:6379/").unwrap();
    let mut connection = client.get_multiplexed_async_connection().await.unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{}*", redis_prefix()))
        .query_async(&mut connection)
        .await
        .unwrap();
    for chunk in keys.chunks(1_000) {
        let _: () = redis::cmd("DEL")
            .arg(chunk)
            .query_async(&mut connection)
            .await
            .unwrap();
    }
}

/// One manager, measured in this (child) process; prints one line for the
/// parent to read.
fn measure_one(name: &str, live: usize, duration: Duration) {
    // Room for the live sessions and the ones the clients create: no
    // eviction, so every manager does the same work.
    let cap = live + CLIENTS;
    let runtime = common::runtime();
    let measured = runtime.block_on(async {
        let shutdown = CancellationToken::new();
        let url = match name {
            "bounded" => {
                let manager = Arc::new(BoundedSessionManager::new(SessionConfig::default(), cap));
                let pushes: Pushes = {
                    let manager = manager.clone();
                    Arc::new(move || manager.stats().queue_pushes)
                };
                let config = StreamableHttpServerConfig::default();
                (
                    serve_v3(manager, config, shutdown.clone()).await,
                    Some(pushes),
                )
            }
            #[cfg(feature = "redis")]
            "bounded_redis" => {
                let stores = mcp_bounded_session::RedisStores::builder("redis://127.0.0.1:6379/")
                    .prefix(redis_prefix())
                    .connect()
                    .await
                    .expect("a Redis URL");
                let manager = BoundedSessionManager::builder(cap).redis(&stores).build();
                let mut config = StreamableHttpServerConfig::default();
                config.session_store = Some(stores.session_store());
                (serve_v3(manager, config, shutdown.clone()).await, None)
            }
            "rmcp_local" => (
                serve_v3(
                    Arc::new(LocalSessionManager::default()),
                    StreamableHttpServerConfig::default(),
                    shutdown.clone(),
                )
                .await,
                None,
            ),
            "mcp_session" => (serve_mcp_session(shutdown.clone(), cap).await, None),
            other => panic!("unknown manager {other:?}; expected one of {MANAGERS:?}"),
        };
        let (url, pushes) = url;
        let measured = measure(url, live, duration, pushes).await;
        shutdown.cancel();
        #[cfg(feature = "redis")]
        if name == "bounded_redis" {
            clean_redis().await;
        }
        measured
    });
    println!(
        "result {} {} {} {}",
        measured.sessions.per_sec,
        measured.calls.per_sec,
        measured.sessions.cpu_per_op.as_secs_f64() * 1e6,
        measured.calls.cpu_per_op.as_secs_f64() * 1e6,
    );
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    let middle = values.len() / 2;
    if values.len() % 2 == 1 {
        values[middle]
    } else {
        (values[middle - 1] + values[middle]) / 2.0
    }
}

fn main() {
    let live = env_or("HTTP_LOAD_LIVE", 10_000) as usize;
    let duration = Duration::from_secs(env_or("HTTP_LOAD_SECS", 5));
    let rounds = env_or("HTTP_LOAD_ROUNDS", 3).max(1) as usize;
    let args: Vec<String> = std::env::args().collect();
    if let Some(position) = args.iter().position(|arg| arg == "--measure") {
        let name = args
            .get(position + 1)
            .unwrap_or_else(|| panic!("--measure needs a manager: one of {MANAGERS:?}"));
        measure_one(name, live, duration);
        return;
    }
    if let Some(position) = args.iter().position(|arg| arg == "--measure-stateless") {
        let mode = args.get(position + 1).unwrap_or_else(|| {
            panic!(
                "--measure-stateless needs a mode: one of {:?}",
                stateless_load::MODES
            )
        });
        let calls = common::runtime().block_on(stateless_load::measure(mode, duration));
        println!(
            "result {} {}",
            calls.per_sec,
            calls.cpu_per_op.as_secs_f64() * 1e6
        );
        return;
    }
    if args.iter().any(|arg| arg == "--list") {
        return;
    }
    if args.iter().any(|arg| arg == "--stateless") {
        stateless_load::compare(rounds, duration);
        return;
    }
    println!(
        "http_load: {live} live sessions, {CLIENTS} clients, {} s per phase, {rounds} rounds",
        duration.as_secs()
    );
    // Each manager runs in a fresh process (no heap or runtime left over
    // from the one before), and each round starts with the next manager,
    // so none always runs first or right after the slowest.
    let exe = std::env::current_exe().expect("own path");
    // Per manager, per round: sessions/s, calls/s, CPU µs per session,
    // CPU µs per call.
    let mut results = vec![[const { Vec::new() }; 4]; MANAGERS.len()];
    for round in 0..rounds {
        for turn in 0..MANAGERS.len() {
            let index = (round + turn) % MANAGERS.len();
            let name = MANAGERS[index];
            let output = std::process::Command::new(&exe)
                .args(["--measure", name])
                .stderr(std::process::Stdio::inherit())
                .output()
                .expect("child process");
            let stdout = String::from_utf8_lossy(&output.stdout);
            assert!(
                output.status.success(),
                "measuring {name} failed ({}); its output:\n{stdout}",
                output.status
            );
            if let Some(pushes) = stdout
                .lines()
                .find(|line| line.starts_with("pushes per tool call"))
            {
                println!("round {}: {name:>12}: {pushes}", round + 1);
            }
            let line = stdout
                .lines()
                .find_map(|line| line.strip_prefix("result "))
                .unwrap_or_else(|| panic!("no result from {name}: {stdout}"));
            let numbers: Vec<f64> = line
                .split(' ')
                .map(|n| n.parse::<f64>().expect("a number"))
                .collect();
            println!(
                "round {}: {name:>12}: {:>8.0} sessions/s (initialize + call + DELETE) {:>6.1} µs CPU each   {:>8.0} tool calls/s {:>6.1} µs CPU each",
                round + 1,
                numbers[0],
                numbers[2],
                numbers[1],
                numbers[3],
            );
            for (column, value) in results[index].iter_mut().zip(numbers) {
                column.push(value);
            }
        }
    }
    let medians: Vec<[f64; 4]> = results
        .iter_mut()
        .map(|columns| columns.each_mut().map(|column| median(column)))
        .collect();
    for (name, [sessions, calls, cpu_session, cpu_call]) in MANAGERS.iter().zip(&medians) {
        println!(
            "median {name:>12}: {sessions:>8.0} sessions/s ({cpu_session:.1} µs CPU each)   {calls:>8.0} tool calls/s ({cpu_call:.1} µs CPU each)"
        );
    }
    let ours = medians[0];
    for (name, other) in MANAGERS.iter().zip(&medians).skip(1) {
        println!(
            "bounded / {name} (medians): sessions/s {:.2}x, tool calls/s {:.2}x; CPU per session {:.2}x, per call {:.2}x (below 1: less CPU)",
            ours[0] / other[0],
            ours[1] / other[1],
            ours[2] / other[2],
            ours[3] / other[3],
        );
    }
}
