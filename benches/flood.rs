//! One client floods `initialize` while others use the server, against the
//! real `examples/server` process, for a fixed time (default 10 s):
//!
//! - 20 active clients, each on its own loopback source address
//!   127.0.0.10 to 127.0.0.29: `initialize` + `notifications/initialized`,
//!   then one `echo` call every 200 ms; a 404 (session gone) makes the
//!   client initialize again (a refused initialize is retried after 200 ms);
//! - one long call from 127.0.0.9: `count` with 8 steps 1 s apart, its SSE
//!   answer read to the end (a refused initialize is retried every 500 ms);
//! - one flooder on 127.0.0.200: 4 concurrent loops of `initialize` only,
//!   never `notifications/initialized`, never DELETE.
//!
//! The server runs with `--max-sessions 100` and the flags given with
//! `--server-args` (after ours, so they can override them). The bench builds
//! it with `cargo build --release --example server` (a no-op when it is up
//! to date) and runs the executable cargo reports, so `cargo bench --bench
//! flood` works from a clean checkout and always measures the current code.
//! The server's own `RUST_LOG` default ("info") is kept whatever the
//! caller's environment says, so runs compare; its live session count is
//! read from its `session created` / `session closed` log lines (it has no
//! other way to tell).
//!
//! Needs every 127.0.0.0/8 address on loopback, as on Linux. Server and
//! clients share the machine's cores, as in any loopback test.
//!
//! ```text
//! cargo bench --bench flood
//! cargo bench --bench flood -- --server-args "--rate-limit 20/1"
//! cargo bench --bench flood -- --secs 20 --server-args "--max-sessions 200"
//! ```

mod common;
#[path = "common/example_server.rs"]
mod example_server;

use std::net::{IpAddr, Ipv4Addr};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::time::{Instant, MissedTickBehavior};

use example_server::{Counts, build_server, bump, start_server};

/// The version `tests/common` speaks.
const PROTOCOL_VERSION: &str = "2025-11-25";
const MAX_SESSIONS: &str = "100";
const ACTIVE_CLIENTS: u8 = 20;
const CALL_PERIOD: Duration = Duration::from_millis(200);
const ACTIVE_RETRY: Duration = Duration::from_millis(200);
const LONG_CALL_RETRY: Duration = Duration::from_millis(500);
const LONG_CALL_STEPS: u32 = 8;
const LONG_CALL_DELAY_MS: u64 = 1000;
const FLOOD_LOOPS: usize = 4;
const LONG_CALL_SOURCE: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 9);
const FLOOD_SOURCE: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 200);

const USAGE: &str = "\
Usage: cargo bench --bench flood -- [--secs N] [--server-args \"FLAGS\"]

  --secs N               how long the clients run (default 10)
  --server-args \"FLAGS\"  more flags for examples/server, after --max-sessions 100,
                         e.g. \"--rate-limit 20/1\"";

fn active_source(client: u8) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 0, 10 + client)
}

fn merge(into: &mut Counts, from: Counts) {
    for (label, count) in from {
        *into.entry(label).or_default() += count;
    }
}

fn show(counts: &Counts) -> String {
    if counts.is_empty() {
        return "none".into();
    }
    let total: u64 = counts.values().sum();
    let parts: Vec<String> = counts
        .iter()
        .map(|(label, count)| format!("{label}: {count}"))
        .collect();
    format!("{total} ({})", parts.join(", "))
}

fn transport_label(error: &reqwest::Error) -> String {
    if error.is_connect() {
        "connect error".into()
    } else {
        "transport error".into()
    }
}

/// The JSON-RPC messages in an SSE body (priming events carry no data).
fn sse_messages(body: &str) -> Vec<Value> {
    body.split("\n\n").filter_map(sse_message).collect()
}

fn sse_message(event: &str) -> Option<Value> {
    let data: String = event
        .lines()
        .filter_map(|line| line.strip_prefix("data:"))
        .map(str::trim_start)
        .collect();
    serde_json::from_str(&data).ok()
}

/// Speaks MCP's Streamable HTTP by hand from one source address, with the
/// request shapes of `tests/common`.
struct Mcp {
    http: reqwest::Client,
    url: String,
}

enum Call {
    Answered,
    SessionGone,
    Failed(String),
}

impl Mcp {
    fn new(url: &str, source: Ipv4Addr) -> Self {
        let http = reqwest::Client::builder()
            .local_address(IpAddr::V4(source))
            // An SSE answer goes out in several small writes; without
            // TCP_NODELAY each round trip can wait ~40 ms on delayed ACKs.
            .tcp_nodelay(true)
            .build()
            .expect("HTTP client");
        Self {
            http,
            url: url.to_owned(),
        }
    }

