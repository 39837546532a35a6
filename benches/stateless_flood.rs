//! One client floods long stateless calls (protocol 2026-07-28, no
//! session) while others use the server, against the real
//! `examples/server` process:
//!
//! - 20 legitimate clients, each on its own loopback source address
//!   127.0.0.10 to 127.0.0.29: one stateless `echo` call every 200 ms,
//!   each timed (a call not answered within 10 s fails);
//! - one flooder on 127.0.0.2 keeping N `count` calls open (100 steps of
//!   100 ms: 10 s each, with a progress token: rmcp answers a stateless
//!   call's headers with its first message, so without progress the
//!   flooder could not tell an accepted call from one still queued), each
//!   started again when it ends. A refused call
//!   (429 or 503) waits for its `Retry-After`, or, in the "retries every
//!   refusal" run, is sent again at once. A connection the server refuses
//!   as it accepts it (over `--max-connections-per-client`: a 503 with
//!   `Connection: close`, or a reset) always waits, 1 s, in both runs: the
//!   flooder retries refused calls at once, but never spins on connecting.
//!
//! Each run starts a fresh server, for 15 s (`--secs`); the runs are the
//! flood sizes 0 (none), 3,000 and 9,000, first with the example's request
//! and connection limits off ("before": `--max-requests none
//! --max-requests-per-client none --request-rate-per-client none
//! --max-connections-per-client none --max-connections none`), then with
//! its defaults ("after"), then the retrying flooder against the defaults
//! at each flood size. The server's peak RSS is its `VmHWM`. "Flood held
//! at once" is the most flood calls the server held at once, seen twice:
//! by the server (built with `--features metrics`, its `/metrics` sampled
//! every 20 ms: `count` calls running in its handler, which only the
//! flooder calls, a lower bound, since a call is admitted before its
//! handler starts and released after it ends), and by the flooder (a 2xx
//! answer whose result has not arrived: an upper bound, since a busy
//! flooder may read a new call's headers before an older call's result).
//! Also sampled: the server's request units in flight and the connections
//! it holds open, all clients together (each counted only with its limits
//! on), and how many flood calls were refused: how hard the flooder, on
//! the same cores, managed to push (thousands of connections opened at
//! once overflow the server's listen queue, and their retried SYNs wait
//! whole seconds). The 20 clients open their connections at the same
//! moment as the flooder, so their first calls can wait that second too:
//! a row whose p99 is near 1,000 ms lost that race (seen in "before" and
//! "after" rows alike).
//!
//! Needs every 127.0.0.0/8 address on loopback, as on Linux, and an
//! open-file limit above the flood size (raised to the hard limit here;
//! the server inherits it). Server, flooder and clients share the
//! machine's cores: the flooder's own CPU is part of what the legitimate
//! clients feel, as on any single machine.
//!
//! ```text
//! cargo bench --bench stateless_flood
//! cargo bench --bench stateless_flood -- --secs 30 --floods 0,9000
//! ```

mod common;
#[path = "common/example_server.rs"]
mod example_server;
#[path = "common/stateless.rs"]
mod stateless;

use std::net::{IpAddr, Ipv4Addr};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures::StreamExt;
use serde_json::json;
use tokio::time::{Instant, MissedTickBehavior};

use example_server::{Counts, build_server_with, bump, start_server};

const LEGIT_CLIENTS: u8 = 20;
const CALL_PERIOD: Duration = Duration::from_millis(200);
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
const FLOOD_SOURCE: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);
const FLOOD_STEPS: u32 = 100;
const FLOOD_DELAY_MS: u64 = 100;
const LIMITS_OFF: [&str; 10] = [
    "--max-requests",
    "none",
    "--max-requests-per-client",
    "none",
    "--request-rate-per-client",
    "none",
    "--max-connections-per-client",
    "none",
    "--max-connections",
    "none",
];
/// How long the flooder waits after a connection that failed or was
/// refused as the server accepted it (its `Retry-After` when it has one).
const RECONNECT_WAIT: Duration = Duration::from_secs(1);

const USAGE: &str = "\
Usage: cargo bench --bench stateless_flood -- [--secs N] [--floods N,N,...]

  --secs N          how long each run lasts (default 15)
  --floods N,N,...  flood sizes (default 0,3000,9000); the retrying flooder
                    runs at each but 0";

