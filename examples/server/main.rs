//! A real MCP server: axum + rmcp's `StreamableHttpService` +
//! `BoundedSessionManager`, with per-client limits on by default.
//!
//! ```text
//! cargo run --release --example server -- --max-sessions 1000 --rate-limit 100/60 --idle-timeout 300
//! cargo run --release --example server --features metrics    # adds GET /metrics
//! cargo run --release --example server --features redis -- --redis redis://127.0.0.1:6379/
//! ```

mod handler;

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use axum::serve::ListenerExt;
use mcp_bounded_session::{AtCapacity, BoundedSessionManagerBuilder};
#[cfg(feature = "metrics")]
use metrics_exporter_prometheus::{BuildError, PrometheusBuilder, PrometheusHandle};
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use tokio_util::sync::CancellationToken;
use tower_layer::Layer;

use handler::DemoServer;

const USAGE: &str = "\
Usage: server [FLAGS]

  --bind ADDR                  address to listen on (default 127.0.0.1:8000)
  --max-sessions N             sessions kept in memory; at the cap a new session
                               evicts the least recently active idle one, never
                               one with a request in flight (default 1000)
  --rate-limit N/SECS|none     at most N new sessions in any SECS-second window,
                               all clients together (default none)
  --idle-timeout SECS          close a session after SECS seconds without
                               activity (default 300)
  --max-sessions-per-client N  sessions one client may hold; one more replaces
                               its own least recently active idle session;
                               0 = no quota (default 10)
  --rate-limit-per-client N/SECS|none
                               at most N new sessions per client in any
                               SECS-second window; none = no per-client limit
                               (default 20/60)
  --trusted-proxies CIDR,...   networks of the reverse proxies in front of
                               this server (e.g. 10.0.0.0/8,127.0.0.1/32); a
                               request from one of them is keyed by the first
                               address from the right of the forwarding
                               header that is not a trusted proxy (default
                               none: the connection's peer address)
  --forwarded-header x-forwarded-for|forwarded
                               the one header those proxies append to (needed
                               with --trusted-proxies; the other is never read)
  --at-capacity evict|refuse   when the cap is full: evict an idle session, or
                               refuse new sessions with 503 (default evict)
  --redis URL                  share sessions and replays with every instance
                               given the same URL and prefix (needs
                               --features redis; default: none, one instance)
  --redis-prefix PREFIX        key prefix in Redis (default mcp:)

A client is its IP address, an IPv6 address counting as its /64; a request
from a trusted proxy whose header names no client address gets 400.
Built with --features metrics, GET /metrics serves Prometheus text on the same
address.";

#[derive(Debug)]
struct Options {
    bind: SocketAddr,
    max_sessions: usize,
    rate_limit: Option<(usize, Duration)>,
    idle_timeout: Duration,
    max_sessions_per_client: Option<usize>,
    rate_limit_per_client: Option<(usize, Duration)>,
    /// The networks given with `--trusted-proxies`, as written (the
    /// builder validates them).
    trusted_proxies: Vec<String>,
    forwarded_header: Option<String>,
    at_capacity: AtCapacity,
    redis: Option<String>,
    redis_prefix: String,
}

fn parse_options(args: impl Iterator<Item = String>) -> Result<Options, String> {
    let mut options = Options {
        bind: SocketAddr::from(([127, 0, 0, 1], 8000)),
        max_sessions: 1000,
        rate_limit: None,
        idle_timeout: Duration::from_secs(300),
        max_sessions_per_client: Some(10),
        rate_limit_per_client: Some((20, Duration::from_secs(60))),
        trusted_proxies: Vec::new(),
        forwarded_header: None,
        at_capacity: AtCapacity::Evict,
        redis: None,
        redis_prefix: "mcp:".to_owned(),
    };
    let mut args = args;
    while let Some(flag) = args.next() {
        if flag == "--help" || flag == "-h" {
            return Err(String::new());
        }
        let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--bind" => {
                options.bind = value
                    .parse()
                    .map_err(|e| format!("--bind {value}: {e} (expected e.g. 127.0.0.1:8000)"))?;
            }
            "--max-sessions" => {
                options.max_sessions =
                    value.parse().ok().filter(|&n| n >= 1).ok_or_else(|| {
                        format!("--max-sessions {value}: expected an integer >= 1")
                    })?;
            }
            "--rate-limit" => options.rate_limit = parse_rate(&flag, &value, "100/60")?,
            "--idle-timeout" => {
                let secs: u64 = value
                    .parse()
                    .ok()
                    .filter(|&s| s >= 1)
                    .ok_or_else(|| format!("--idle-timeout {value}: expected seconds >= 1"))?;
                options.idle_timeout = Duration::from_secs(secs);
            }
            "--max-sessions-per-client" => {
                let n: usize = if value == "none" {
                    0
                } else {
                    value.parse().map_err(|_| {
                        format!(
                            "--max-sessions-per-client {value}: expected an integer >= 0 \
                             (0 or none: no quota)"
                        )
                    })?
                };
                options.max_sessions_per_client = (n > 0).then_some(n);
            }
            "--rate-limit-per-client" => {
                options.rate_limit_per_client = parse_rate(&flag, &value, "20/60")?;
            }
            "--trusted-proxies" => {
                options.trusted_proxies = value
                    .split(',')
                    .map(str::trim)
                    .filter(|network| !network.is_empty())
                    .map(str::to_owned)
                    .collect();
                if options.trusted_proxies.is_empty() {
                    return Err(format!(
                        "--trusted-proxies {value:?}: expected networks such as \
                         10.0.0.0/8,127.0.0.1/32"
                    ));
                }
            }
            "--forwarded-header" => {
                let header = value.to_ascii_lowercase();
                if header != "x-forwarded-for" && header != "forwarded" {
                    return Err(format!(
                        "--forwarded-header {value}: expected x-forwarded-for or forwarded"
                    ));
                }
                options.forwarded_header = Some(header);
            }
            "--at-capacity" => {
                options.at_capacity = match value.as_str() {
                    "evict" => AtCapacity::Evict,
                    "refuse" => AtCapacity::Refuse,
                    _ => {
                        return Err(format!("--at-capacity {value}: expected evict or refuse"));
                    }
                };
            }
            "--redis" if cfg!(feature = "redis") => options.redis = Some(value),
            "--redis" => return Err("--redis needs the server built with --features redis".into()),
            "--redis-prefix" => options.redis_prefix = value,
            other => return Err(format!("unknown flag {other}")),
        }
    }
    match (
        &options.forwarded_header,
        options.trusted_proxies.is_empty(),
    ) {
        (None, false) => {
            return Err(
                "--trusted-proxies needs --forwarded-header x-forwarded-for or \
                        forwarded: the header your proxies append to"
                    .into(),
            );
        }
        (Some(_), true) => {
            return Err("--forwarded-header needs --trusted-proxies: the proxies' networks".into());
        }
        _ => {}
    }
    Ok(options)
}