    fn post(&self, session: Option<&str>, body: &Value) -> reqwest::RequestBuilder {
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
        request
    }

    /// `initialize` alone: the new session's id, or why there is none.
    async fn initialize(&self) -> Result<String, String> {
        let body = json!({
            "jsonrpc": "2.0", "id": 0, "method": "initialize",
            "params": {
                "protocolVersion": PROTOCOL_VERSION,
                "capabilities": {},
                "clientInfo": { "name": "flood", "version": "1" }
            }
        });
        let response = self
            .post(None, &body)
            .send()
            .await
            .map_err(|e| transport_label(&e))?;
        let status = response.status();
        let session = response
            .headers()
            .get("mcp-session-id")
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned);
        let body = response.text().await.map_err(|e| transport_label(&e))?;
        if !status.is_success() {
            return Err(status.as_u16().to_string());
        }
        let Some(session) = session else {
            return Err(format!("{} without a session id", status.as_u16()));
        };
        if !sse_messages(&body)
            .iter()
            .any(|message| message["result"]["serverInfo"].is_object())
        {
            return Err(format!("{} without a result", status.as_u16()));
        }
        Ok(session)
    }

    /// `initialize` + `notifications/initialized`, as a real client does.
    async fn open_session(&self) -> Result<String, String> {
        let session = self.initialize().await?;
        let body = json!({ "jsonrpc": "2.0", "method": "notifications/initialized" });
        let status = self
            .post(Some(&session), &body)
            .send()
            .await
            .map_err(|e| transport_label(&e))?
            .status();
        if status != StatusCode::ACCEPTED {
            return Err(format!("{} at notifications/initialized", status.as_u16()));
        }
        Ok(session)
    }

    async fn echo(&self, session: &str, id: u64) -> Call {
        let body = json!({
            "jsonrpc": "2.0", "id": id, "method": "tools/call",
            "params": { "name": "echo", "arguments": { "text": "ping" } }
        });
        let response = match self.post(Some(session), &body).send().await {
            Ok(response) => response,
            Err(error) => return Call::Failed(transport_label(&error)),
        };
        let status = response.status();
        if status == StatusCode::NOT_FOUND {
            return Call::SessionGone;
        }
        let text = match response.text().await {
            Ok(text) => text,
            Err(error) => return Call::Failed(transport_label(&error)),
        };
        if !status.is_success() {
            return Call::Failed(status.as_u16().to_string());
        }
        let answered = sse_messages(&text)
            .iter()
            .any(|message| message["id"] == id && message["result"].is_object());
        if answered {
            Call::Answered
        } else {
            Call::Failed(format!("{} without a result", status.as_u16()))
        }
    }
}

#[derive(Default)]
struct Active {
    calls: u64,
    failures: Counts,
    sessions: u64,
    lost: u64,
    refusals: Counts,
}

/// One active client, until cancelled at the end of the run.
async fn active(mcp: &Mcp, stats: &mut Active) {
    let mut id = 0;
    loop {
        let session = match mcp.open_session().await {
            Ok(session) => session,
            Err(label) => {
                bump(&mut stats.refusals, label);
                tokio::time::sleep(ACTIVE_RETRY).await;
                continue;
            }
        };
        stats.sessions += 1;
        let mut ticks = tokio::time::interval(CALL_PERIOD);
        // A slow answer delays the next call instead of bunching calls up.
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            id += 1;
            match mcp.echo(&session, id).await {
                Call::Answered => stats.calls += 1,
                Call::SessionGone => {
                    bump(&mut stats.failures, "404");
                    stats.lost += 1;
                    break;
                }
                Call::Failed(label) => bump(&mut stats.failures, label),
            }
        }
    }
}