fn legit_source(client: u8) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 0, 10 + client)
}

fn http_client(source: Ipv4Addr) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(IpAddr::V4(source))
        // An SSE answer goes out in several small writes; without
        // TCP_NODELAY each round trip can wait ~40 ms on delayed ACKs.
        .tcp_nodelay(true)
        .build()
        .expect("HTTP client")
}

/// Raises this process's open-file limit to its hard limit, so that the
/// flooder's connections fit (the server, started after, inherits it);
/// the limit now. Four lines of FFI rather than a crate for one call.
#[cfg(target_os = "linux")]
fn raise_fd_limit() -> u64 {
    #[repr(C)]
    struct RLimit {
        current: u64,
        max: u64,
    }
    unsafe extern "C" {
        fn getrlimit(resource: i32, limit: *mut RLimit) -> i32;
        fn setrlimit(resource: i32, limit: *const RLimit) -> i32;
    }
    const RLIMIT_NOFILE: i32 = 7;
    let mut limit = RLimit { current: 0, max: 0 };
    // SAFETY: `limit` is a valid `struct rlimit` (two `rlim_t`, 64-bit on
    // Linux) for both calls.
    unsafe {
        if getrlimit(RLIMIT_NOFILE, &mut limit) != 0 {
            return 0;
        }
        let raised = RLimit {
            current: limit.max,
            max: limit.max,
        };
        if setrlimit(RLIMIT_NOFILE, &raised) == 0 {
            return raised.current;
        }
    }
    limit.current
}

#[cfg(not(target_os = "linux"))]
fn raise_fd_limit() -> u64 {
    0
}

