//! A real MCP server: axum + rmcp's `StreamableHttpService` +
//! `BoundedSessionManager`.
//!
//! ```text
//! cargo run --release --example server -- --max-sessions 1000 --rate-limit 100/60 --idle-timeout 300
//! ```

mod handler;

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use mcp_bounded_session::{BoundedSessionLayer, BoundedSessionManagerBuilder};
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use tokio_util::sync::CancellationToken;
use tower_layer::Layer;

use handler::DemoServer;

const USAGE: &str = "\
Usage: server [--bind ADDR] [--max-sessions N] [--rate-limit N/SECS] [--idle-timeout SECS]

  --bind ADDR           address to listen on (default 127.0.0.1:8000)
  --max-sessions N      sessions kept in memory; the oldest is evicted beyond (default 1000)
  --rate-limit N/SECS   at most N new sessions in any SECS-second window (default: none)
  --idle-timeout SECS   close a session after SECS seconds without activity (default 300)";

#[derive(Debug)]
struct Options {
    bind: SocketAddr,
    max_sessions: usize,
    rate_limit: Option<(usize, Duration)>,
    idle_timeout: Duration,
}

fn parse_options(args: impl Iterator<Item = String>) -> Result<Options, String> {
    let mut options = Options {
        bind: SocketAddr::from(([127, 0, 0, 1], 8000)),
        max_sessions: 1000,
        rate_limit: None,
        idle_timeout: Duration::from_secs(300),
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
            "--rate-limit" => {
                let parsed = value.split_once('/').and_then(|(n, secs)| {
                    let n: usize = n.parse().ok().filter(|&n| n >= 1)?;
                    let secs: u64 = secs.parse().ok().filter(|&s| s >= 1)?;
                    Some((n, Duration::from_secs(secs)))
                });
                options.rate_limit = Some(parsed.ok_or_else(|| {
                    format!("--rate-limit {value}: expected N/SECS with N >= 1 and SECS >= 1, e.g. 100/60")
                })?);
            }
            "--idle-timeout" => {
                let secs: u64 = value
                    .parse()
                    .ok()
                    .filter(|&s| s >= 1)
                    .ok_or_else(|| format!("--idle-timeout {value}: expected seconds >= 1"))?;
                options.idle_timeout = Duration::from_secs(secs);
            }
            other => return Err(format!("unknown flag {other}")),
        }
    }
    Ok(options)
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

    let mut builder =
        BoundedSessionManagerBuilder::new(options.max_sessions).idle_timeout(options.idle_timeout);
    if let Some((max_creates, window)) = options.rate_limit {
        builder = builder.rate_limit(max_creates, window);
    }
    let manager = builder.build();

    let shutdown = CancellationToken::new();
    let service = StreamableHttpService::new(
        || Ok(DemoServer::new()),
        manager.clone(),
        StreamableHttpServerConfig::default().with_cancellation_token(shutdown.child_token()),
    );
    // The layer answers refusals with 429 / 404 / 503 instead of rmcp's 500.
    let app = axum::Router::new().nest_service("/mcp", BoundedSessionLayer.layer(service));

    let listener = match tokio::net::TcpListener::bind(options.bind).await {
        Ok(listener) => listener,
        Err(error) => {
            eprintln!("error: cannot listen on {}: {error}", options.bind);
            return ExitCode::FAILURE;
        }
    };
    let address = listener.local_addr().map_or(options.bind, |a| a);
    println!("MCP server listening on http://{address}/mcp");
    println!(
        "max sessions {}, idle timeout {:?}, rate limit {}",
        options.max_sessions,
        options.idle_timeout,
        options
            .rate_limit
            .map_or("none".to_owned(), |(n, w)| format!(
                "{n} per {}s",
                w.as_secs()
            ))
    );

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
