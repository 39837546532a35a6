//! Latency of a request to a *parked* session, which restores it, against
//! creating a session and against a request to a live one, through rmcp
//! 3.11's `StreamableHttpService` with this crate's layer and manager,
//! parking in a `MemorySessionStore` (also rmcp's `session_store`), the
//! example server's handler answering:
//!
//! - `restore`: a `tools/list` to a parked session, below the cap: rmcp
//!   loads its state, the manager admits it again (`restore_session`),
//!   rmcp replays `initialize` and `notifications/initialized` to a fresh
//!   handler, then the request is served and answered;
//! - `restore_at_cap`: the same at a full cap, where the restore evicts
//!   (parks) the least recently active session;
//! - `create`: a new session, `initialize` then `notifications/initialized`,
//!   below the cap;
//! - `create_at_cap`: the same at a full cap, evicting (parking) one;
//! - `live_request`: a `tools/list` to a live session.
//!
//! Each request is timed from the service's call to the end of its response
//! body; everything else (a server of its own for each batch, creating and
//! parking the sessions to restore, ending them all after) is outside the
//! timed part (`iter_custom`). After criterion's own report, the median of
//! every request it timed is printed for each case, with the ratios
//! restore / create and restore / live request. Criterion measures each
//! case in a window of its own, so a change of the machine's load between
//! windows moves one case and not the others; the cases are then run
//! again taking turns (`RESTORE_ROUNDS` rounds, default 20, of 200 requests
//! each), and the medians and ratios of those are printed too: the ones to
//! compare on a shared machine.
//!
//! The requests are handed to the service in process (tower's `call`, as
//! hyper does with each request it has read, each with the peer address the
//! layer keys clients by), not over loopback TCP: what differs between the
//! cases is the server's work, and a loopback HTTP client and hyper would
//! add the same tens of microseconds of client, kernel and parsing work to
//! each, and the noise of a 2-core machine that runs the client too,
//! hiding the differences. Everything from the layer down is what a real
//! server runs: the layer's client key and admission, rmcp's header checks,
//! JSON-RPC parsing, its restore path and SSE framing, the session's tasks.
//!
//! ```text
//! cargo bench --bench restore
//! RESTORE_ROUNDS=50 cargo bench --bench restore
//! ```

mod common;

#[path = "../examples/server/handler.rs"]
#[allow(dead_code, reason = "the bench lists the tools only")]
mod handler;

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{Criterion, SamplingMode};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use mcp_bounded_session::{BoundedSessionManager, BoundedSessionService, MemorySessionStore};
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use tower_layer::Layer;
use tower_service::Service;

const PROTOCOL_VERSION: &str = "2025-06-18";
/// The cap of the `_at_cap` cases.
const SMALL_CAP: usize = 100;
/// Requests (creations) of a case's turn in the interleaved rounds.
const TURN_REQUESTS: usize = 200;
/// The peer address of every request (one client).
const PEER: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::LOCALHOST), 40_000);

type Mcp = BoundedSessionService<StreamableHttpService<handler::DemoServer, BoundedSessionManager>>;

/// The service stack of a server, without its listener.
struct Server {
    service: Mcp,
    store: MemorySessionStore,
    manager: Arc<BoundedSessionManager>,
    /// Sessions restored so far (`on_restore`).
    restored: Arc<AtomicUsize>,
    shutdown: CancellationToken,
}

impl Server {
    /// A server of `cap` live sessions, parking up to `max_parked`.
    fn new(cap: usize, max_parked: usize) -> Self {
        let store = MemorySessionStore::builder().max_parked(max_parked).build();
        let restored = Arc::new(AtomicUsize::new(0));
        let manager = BoundedSessionManager::builder(cap)
            .park_in(&store)
            .on_restore({
                let restored = restored.clone();
                move |_| {
                    restored.fetch_add(1, Ordering::Relaxed);
                }
            })
            .build();
        let shutdown = CancellationToken::new();
        let mut config = StreamableHttpServerConfig::default();
        config.session_store = Some(Arc::new(store.clone()));
        let service = StreamableHttpService::new(
            || Ok(handler::DemoServer::new()),
            manager.clone(),
            config.with_cancellation_token(shutdown.child_token()),
        );
        Self {
            service: manager.layer().layer(service),
            store,
            manager,
            restored,
            shutdown,
        }
    }

    /// Sends `request`; returns the response with its body read to the end.
    async fn send(&self, request: Request<Full<Bytes>>) -> Response<Bytes> {
        // A clone per request, as hyper and axum do.
        let mut service = self.service.clone();
        std::future::poll_fn(|cx| Service::<Request<Full<Bytes>>>::poll_ready(&mut service, cx))
            .await
            .unwrap_or_else(|never: Infallible| match never {});
        let response: Response<BoxBody<Bytes, Infallible>> = service
            .call(request)
            .await
            .unwrap_or_else(|never| match never {});
        let (parts, body) = response.into_parts();
        let body = body.collect().await.unwrap_or_else(|never| match never {});
        Response::from_parts(parts, body.to_bytes())
    }

