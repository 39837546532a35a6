//! The server the official MCP conformance suite
//! ([`@modelcontextprotocol/conformance`](https://github.com/modelcontextprotocol/conformance),
//! `server` mode) runs against in CI: axum + rmcp's `StreamableHttpService` +
//! `BoundedSessionManager`, wrapped in `BoundedSessionLayer` as a real
//! deployment would be.
//!
//! It implements every tool, prompt, resource, resource template, completion
//! and logging behaviour the suite's server scenarios call, with the names,
//! arguments and contents the suite expects (they are fixed by the suite, not
//! chosen here). `.ci/conformance.sh` builds it, starts it and runs the suite.
//!
//! ```text
//! cargo run --example conformance_server -- --bind 127.0.0.1:3000
//! npx @modelcontextprotocol/conformance server --url http://127.0.0.1:3000/mcp
//! ```
//!
//! Once listening it prints one line, `listening on http://ADDR/mcp`, on
//! stdout (`--bind 127.0.0.1:0` picks a free port); logs go to stderr.
//!
//! `test_reconnection` (scenario `server-sse-polling`, SEP-1699) closes its
//! own request's SSE stream through `BoundedSessionManager::session` before
//! it answers; the client resumes with `GET` and `Last-Event-ID` and gets the
//! answer from the session's replay buffer.

// The suite still exercises logging, sampling and `resources/subscribe`,
// which rmcp marks deprecated (SEP-2577) but still serves.
#![allow(
    deprecated,
    reason = "the conformance suite tests these legacy features"
)]

mod handler;

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use mcp_bounded_session::{
    BoundedSessionLayer, BoundedSessionManager, MemorySessionStore, SessionConfig,
};
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use tokio_util::sync::CancellationToken;
use tower_layer::Layer;

use handler::ConformanceServer;

const USAGE: &str = "\
Usage: conformance_server [--bind ADDR] [--park-after SECS]

  --bind ADDR         address to listen on (default 127.0.0.1:3000; port 0 picks a free port)
  --park-after SECS   park sessions idle this long in a MemorySessionStore (their next
                      request restores them with a fresh handler); default: no parking";

/// The address to listen on and `--park-after`; `None` for `--help`.
type Args = (SocketAddr, Option<Duration>);

fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Option<Args>, String> {
    let mut bind = SocketAddr::from(([127, 0, 0, 1], 3000));
    let mut park_after = None;
    while let Some(flag) = args.next() {
        match flag.as_str() {
            "--help" | "-h" => return Ok(None),
            "--bind" => {
                let value = args.next().ok_or("--bind needs a value")?;
                bind = value
                    .parse()
                    .map_err(|e| format!("--bind {value}: {e} (expected e.g. 127.0.0.1:3000)"))?;
            }
            "--park-after" => {
                let value = args.next().ok_or("--park-after needs a value")?;
                let secs = value
                    .parse::<f64>()
                    .ok()
                    .filter(|secs| *secs > 0.0 && secs.is_finite())
                    .ok_or_else(|| format!("--park-after {value}: expected seconds > 0"))?;
                park_after = Some(Duration::from_secs_f64(secs));
            }
            other => return Err(format!("unknown flag {other}")),
        }
    }
    Ok(Some((bind, park_after)))
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .init();
    let (bind, park_after) = match parse_args(std::env::args().skip(1)) {
        Ok(Some(args)) => args,
        Ok(None) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(message) => {
            eprintln!("error: {message}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };

    let shutdown = CancellationToken::new();
    // The default configuration accepts only loopback `Host` headers, which
    // is the DNS rebinding protection `dns-rebinding-protection` checks.
    let mut config =
        StreamableHttpServerConfig::default().with_cancellation_token(shutdown.child_token());
    let manager = match park_after {
        None => Arc::new(BoundedSessionManager::new(SessionConfig::default(), 1000)),
        Some(after) => {
            let parked = MemorySessionStore::default();
            config.session_store = Some(Arc::new(parked.clone()));
            BoundedSessionManager::builder(1000)
                .park_in(&parked)
                .park_after(after)
                .build()
        }
    };
    let sessions = manager.clone();
    let service = StreamableHttpService::new(
        move || Ok(ConformanceServer::new(sessions.clone())),
        manager,
        config,
    );
    let app =
        axum::Router::new().nest_service("/mcp", BoundedSessionLayer::default().layer(service));

    let listener = match tokio::net::TcpListener::bind(bind).await {
        Ok(listener) => listener,
        Err(error) => {
            eprintln!("error: cannot listen on {bind}: {error}");
            return ExitCode::FAILURE;
        }
    };
    let address = listener.local_addr().unwrap_or(bind);
    println!("listening on http://{address}/mcp");

    // With the peer address, as per-client limits key on it.
    let app = app.into_make_service_with_connect_info::<SocketAddr>();
    let serve = axum::serve(listener, app).with_graceful_shutdown(async move {
        let _ = tokio::signal::ctrl_c().await;
        shutdown.cancel();
    });
    if let Err(error) = serve.await {
        eprintln!("error: server failed: {error}");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