/// `N/SECS` with both at least 1, or `none` for no limit.
fn parse_rate(flag: &str, value: &str, example: &str) -> Result<Option<(usize, Duration)>, String> {
    if value == "none" {
        return Ok(None);
    }
    let parsed = value.split_once('/').and_then(|(n, secs)| {
        let n: usize = n.parse().ok().filter(|&n| n >= 1)?;
        let secs: u64 = secs.parse().ok().filter(|&s| s >= 1)?;
        Some((n, Duration::from_secs(secs)))
    });
    parsed.map(Some).ok_or_else(|| {
        format!(
            "{flag} {value}: expected N/SECS with N >= 1 and SECS >= 1 (e.g. {example}), or none"
        )
    })
}

fn show_rate(rate: Option<(usize, Duration)>) -> String {
    rate.map_or("none".to_owned(), |(n, window)| {
        format!("{n} per {}s", window.as_secs())
    })
}

fn show_at_capacity(at_capacity: AtCapacity) -> &'static str {
    match at_capacity {
        AtCapacity::Refuse => "refuse",
        // `AtCapacity` is non-exhaustive; the parser makes only these two.
        _ => "evict",
    }
}

/// One line, starting with "max sessions ": `benches/flood.rs` reads it as
/// the server's configuration.
fn settings_line(options: &Options) -> String {
    format!(
        "max sessions {} (at capacity: {}), idle timeout {}s, rate limit {}; per client: \
         max sessions {}, rate limit {}, trusted proxies {}",
        options.max_sessions,
        show_at_capacity(options.at_capacity),
        options.idle_timeout.as_secs(),
        show_rate(options.rate_limit),
        options
            .max_sessions_per_client
            .map_or("none".to_owned(), |n| n.to_string()),
        show_rate(options.rate_limit_per_client),
        match &options.forwarded_header {
            Some(header) => format!("{} ({header})", options.trusted_proxies.join(",")),
            None => "none".to_owned(),
        },
    ) + &options.redis.as_ref().map_or(String::new(), |_| {
        format!("; redis on (prefix {})", options.redis_prefix)
    })
}

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
        let mut every = tokio::time::interval(Duration::from_secs(5));
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
    let shutdown = CancellationToken::new();
    // Only `--redis` changes it.
    #[cfg_attr(not(feature = "redis"), allow(unused_mut))]
    let mut config =
        StreamableHttpServerConfig::default().with_cancellation_token(shutdown.child_token());
    #[cfg(feature = "redis")]
    if let Some(url) = &options.redis {
        let redis = mcp_bounded_session::RedisStores::builder(url.as_str())
            .prefix(options.redis_prefix.as_str())
            .connect()
            .await;
        let redis = match redis {
            Ok(redis) => redis,
            Err(error) => {
                eprintln!("error: --redis {url}: {error}");
                return ExitCode::from(2);
            }
        };
        builder = builder.redis(&redis);
        config.session_store = Some(redis.session_store());
    }
    let manager = builder.build();

    let service = StreamableHttpService::new(|| Ok(DemoServer::new()), manager.clone(), config);
    // The manager's layer derives each request's client key (per-client
    // limits need it) and answers refusals with 429 / 404 / 503 instead of
    // rmcp's 500.
    let app = axum::Router::new().nest_service("/mcp", manager.layer().layer(service));
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

    // TCP_NODELAY: a response goes out as several small writes (headers,
    // SSE events, the body's end). With Nagle's algorithm on, the kernel
    // holds a small write back until the previous one is acknowledged, and
    // the client delays its ACK (about 40 ms on Linux), so on a kept-alive
    // connection every response would wait that long.
    let listener = listener.tap_io(|tcp| {
        if let Err(error) = tcp.set_nodelay(true) {
            tracing::debug!(%error, "cannot set TCP_NODELAY on an accepted connection");
        }
    });
    // With the connection's peer address in each request, the layer can
    // tell clients apart; without it every client shares one anonymous key
    // and the per-client limits do not apply.
    let app = app.into_make_service_with_connect_info::<SocketAddr>();
    let serve = axum::serve(listener, app).with_graceful_shutdown({
        let shutdown = shutdown.clone();
        async move {
            let _ = tokio::signal::ctrl_c().await;
            shutdown.cancel();
        }
    });
    if let Err(error) = serve.await {
        eprintln!("error: server failed: {error}");
        return ExitCode::FAILURE;
    }
    println!("stopped with {} live sessions", manager.session_count());
    ExitCode::SUCCESS
}