    async fn post(&self, session: Option<&str>, body: &Value) -> Response<Bytes> {
        self.send(request(http::Method::POST, session, body)).await
    }

    /// A new session: `initialize`, then `notifications/initialized`.
    async fn create(&self) -> String {
        let initialize = json!({
            "jsonrpc": "2.0", "id": 0, "method": "initialize",
            "params": {
                "protocolVersion": PROTOCOL_VERSION, "capabilities": {},
                "clientInfo": { "name": "restore-bench", "version": "1" }
            }
        });
        let response = self.post(None, &initialize).await;
        assert_eq!(response.status(), StatusCode::OK, "{:?}", response.body());
        assert!(contains(response.body(), "serverInfo"));
        let session = response.headers()["mcp-session-id"]
            .to_str()
            .unwrap()
            .to_owned();
        let initialized = json!({ "jsonrpc": "2.0", "method": "notifications/initialized" });
        let response = self.post(Some(&session), &initialized).await;
        assert_eq!(response.status(), StatusCode::ACCEPTED);
        session
    }

    /// A `tools/list` in `session`, answered with the tools.
    async fn tools_list(&self, session: &str) {
        let list = json!({ "jsonrpc": "2.0", "id": 1, "method": "tools/list" });
        let response = self.post(Some(session), &list).await;
        assert_eq!(response.status(), StatusCode::OK, "{:?}", response.body());
        assert!(
            contains(response.body(), "\"echo\""),
            "{:?}",
            response.body()
        );
    }

    async fn delete(&self, session: &str) {
        let response = self
            .send(request(http::Method::DELETE, Some(session), &Value::Null))
            .await;
        assert_eq!(response.status(), StatusCode::OK);
    }

