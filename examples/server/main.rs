//! A real MCP server: axum + rmcp's `StreamableHttpService` +
//! `BoundedSessionManager`, with per-client limits on by default, and the
//! connections each client may hold open bounded where they are accepted
//! (`connections.rs`). `--help` lists every flag.
//!
//! ```text
//! cargo run --release --example server -- --max-sessions 1000 --rate-limit 100/60 --idle-timeout 300
//! cargo run --release --example server -- --max-connections-per-client 16 --max-connections 5000
//! cargo run --release --example server --features metrics    # adds GET /metrics
//! cargo run --release --example server --features redis -- --redis redis://127.0.0.1:6379/
//! cargo run --release --example server --features redis -- \
//!     --redis-cluster redis://10.0.0.1:6379/,redis://10.0.0.2:6379/,redis://10.0.0.3:6379/
//! ```

mod connections;
mod handler;
mod options;

use std::net::SocketAddr;
use std::process::ExitCode;

use axum::serve::ListenerExt;
use mcp_bounded_session::BoundedSessionManagerBuilder;
#[cfg(feature = "metrics")]
use metrics_exporter_prometheus::{BuildError, PrometheusBuilder, PrometheusHandle};
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use tokio_util::sync::CancellationToken;
use tower_layer::Layer;

use connections::{BoundedListener, ConnectionLimits};
use handler::DemoServer;
use options::{USAGE, parse_options, settings_line};