/// The server's peak resident set (`VmHWM`), in MB.
fn peak_rss_mb(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|line| line.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

#[derive(Default)]
struct Legit {
    latencies: Vec<Duration>,
    failures: Counts,
}

/// One legitimate client, until cancelled at the end of the run (a call
/// cut by the end counts neither way).
async fn legit(http: &reqwest::Client, url: &str, stats: &mut Legit) {
    let mut ticks = tokio::time::interval(CALL_PERIOD);
    // A slow answer delays the next call instead of bunching calls up.
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    for id in 1.. {
        ticks.tick().await;
        let start = Instant::now();
        let call = async {
            let arguments = json!({ "text": "ping" });
            let call = stateless::tool_call(id, "echo", arguments);
            let response = stateless::post_call(http, url, "echo", &call)
                .send()
                .await
                .map_err(|_| "transport error".to_owned())?;
            let status = response.status();
            let body = response
                .text()
                .await
                .map_err(|_| "transport error".to_owned())?;
            if !status.is_success() {
                return Err(status.as_u16().to_string());
            }
            if !stateless::has_result(&body, id) {
                return Err(format!("{} without a result", status.as_u16()));
            }
            Ok(())
        };
        match tokio::time::timeout(CALL_TIMEOUT, call).await {
            Ok(Ok(())) => stats.latencies.push(start.elapsed()),
            Ok(Err(label)) => bump(&mut stats.failures, label),
            Err(_) => bump(&mut stats.failures, "timeout"),
        }
    }
}

/// What the flooder counts together.
#[derive(Default)]
struct FloodShared {
    held: AtomicUsize,
    held_max: AtomicUsize,
}

/// The most the server reported at once, from its `/metrics` sampled every
/// 20 ms: `count` calls running in its handler (only the flooder calls
/// `count`), request units in flight (all clients; kept only with request
/// limits on) and connections open (all clients; kept only with connection
/// limits on).
#[derive(Default)]
struct ServerView {
    count_running: Option<f64>,
    in_flight: Option<f64>,
    connections: Option<f64>,
}

fn gauge(text: &str, name: &str) -> Option<f64> {
    text.lines().find_map(|line| {
        line.strip_prefix(name)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

async fn sample_metrics(url: &str, view: &mut ServerView) {
    let http = reqwest::Client::new();
    let mut ticks = tokio::time::interval(Duration::from_millis(20));
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let Ok(response) = http.get(url).send().await else {
            continue;
        };
        let Ok(text) = response.text().await else {
            continue;
        };
        for (max, name) in [
            (&mut view.count_running, "demo_count_calls_running"),
            (&mut view.in_flight, "mcp_requests_in_flight"),
            (&mut view.connections, "demo_connections_open"),
        ] {
            if let Some(value) = gauge(&text, name) {
                *max = Some(max.map_or(value, |max: f64| max.max(value)));
            }
        }
    }
}

/// One of the flooder's N call slots.
#[derive(Default)]
struct Flood {
    accepted: u64,
    refusals: Counts,
}

/// Decrements the held count when an accepted call's stream ends or the
/// run cuts it.
struct Holding<'a>(&'a FloodShared);

impl<'a> Holding<'a> {
    fn new(shared: &'a FloodShared) -> Self {
        let now = shared.held.fetch_add(1, Ordering::Relaxed) + 1;
        shared.held_max.fetch_max(now, Ordering::Relaxed);
        Self(shared)
    }
}

impl Drop for Holding<'_> {
    fn drop(&mut self) {
        self.0.held.fetch_sub(1, Ordering::Relaxed);
    }
}

/// One flood slot: a long `count` call, again and again.
async fn flood(
    http: &reqwest::Client,
    url: &str,
    retry_at_once: bool,
    shared: &FloodShared,
    stats: &mut Flood,
) {
    let arguments = json!({ "steps": FLOOD_STEPS, "delay_ms": FLOOD_DELAY_MS });
    for id in 1.. {
        let call = stateless::tool_call_with_progress(id, "count", arguments.clone());
        let response = stateless::post_call(http, url, "count", &call).send().await;
        let response = match response {
            Ok(response) => response,
            Err(_) => {
                // The server is gone, or refused the connection as it
                // accepted it and reset it: never spin.
                bump(&mut stats.refusals, "transport error");
                tokio::time::sleep(RECONNECT_WAIT).await;
                continue;
            }
        };
        let status = response.status();
        if status.is_success() {
            stats.accepted += 1;
            // Held from its answer's headers until its result arrives: the
            // server releases the call as its stream ends, just after the
            // result, and this client, busy with thousands of streams,
            // reads the end later still (counted till then it would show
            // the next call's headers, read first, on top).
            let mut holding = Some(Holding::new(shared));
            let mut body = response.bytes_stream();
            while let Some(Ok(chunk)) = body.next().await {
                if holding.is_some() && chunk.windows(8).any(|bytes| bytes == b"\"result\"") {
                    holding = None;
                }
            }
            continue;
        }
        // The request layer's refusals keep the connection; a connection
        // refused as it was accepted is answered `Connection: close`.
        let at_accept = status == reqwest::StatusCode::SERVICE_UNAVAILABLE
            && response
                .headers()
                .get(reqwest::header::CONNECTION)
                .is_some_and(|value| value.as_bytes().eq_ignore_ascii_case(b"close"));
        if at_accept {
            bump(&mut stats.refusals, "503 at accept");
        } else {
            bump(&mut stats.refusals, status.as_u16().to_string());
        }
        let wait = response
            .headers()
            .get("retry-after")
            .and_then(|value| value.to_str().ok()?.parse().ok())
            .map_or(RECONNECT_WAIT, Duration::from_secs);
        let _ = response.bytes().await;
        if !retry_at_once || at_accept {
            tokio::time::sleep(wait).await;
        }
    }
}

struct Run {
    label: &'static str,
    flood: usize,
    retry_at_once: bool,
}

struct Outcome {
    p50_ms: f64,
    p99_ms: f64,
    done: usize,
    failed: Counts,
    rss_mb: Option<f64>,
    held_max: usize,
    server: ServerView,
    flood_accepted: u64,
    flood_refused: Counts,
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let index = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[index].as_secs_f64() * 1e3
}

fn show(counts: &Counts) -> String {
    if counts.is_empty() {
        return "0".into();
    }
    let total: u64 = counts.values().sum();
    let parts: Vec<String> = counts
        .iter()
        .map(|(label, count)| format!("{label}: {count}"))
        .collect();
    format!("{total} ({})", parts.join(", "))
}

fn measure(exe: &std::path::Path, run: &Run, secs: u64) -> Result<Outcome, String> {
    let extra: Vec<String> = if run.label == "before" {
        LIMITS_OFF.iter().map(|&flag| flag.to_owned()).collect()
    } else {
        Vec::new()
    };
    let mut server = start_server(exe, "1000", &extra)?;
    let pid = server.child.id();
    let url = server.url.clone();
    let duration = Duration::from_secs(secs);
    let end = std::time::Instant::now() + duration;

    // The legitimate clients and the metrics sampler on a runtime of their
    // own: the flooder's thousands of tasks must not delay their timers.
    let legit_thread = std::thread::spawn({
        let url = url.clone();
        move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("tokio runtime");
            runtime.block_on(async {
                let end = Instant::from_std(end);
                let tasks: Vec<_> = (0..LEGIT_CLIENTS)
                    .map(|client| {
                        let (http, url) = (http_client(legit_source(client)), url.clone());
                        tokio::spawn(async move {
                            let mut stats = Legit::default();
                            let _ =
                                tokio::time::timeout_at(end, legit(&http, &url, &mut stats)).await;
                            stats
                        })
                    })
                    .collect();
                // The server's view too: on the flooder's busy runtime its
                // samples would come late and miss peaks.
                let metrics_url = url.replace("/mcp", "/metrics");
                let sampler = tokio::spawn(async move {
                    let mut view = ServerView::default();
                    let sampling = sample_metrics(&metrics_url, &mut view);
                    let _ = tokio::time::timeout_at(end, sampling).await;
                    view
                });
                let legits = futures::future::join_all(tasks).await;
                (legits, sampler.await.unwrap_or_default())
            })
        }
    });
    let shared = Arc::new(FloodShared::default());
    let runtime = common::runtime();
    let floods = runtime.block_on(async {
        let end = Instant::from_std(end);
        // One client (one connection pool) for every slot: one source.
        let http = http_client(FLOOD_SOURCE);
        let tasks: Vec<_> = (0..run.flood)
            .map(|_| {
                let (http, url, shared) = (http.clone(), url.clone(), shared.clone());
                let retry_at_once = run.retry_at_once;
                tokio::spawn(async move {
                    let mut stats = Flood::default();
                    let slot = flood(&http, &url, retry_at_once, &shared, &mut stats);
                    let _ = tokio::time::timeout_at(end, slot).await;
                    stats
                })
            })
            .collect();
        tokio::time::sleep_until(end).await;
        futures::future::join_all(tasks).await
    });
    drop(runtime);
    let (legits, server_view) = legit_thread.join().map_err(|_| "a legit client panicked")?;
    let rss_mb = peak_rss_mb(pid);
    if let Ok(Some(status)) = server.child.try_wait() {
        return Err(format!(
            "the server exited during the run ({status}); its stderr:\n{}",
            server.stderr().trim_end()
        ));
    }
    drop(server);

    let mut latencies = Vec::new();
    let mut failed = Counts::new();
    for stats in legits {
        let stats = stats.map_err(|_| "a legit client panicked")?;
        latencies.extend(stats.latencies);
        for (label, count) in stats.failures {
            *failed.entry(label).or_default() += count;
        }
    }
    latencies.sort();
    let mut flood_accepted = 0;
    let mut flood_refused = Counts::new();
    for stats in floods {
        let stats = stats.map_err(|_| "a flood slot panicked")?;
        flood_accepted += stats.accepted;
        for (label, count) in stats.refusals {
            *flood_refused.entry(label).or_default() += count;
        }
    }
    Ok(Outcome {
        p50_ms: percentile(&latencies, 0.50),
        p99_ms: percentile(&latencies, 0.99),
        done: latencies.len(),
        failed,
        rss_mb,
        held_max: shared.held_max.load(Ordering::Relaxed),
        server: server_view,
        flood_accepted,
        flood_refused,
    })
}