enum LongOutcome {
    NotStarted,
    Running { since: Instant },
    Completed { secs: f64 },
    Cut { secs: f64, why: &'static str },
    Failed(String),
}

struct LongCall {
    refusals: Counts,
    progress: u32,
    outcome: LongOutcome,
}

/// The long call, until it ends or the run does.
async fn long_call(mcp: &Mcp, stats: &mut LongCall) {
    let session = loop {
        match mcp.open_session().await {
            Ok(session) => break session,
            Err(label) => {
                bump(&mut stats.refusals, label);
                tokio::time::sleep(LONG_CALL_RETRY).await;
            }
        }
    };
    let body = json!({
        "jsonrpc": "2.0", "id": 1, "method": "tools/call",
        "params": {
            "name": "count",
            "arguments": { "steps": LONG_CALL_STEPS, "delay_ms": LONG_CALL_DELAY_MS },
            // Progress per step shows how far the call got before a cut.
            "_meta": { "progressToken": "flood" }
        }
    });
    let since = Instant::now();
    stats.outcome = LongOutcome::Running { since };
    let response = match mcp.post(Some(&session), &body).send().await {
        Ok(response) => response,
        Err(error) => {
            stats.outcome = LongOutcome::Failed(transport_label(&error));
            return;
        }
    };
    if !response.status().is_success() {
        stats.outcome = LongOutcome::Failed(format!("status {}", response.status().as_u16()));
        return;
    }
    let mut body = response.bytes_stream();
    let mut buffer = String::new();
    loop {
        while let Some(end) = buffer.find("\n\n") {
            let event: String = buffer.drain(..end + 2).collect();
            let Some(message) = sse_message(&event) else {
                continue;
            };
            if message["method"] == "notifications/progress" {
                stats.progress += 1;
            } else if message["id"] == 1 {
                let secs = since.elapsed().as_secs_f64();
                stats.outcome = if message["result"].is_object() {
                    LongOutcome::Completed { secs }
                } else {
                    LongOutcome::Failed(format!("JSON-RPC error {}", message["error"]))
                };
                return;
            }
        }
        let why = match body.next().await {
            Some(Ok(chunk)) => {
                buffer.push_str(&String::from_utf8_lossy(&chunk));
                continue;
            }
            Some(Err(_)) => "the stream broke",
            None => "the stream ended",
        };
        let secs = since.elapsed().as_secs_f64();
        stats.outcome = LongOutcome::Cut { secs, why };
        return;
    }
}

#[derive(Default)]
struct Flood {
    opened: u64,
    refusals: Counts,
}

/// One flooding loop, until cancelled at the end of the run.
async fn flood(mcp: &Mcp, stats: &mut Flood) {
    loop {
        match mcp.initialize().await {
            Ok(_) => stats.opened += 1,
            Err(label) => {
                // A refusal is answered at once (the flood goes on), but a
                // transport error (server gone) must not spin a core.
                if label.ends_with("error") {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                bump(&mut stats.refusals, label);
            }
        }
    }
}

/// What the server's log says about sessions.
struct Options {
    secs: u64,
    server_args: Vec<String>,
}

/// `None` when there is nothing to run (`--list`, `--help`).
fn parse_options() -> Result<Option<Options>, String> {
    let mut options = Options {
        secs: 10,
        server_args: Vec::new(),
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
            "--server-args" => {
                let value = args.next().ok_or("--server-args needs a value")?;
                options
                    .server_args
                    .extend(value.split_whitespace().map(str::to_owned));
            }
            // `cargo bench` passes --bench; --list asks for the names of
            // the benchmarks (this file has no criterion benchmarks).
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
    // Fail early and clearly where only 127.0.0.1 is on loopback.
    let sources = (0..ACTIVE_CLIENTS)
        .map(active_source)
        .chain([LONG_CALL_SOURCE, FLOOD_SOURCE]);
    for source in sources {
        std::net::TcpListener::bind((source, 0)).map_err(|e| {
            format!(
                "cannot use the source address {source}: {e} \
                 (the bench needs all of 127.0.0.0/8 on loopback, as on Linux)"
            )
        })?;
    }
    let exe = build_server()?;
    let mut server = start_server(&exe, MAX_SESSIONS, &options.server_args)?;
    let duration = Duration::from_secs(options.secs);
    let mut server_args = vec!["--max-sessions".to_owned(), MAX_SESSIONS.to_owned()];
    server_args.extend(options.server_args.iter().cloned());
    println!(
        "flood: examples/server {} for {} s",
        server_args.join(" "),
        options.secs
    );
    println!("server: {}", server.config);
    if options.secs < 9 {
        println!("note: the long call takes 8 s; with --secs below 9 it cannot complete");
    }

    let runtime = common::runtime();
    let (end, actives, long, floods) = runtime.block_on(async {
        let end = Instant::now() + duration;
        let actives: Vec<_> = (0..ACTIVE_CLIENTS)
            .map(|client| {
                let mcp = Mcp::new(&server.url, active_source(client));
                tokio::spawn(async move {
                    let mut stats = Active::default();
                    let _ = tokio::time::timeout_at(end, active(&mcp, &mut stats)).await;
                    stats
                })
            })
            .collect();
        let long = {
            let mcp = Mcp::new(&server.url, LONG_CALL_SOURCE);
            tokio::spawn(async move {
                let mut stats = LongCall {
                    refusals: Counts::new(),
                    progress: 0,
                    outcome: LongOutcome::NotStarted,
                };
                let _ = tokio::time::timeout_at(end, long_call(&mcp, &mut stats)).await;
                stats
            })
        };
        // One client (one connection pool) for the 4 loops: one source.
        let flooder = Arc::new(Mcp::new(&server.url, FLOOD_SOURCE));
        let floods: Vec<_> = (0..FLOOD_LOOPS)
            .map(|_| {
                let mcp = flooder.clone();
                tokio::spawn(async move {
                    let mut stats = Flood::default();
                    let _ = tokio::time::timeout_at(end, flood(&mcp, &mut stats)).await;
                    stats
                })
            })
            .collect();
        let actives = futures::future::join_all(actives).await;
        let long = long.await.expect("long call task");
        let floods = futures::future::join_all(floods).await;
        (end, actives, long, floods)
    });
    drop(runtime);
    if let Ok(Some(status)) = server.child.try_wait() {
        return Err(format!(
            "the server exited during the run ({status}); its stderr:\n{}",
            server.stderr().trim_end()
        ));
    }

    // Requests cut at the end may still close sessions; read the log once
    // it has been quiet for 200 ms (at most 2 s).
    let mut last = (u64::MAX, u64::MAX);
    for _ in 0..20 {
        std::thread::sleep(Duration::from_millis(100));
        let log = server.log.lock().unwrap();
        let now = (log.created, log.closed.values().sum());
        if now == last {
            break;
        }
        last = now;
    }

    let mut total = Active::default();
    let (mut kept, mut lost, mut never) = (0, 0, 0);
    let mut reinitialized = 0;
    for stats in actives {
        let stats = stats.expect("active client task");
        if stats.sessions == 0 {
            never += 1;
        } else if stats.lost > 0 {
            lost += 1;
        } else {
            kept += 1;
        }
        reinitialized += stats.sessions.saturating_sub(1);
        total.calls += stats.calls;
        merge(&mut total.failures, stats.failures);
        merge(&mut total.refusals, stats.refusals);
    }
    let secs = duration.as_secs_f64();
    println!();
    println!(
        "active clients ({ACTIVE_CLIENTS}, one echo call every {} ms each):",
        CALL_PERIOD.as_millis()
    );
    println!("  echo calls answered: {}", total.calls);
    println!("  echo calls failed: {}", show(&total.failures));
    println!("  re-initializations: {reinitialized}");
    println!("  initializations refused: {}", show(&total.refusals));
    println!(
        "  active clients that kept their session: {kept} of {ACTIVE_CLIENTS} \
         ({lost} lost it, {never} never got one)"
    );

    println!(
        "long call (count, {LONG_CALL_STEPS} steps {LONG_CALL_DELAY_MS} ms apart, from {LONG_CALL_SOURCE}):"
    );
    println!("  initializations refused: {}", show(&long.refusals));
    println!(
        "  progress notifications received: {} of {LONG_CALL_STEPS}",
        long.progress
    );
    let outcome = match long.outcome {
        LongOutcome::NotStarted => "no (never got a session)".to_owned(),
        LongOutcome::Running { since } => format!(
            "no (the run ended {:.1} s into the call, before its result)",
            (end - since).as_secs_f64()
        ),
        LongOutcome::Completed { secs } => format!("yes (in {secs:.1} s)"),
        LongOutcome::Cut { secs, why } => {
            format!("no ({why} {secs:.1} s into the call, without the result)")
        }
        LongOutcome::Failed(why) => format!("no ({why})"),
    };
    println!("  long call completed: {outcome}");

    let mut flooded = Flood::default();
    for stats in floods {
        let stats = stats.expect("flood task");
        flooded.opened += stats.opened;
        merge(&mut flooded.refusals, stats.refusals);
    }
    println!("flooder ({FLOOD_LOOPS} loops of initialize only, from {FLOOD_SOURCE}):");
    println!(
        "  flooder sessions opened: {} ({:.0}/s), refused: {}",
        flooded.opened,
        flooded.opened as f64 / secs,
        show(&flooded.refusals)
    );

    println!("server (from its log):");
    let log = server.log.lock().unwrap();
    let closed: u64 = log.closed.values().sum();
    if log.created == 0 {
        println!("  live sessions at the end: unknown (no session events in its log)");
    } else {
        println!(
            "  sessions created: {}, closed: {}",
            log.created,
            show(&log.closed)
        );
        println!(
            "  live sessions at the end: {}",
            log.created.saturating_sub(closed)
        );
    }
    drop(log);
    Ok(())
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("flood: {message}");
            ExitCode::FAILURE
        }
    }
}
