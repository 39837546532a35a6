//! `http_load --stateless`: protocol 2026-07-28 `tools/call`s without
//! sessions through this crate's layer, with request admission off (no
//! request limit configured) and on (the example server's bounds:
//! 1,024 in flight, 32 per client, and a per-client rate limit high
//! enough never to refuse here, so that its bookkeeping is in the
//! figure). Every client is on 127.0.0.1: one client key, the hot case.

use std::time::Duration;

use mcp_bounded_session::BoundedSessionManagerBuilder;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use serde_json::json;
use tokio_util::sync::CancellationToken;
use tower_layer::Layer;

use super::stateless;
use super::{CLIENTS, Rate, handler, median, rate, serve};

/// The contestants, in the order of the first round.
pub const MODES: [&str; 2] = ["admission_off", "admission_on"];

/// Calls per second and CPU per call of `mode`, measured in this process.
pub async fn measure(mode: &str, duration: Duration) -> Rate {
    let shutdown = CancellationToken::new();
    let mut builder = BoundedSessionManagerBuilder::new(1_000);
    match mode {
        "admission_off" => {}
        "admission_on" => {
            builder = builder
                .max_requests_in_flight(1_024)
                .max_requests_in_flight_per_client(32)
                .request_rate_limit_per_client(1_000_000, Duration::from_secs(60));
        }
        other => panic!("unknown mode {other:?}; expected one of {MODES:?}"),
    }
    let manager = builder.build();
    let service = StreamableHttpService::new(
        || Ok(handler::DemoServer::new()),
        manager.clone(),
        StreamableHttpServerConfig::default().with_cancellation_token(shutdown.child_token()),
    );
    let router = axum::Router::new().nest_service("/mcp", manager.layer().layer(service));
    let url = serve(router, shutdown.clone()).await;
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(CLIENTS)
        .tcp_nodelay(true)
        .build()
        .unwrap();
    let calls = rate(duration, move |_, round| {
        let (http, url) = (http.clone(), url.clone());
        async move {
            let call = stateless::tool_call(round, "echo", json!({ "text": "ping" }));
            let response = stateless::post_call(&http, &url, "echo", &call)
                .send()
                .await
                .expect("server reachable");
            let status = response.status();
            let body = response.text().await.unwrap();
            assert!(status.is_success(), "{status}: {body}");
            assert!(stateless::has_result(&body, round), "{body}");
        }
    })
    .await;
    shutdown.cancel();
    calls
}

/// Measures each mode in a child process of its own (`--measure-stateless
/// MODE`), `rounds` times in an order rotated every round, and prints the
/// medians and the ratio of CPU per call.
pub fn compare(rounds: usize, duration: Duration) {
    println!(
        "http_load --stateless: {CLIENTS} clients, protocol 2026-07-28 tools/call (echo) \
         without sessions, {} s per phase, {rounds} rounds",
        duration.as_secs()
    );
    let exe = std::env::current_exe().expect("own path");
    // Per mode, per round: calls/s, CPU µs per call.
    let mut results = vec![[const { Vec::new() }; 2]; MODES.len()];
    for round in 0..rounds {
        for turn in 0..MODES.len() {
            let index = (round + turn) % MODES.len();
            let mode = MODES[index];
            let output = std::process::Command::new(&exe)
                .args(["--measure-stateless", mode])
                .stderr(std::process::Stdio::inherit())
                .output()
                .expect("child process");
            let stdout = String::from_utf8_lossy(&output.stdout);
            assert!(
                output.status.success(),
                "measuring {mode} failed ({}); its output:\n{stdout}",
                output.status
            );
            let line = stdout
                .lines()
                .find_map(|line| line.strip_prefix("result "))
                .unwrap_or_else(|| panic!("no result from {mode}: {stdout}"));
            let numbers: Vec<f64> = line
                .split(' ')
                .map(|n| n.parse::<f64>().expect("a number"))
                .collect();
            println!(
                "round {}: {mode:>13}: {:>8.0} tool calls/s {:>6.1} µs CPU each",
                round + 1,
                numbers[0],
                numbers[1],
            );
            for (column, value) in results[index].iter_mut().zip(numbers) {
                column.push(value);
            }
        }
    }
    let medians: Vec<[f64; 2]> = results
        .iter_mut()
        .map(|columns| columns.each_mut().map(|column| median(column)))
        .collect();
    for (mode, [calls, cpu]) in MODES.iter().zip(&medians) {
        println!("median {mode:>13}: {calls:>8.0} tool calls/s ({cpu:.1} µs CPU each)");
    }
    // The least disturbed round of each: on a shared machine a round's CPU
    // per call moves by far more than admission costs.
    let least: Vec<f64> = results
        .iter()
        .map(|columns| columns[1].iter().copied().fold(f64::INFINITY, f64::min))
        .collect();
    println!(
        "least CPU per call in a round: off {:.1} µs, on {:.1} µs; off / on {:.3}x",
        least[0],
        least[1],
        least[0] / least[1]
    );
    let (off, on) = (medians[0], medians[1]);
    println!(
        "admission on / off (medians): tool calls/s {:.3}x; CPU per call off / on {:.3}x \
         (1 = admission costs nothing; below 1: it costs CPU)",
        on[0] / off[0],
        off[1] / on[1],
    );
}