struct Options {
    secs: u64,
    floods: Vec<usize>,
}

/// `None` when there is nothing to run (`--list`, `--help`).
fn parse_options() -> Result<Option<Options>, String> {
    let mut options = Options {
        secs: 15,
        floods: vec![0, 3_000, 9_000],
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--secs" => {
                let value = args.next().unwrap_or_default();
                options.secs = value
                    .parse()
                    .ok()
                    .filter(|&secs| secs >= 1)
                    .ok_or_else(|| format!("--secs {value:?}: expected whole seconds >= 1"))?;
            }
            "--floods" => {
                let value = args.next().unwrap_or_default();
                options.floods = value
                    .split(',')
                    .map(|n| n.trim().parse())
                    .collect::<Result<_, _>>()
                    .map_err(|_| format!("--floods {value:?}: expected e.g. 0,3000,9000"))?;
            }
            // `cargo bench` passes --bench; this file has no criterion
            // benchmarks to --list.
            "--bench" => {}
            "--list" => return Ok(None),
            "--help" | "-h" => {
                println!("{USAGE}");
                return Ok(None);
            }
            flag if flag.starts_with('-') => return Err(format!("unknown flag {flag}\n\n{USAGE}")),
            // A name filter `cargo bench FILTER` passes to every bench.
            _ => {}
        }
    }
    Ok(Some(options))
}