    /// `count` sessions, parked, on this fresh server of cap `cap`:
    /// created, then evicted by `cap` more (the fillers, live; DELETEd
    /// after if `free_the_cap`, which leaves no session live).
    async fn parked_sessions(&self, count: usize, cap: usize, free_the_cap: bool) -> Vec<String> {
        let mut sessions = Vec::with_capacity(count);
        for _ in 0..count {
            sessions.push(self.create().await);
        }
        let mut fillers = Vec::with_capacity(cap);
        for _ in 0..cap {
            fillers.push(self.create().await);
        }
        if free_the_cap {
            for filler in &fillers {
                self.delete(filler).await;
            }
            assert_eq!(self.manager.session_count(), 0);
        }
        assert_eq!(self.store.parked(), count, "every session parked");
        sessions
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

fn request(method: http::Method, session: Option<&str>, body: &Value) -> Request<Full<Bytes>> {
    let mut builder = Request::builder()
        .method(method)
        .uri("http://127.0.0.1/mcp")
        .header(http::header::HOST, "127.0.0.1")
        .header(http::header::CONTENT_TYPE, "application/json")
        .header(http::header::ACCEPT, "application/json, text/event-stream")
        .header("mcp-protocol-version", PROTOCOL_VERSION);
    if let Some(session) = session {
        builder = builder.header("mcp-session-id", session);
    }
    let body = if body.is_null() {
        Bytes::new()
    } else {
        Bytes::from(serde_json::to_vec(body).unwrap())
    };
    let mut request = builder.body(Full::new(body)).unwrap();
    // What axum's ConnectInfo would give the layer: the client's address.
    request.extensions_mut().insert(PEER);
    request
}

fn contains(body: &Bytes, needle: &str) -> bool {
    body.windows(needle.len())
        .any(|window| window == needle.as_bytes())
}

/// Every timed request's latency, by case.
type Latencies = RefCell<BTreeMap<&'static str, Vec<Duration>>>;

/// What is timed: one request, or the two of a creation.
#[derive(Debug, Clone, Copy)]
enum Case {
    LiveRequest,
    Create,
    CreateAtCap,
    Restore,
    RestoreAtCap,
}

impl Case {
    const ALL: [Self; 5] = [
        Self::LiveRequest,
        Self::Create,
        Self::CreateAtCap,
        Self::Restore,
        Self::RestoreAtCap,
    ];

    fn name(self) -> &'static str {
        match self {
            Self::LiveRequest => "live_request",
            Self::Create => "create",
            Self::CreateAtCap => "create_at_cap",
            Self::Restore => "restore",
            Self::RestoreAtCap => "restore_at_cap",
        }
    }

    /// `n` timed requests (creations) of this case on a server of their
    /// own, each recorded in `latencies`; returns their total. The setup
    /// before and the end of the server's sessions after are not timed,
    /// and the server's tasks have ended when it returns.
    async fn batch(self, n: usize, latencies: &Latencies) -> Duration {
        let (cap, max_parked) = match self {
            Self::LiveRequest | Self::CreateAtCap => (SMALL_CAP, n + SMALL_CAP),
            Self::Create | Self::Restore => (n + 1, n + 1),
            Self::RestoreAtCap => (SMALL_CAP, n + SMALL_CAP),
        };
        let server = Server::new(cap, max_parked);
        // Setup.
        let mut sessions = Vec::new();
        match self {
            Self::LiveRequest => sessions.push(server.create().await),
            Self::CreateAtCap => {
                for _ in 0..SMALL_CAP {
                    server.create().await;
                }
            }
            Self::Create => {}
            // Parked below the cap: nothing live once the fillers that
            // evicted them are deleted.
            Self::Restore => sessions = server.parked_sessions(n, cap, true).await,
            Self::RestoreAtCap => sessions = server.parked_sessions(n, SMALL_CAP, false).await,
        }
        // The evicted and deleted sessions' tasks end on the runtime's
        // workers before the timed part begins.
        tokio::time::sleep(Duration::from_millis(20)).await;
        let mut total = Duration::ZERO;
        for i in 0..n {
            let start = Instant::now();
            match self {
                Self::LiveRequest => server.tools_list(&sessions[0]).await,
                Self::Create | Self::CreateAtCap => drop(server.create().await),
                Self::Restore | Self::RestoreAtCap => server.tools_list(&sessions[i]).await,
            }
            let elapsed = start.elapsed();
            latencies
                .borrow_mut()
                .entry(self.name())
                .or_default()
                .push(elapsed);
            total += elapsed;
        }
        // Each request did what its case says.
        let restored = server.restored.load(Ordering::Relaxed);
        match self {
            Self::LiveRequest | Self::Create => assert_eq!(server.store.parked(), 0),
            Self::CreateAtCap => assert_eq!(server.store.parked(), n, "each creation parked one"),
            Self::Restore => assert_eq!((server.store.parked(), restored), (0, n)),
            Self::RestoreAtCap => assert_eq!(
                (server.store.parked(), restored),
                (n, n),
                "each restore parked one"
            ),
        }
        drop(server);
        // The server's sessions end (its token cancelled) before the next
        // batch.
        let runtime = tokio::runtime::Handle::current();
        let deadline = Instant::now() + Duration::from_secs(5);
        while runtime.metrics().num_alive_tasks() > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        total
    }
}

fn restore(c: &mut Criterion, rt: &tokio::runtime::Runtime, latencies: &Latencies) {
    let mut group = c.benchmark_group("restore");
    group
        .sampling_mode(SamplingMode::Flat)
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    for case in Case::ALL {
        group.bench_function(case.name(), |b| {
            b.iter_custom(|iters| rt.block_on(case.batch(iters as usize, latencies)));
        });
    }
    group.finish();
}

/// The cases again, taking turns: `rounds` rounds of a batch of
/// [`TURN_REQUESTS`] each, so that a change of the machine's load while
/// they run falls on every case alike.
fn interleaved(rt: &tokio::runtime::Runtime, rounds: usize) -> Latencies {
    let latencies = Latencies::default();
    for _ in 0..rounds {
        for case in Case::ALL {
            rt.block_on(case.batch(TURN_REQUESTS, &latencies));
        }
    }
    latencies
}

/// The median latency of each case, printed with `label`.
fn medians(label: &str, latencies: &Latencies) -> BTreeMap<&'static str, f64> {
    let mut medians = BTreeMap::new();
    for (case, samples) in latencies.borrow_mut().iter_mut() {
        samples.sort_unstable();
        let count = samples.len();
        let (median, p90) = (samples[count / 2], samples[count * 9 / 10]);
        println!(
            "restore/{case}: median {:.1} µs, p90 {:.1} µs ({count} timed, {label})",
            median.as_secs_f64() * 1e6,
            p90.as_secs_f64() * 1e6
        );
        medians.insert(*case, median.as_secs_f64());
    }
    medians
}

fn ratios(label: &str, medians: &BTreeMap<&'static str, f64>) {
    for (restore, other) in [
        ("restore", "create"),
        ("restore_at_cap", "create_at_cap"),
        ("restore", "live_request"),
    ] {
        if let (Some(restore_median), Some(other_median)) =
            (medians.get(restore), medians.get(other))
        {
            println!(
                "restore/{restore} / {other} (medians, {label}): {:.2}x ({:+.1} µs)",
                restore_median / other_median,
                (restore_median - other_median) * 1e6
            );
        }
    }
}

fn main() {
    let rt = common::runtime();
    let latencies = Latencies::default();
    let mut criterion = Criterion::default().configure_from_args();
    restore(&mut criterion, &rt, &latencies);
    criterion.final_summary();
    let in_windows = "criterion's samples and warm-up, each case in its own window";
    let window_medians = medians(in_windows, &latencies);
    // Only after a run of every case (not a filtered one, nor `--list`).
    if window_medians.len() == Case::ALL.len() {
        ratios("criterion's windows", &window_medians);
        let rounds = std::env::var("RESTORE_ROUNDS")
            .ok()
            .and_then(|rounds| rounds.parse().ok())
            .unwrap_or(20);
        let interleaved = interleaved(&rt, rounds);
        let label = format!("{rounds} rounds of {TURN_REQUESTS}, cases taking turns");
        ratios("cases taking turns", &medians(&label, &interleaved));
    }
}