/// Installs the Prometheus recorder. Call it before building the manager:
/// the manager describes its metrics when it is built, and whatever it
/// reports before a recorder exists is lost.
#[cfg(feature = "metrics")]
fn install_metrics() -> Result<PrometheusHandle, BuildError> {
    let handle = PrometheusBuilder::new().install_recorder()?;
    // `install_recorder` starts no upkeep task, and only upkeep or a scrape
    // drains histogram samples: without it, a server nobody scrapes keeps
    // every session's duration in memory.
    let upkeep = handle.clone();
    tokio::spawn(async move {
        let mut every = tokio::time::interval(std::time::Duration::from_secs(5));
        loop {
            every.tick().await;
            upkeep.run_upkeep();
        }
    });
    Ok(handle)
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let options = match parse_options(std::env::args().skip(1)) {
        Ok(options) => options,
        Err(message) if message.is_empty() => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(message) => {
            eprintln!("error: {message}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };

    #[cfg(feature = "metrics")]
    let metrics = match install_metrics() {
        Ok(handle) => handle,
        Err(error) => {
            eprintln!("error: cannot install the Prometheus metrics recorder: {error}");
            return ExitCode::FAILURE;
        }
    };

    let mut builder = BoundedSessionManagerBuilder::new(options.max_sessions)
        .idle_timeout(options.idle_timeout)
        .at_capacity(options.at_capacity);
    if let Some(header) = &options.forwarded_header {
        builder = builder.trusted_proxies(header, &options.trusted_proxies);
    }
    if let Some((max_creates, window)) = options.rate_limit {
        builder = builder.rate_limit(max_creates, window);
    }
    if let Some(max) = options.max_sessions_per_client {
        builder = builder.max_sessions_per_client(max);
    }
    if let Some((max_creates, window)) = options.rate_limit_per_client {
        builder = builder.rate_limit_per_client(max_creates, window);
    }
    if let Some(n) = options.max_requests {
        builder = builder.max_requests_in_flight(n);
    }
    if let Some(n) = options.max_requests_per_client {
        builder = builder.max_requests_in_flight_per_client(n);
    }
    if let Some((max_requests, window)) = options.request_rate_per_client {
        builder = builder.request_rate_limit_per_client(max_requests, window);
    }
    if let Some(n) = options.max_listen_streams {
        builder = builder.max_listen_streams(n);
    }
    if let Some(n) = options.max_listen_streams_per_client {
        builder = builder.max_listen_streams_per_client(n);
    }
    let shutdown = CancellationToken::new();
    // `--redis`, `--redis-cluster` or parking in memory give it a session
    // store.
    let mut config =
        StreamableHttpServerConfig::default().with_cancellation_token(shutdown.child_token());
    #[cfg(feature = "redis")]
    let redis = match (&options.redis, &options.redis_cluster) {
        (Some(url), _) => Some((
            format!("--redis {url}"),
            mcp_bounded_session::RedisStores::builder(url.as_str()),
        )),
        (_, Some(nodes)) => Some((
            format!("--redis-cluster {}", nodes.join(",")),
            mcp_bounded_session::RedisStores::cluster_builder(nodes.iter().cloned()),
        )),
        (None, None) => None,
    };
    #[cfg(feature = "redis")]
    if let Some((flag, redis)) = redis {
        let mut redis = redis.prefix(options.redis_prefix.as_str());
        if let Some(delay) = options.request_lost_after {
            redis = redis.request_lost_after(delay);
        }
        let redis = redis.connect().await;
        let redis = match redis {
            Ok(redis) => redis,
            Err(error) => {
                eprintln!("error: {flag}: {error}");
                return ExitCode::from(2);
            }
        };
        builder = builder.redis(&redis);
        config.session_store = Some(redis.session_store());
    }
    // Parking: in memory, unless Redis keeps the sessions.
    let in_memory = options.redis.is_none() && options.redis_cluster.is_none();
    if in_memory && (options.park_after.is_some() || options.max_parked.is_some()) {
        let mut parked = mcp_bounded_session::MemorySessionStore::builder();
        if let Some(max) = options.max_parked {
            parked = parked.max_parked(max);
        }
        let parked = parked.build();
        builder = builder.park_in(&parked);
        config.session_store = Some(std::sync::Arc::new(parked));
    }
    if let Some(after) = options.park_after {
        builder = builder.park_after(after);
    }
    let manager = builder.build();

    let service = StreamableHttpService::new(|| Ok(DemoServer::new()), manager.clone(), config);
    // The manager's layer derives each request's client key (per-client
    // limits need it) and answers refusals with 429 / 404 / 503 instead of
    // rmcp's 500.
    let app = axum::Router::new().nest_service("/mcp", manager.layer().layer(service));
    // Readiness for an orchestrator: 503 from the moment the drain starts,
    // so that the balancer stops sending new clients here.
    let app = app.route(
        "/ready",
        axum::routing::get({
            let manager = manager.clone();
            move || {
                let status = match manager.is_draining() {
                    false => axum::http::StatusCode::OK,
                    true => axum::http::StatusCode::SERVICE_UNAVAILABLE,
                };
                std::future::ready(status)
            }
        }),
    );
    #[cfg(feature = "metrics")]
    let app = app.route(
        "/metrics",
        axum::routing::get(move || {
            std::future::ready((
                [(
                    axum::http::header::CONTENT_TYPE,
                    "text/plain; version=0.0.4; charset=utf-8",
                )],
                metrics.render(),
            ))
        }),
    );

    // Peers in the trusted proxies' networks have no per-client connection
    // limit: each proxy connection carries many clients.
    let connection_limits = ConnectionLimits::new(
        options.max_connections_per_client,
        options.max_connections,
        {
            let manager = manager.clone();
            move |peer| manager.is_trusted_proxy(peer)
        },
    );
    let listener = match tokio::net::TcpListener::bind(options.bind).await {
        Ok(listener) => listener,
        Err(error) => {
            eprintln!("error: cannot listen on {}: {error}", options.bind);
            return ExitCode::FAILURE;
        }
    };
    let address = listener.local_addr().map_or(options.bind, |a| a);
    println!("MCP server listening on http://{address}/mcp");
    println!("{}", settings_line(&options));
    #[cfg(feature = "metrics")]
    println!("metrics on http://{address}/metrics");

    // A client's connections past its limit, or anyone's past the total,
    // get 503 and are closed as they are accepted: the request limits
    // cannot bound them, as a connection costs its buffers whatever it
    // carries.
    let listener = BoundedListener::new(listener, connection_limits);
    // TCP_NODELAY: a response goes out as several small writes (headers,
    // SSE events, the body's end). With Nagle's algorithm on, the kernel
    // holds a small write back until the previous one is acknowledged, and
    // the client delays its ACK (about 40 ms on Linux), so on a kept-alive
    // connection every response would wait that long.
    // Keep a `tap_io` on top even without it: axum derives
    // `ConnectInfo<SocketAddr>` for a `TapIo` over any listener of socket
    // addresses, but bare only for its own `TcpListener`.
    let listener = listener.tap_io(|connection| {
        if let Err(error) = connection.tcp().set_nodelay(true) {
            tracing::debug!(%error, "cannot set TCP_NODELAY on an accepted connection");
        }
    });
    // With the connection's peer address in each request, the layer can
    // tell clients apart; without it every client shares one anonymous key
    // and the per-client limits do not apply.
    let app = app.into_make_service_with_connect_info::<SocketAddr>();
    let mut signals = match Signals::new() {
        Ok(signals) => signals,
        Err(error) => {
            eprintln!("error: cannot listen for signals: {error}");
            return ExitCode::FAILURE;
        }
    };
    // New connections are accepted until the drain is over: requests for
    // the sessions held here are still served meanwhile, and the others
    // are answered 503 so that clients go elsewhere.
    let (drained_tx, drained) = tokio::sync::oneshot::channel::<()>();
    let serve = axum::serve(listener, app).with_graceful_shutdown(async move {
        let _ = drained.await;
    });
    let mut serve = tokio::spawn(async move { serve.await });
    let signal = tokio::select! {
        served = &mut serve => {
            eprintln!("error: server stopped: {served:?}");
            return ExitCode::FAILURE;
        }
        signal = signals.next() => signal,
    };
    println!(
        "{signal}: draining for up to {} s (a second signal stops at once)",
        options.drain_timeout.as_secs()
    );
    let summary = tokio::select! {
        summary = manager.drain(options.drain_timeout) => summary,
        signal = signals.next() => {
            println!("{signal} again: stopping at once");
            return ExitCode::FAILURE;
        }
    };
    println!("{summary}");
    // What rmcp still runs on its own (a 2026-07-28 handler whose stream
    // goes to an event store after its response ended) stops here.
    shutdown.cancel();
    let _ = drained_tx.send(());
    // Every stream has ended: the open connections close as soon as they
    // are idle.
    match tokio::time::timeout(CLOSE_CONNECTIONS, serve).await {
        Ok(Ok(Ok(()))) => {}
        Ok(served) => eprintln!("error: server failed while stopping: {served:?}"),
        Err(_) => eprintln!("connections still open after {CLOSE_CONNECTIONS:?}: closing them"),
    }
    println!("stopped with {} live sessions", manager.session_count());
    ExitCode::SUCCESS
}

/// How long connections get to close after the drain.
const CLOSE_CONNECTIONS: std::time::Duration = std::time::Duration::from_secs(5);

/// SIGTERM (what orchestrators send) and SIGINT (Ctrl-C).
struct Signals {
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> std::io::Result<Self> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Ok(Self {
                terminate: signal(SignalKind::terminate())?,
                interrupt: signal(SignalKind::interrupt())?,
            })
        }
        #[cfg(not(unix))]
        Ok(Self {})
    }

    /// The next signal's name.
    async fn next(&mut self) -> &'static str {
        #[cfg(unix)]
        {
            tokio::select! {
                _ = self.terminate.recv() => "SIGTERM",
                _ = self.interrupt.recv() => "SIGINT",
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
            "Ctrl-C"
        }
    }
}