fn run() -> Result<(), String> {
    let Some(options) = parse_options()? else {
        return Ok(());
    };
    let sources = (0..LEGIT_CLIENTS).map(legit_source).chain([FLOOD_SOURCE]);
    for source in sources {
        std::net::TcpListener::bind((source, 0)).map_err(|e| {
            format!(
                "cannot use the source address {source}: {e} \
                 (the bench needs all of 127.0.0.0/8 on loopback, as on Linux)"
            )
        })?;
    }
    let largest = options.floods.iter().copied().max().unwrap_or(0);
    let fd_limit = raise_fd_limit();
    if fd_limit < largest as u64 + 1_000 {
        println!(
            "note: the open-file limit is {fd_limit}; a flood of {largest} needs more \
             (raise the hard limit, e.g. `ulimit -Hn`)"
        );
    }
    // With `/metrics`: the server's own counts of what it holds.
    let exe = build_server_with(&["metrics"])?;
    let mut runs = Vec::new();
    for label in ["before", "after"] {
        for &flood in &options.floods {
            runs.push(Run {
                label,
                flood,
                retry_at_once: false,
            });
        }
    }
    for &flood in options.floods.iter().filter(|&&flood| flood > 0) {
        runs.push(Run {
            label: "after",
            flood,
            retry_at_once: true,
        });
    }
    println!(
        "stateless_flood: {LEGIT_CLIENTS} clients calling echo every {} ms; the flood from \
         {FLOOD_SOURCE}: count calls of {FLOOD_STEPS} x {FLOOD_DELAY_MS} ms; {} s per run",
        CALL_PERIOD.as_millis(),
        options.secs
    );
    println!("before: examples/server {}", LIMITS_OFF.join(" "));
    println!("after: examples/server with its default limits");
    let mut rows = Vec::new();
    for run in &runs {
        let outcome = measure(&exe, run, options.secs)?;
        let flood = match (run.flood, run.retry_at_once) {
            (0, _) => "none".to_owned(),
            (n, false) => n.to_string(),
            (n, true) => format!("{n}, retries every refusal"),
        };
        let rss = outcome
            .rss_mb
            .map_or("?".to_owned(), |mb| format!("{mb:.1} MB"));
        let shown = |value: Option<f64>| value.map_or("-".to_owned(), |n| format!("{n:.0}"));
        let running = shown(outcome.server.count_running);
        let in_flight = shown(outcome.server.in_flight);
        let connections = shown(outcome.server.connections);
        println!(
            "{} / flood {flood}: legit p50 {:.1} ms, p99 {:.1} ms, {} done, failed {}; \
             server RSS peak {rss}; flood held at most {} at once as the flooder saw it, \
             {running} count calls running in the server, {in_flight} requests in flight \
             and {connections} connections open (all clients) ({} accepted, refused {})",
            run.label,
            outcome.p50_ms,
            outcome.p99_ms,
            outcome.done,
            show(&outcome.failed),
            outcome.held_max,
            outcome.flood_accepted,
            show(&outcome.flood_refused),
        );
        rows.push(format!(
            "| {} | {flood} | {:.1} | {:.1} | {} | {} | {rss} | {running} | {} | {in_flight} \
             | {connections} | {} |",
            run.label,
            outcome.p50_ms,
            outcome.p99_ms,
            outcome.done,
            outcome.failed.values().sum::<u64>(),
            outcome.held_max,
            outcome.flood_refused.values().sum::<u64>(),
        ));
    }
    println!();
    println!(
        "| limits | flood | legit p50 (ms) | legit p99 (ms) | legit calls done | failed legit calls \
         | server RSS peak | flood held at once: server | flooder's view | in flight, all clients \
         | connections open, all clients | flood calls refused |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for row in rows {
        println!("{row}");
    }
    Ok(())
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("stateless_flood: {message}");
            ExitCode::FAILURE
        }
    }
}
