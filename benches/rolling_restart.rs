//! A rolling restart: two `examples/server` processes, A and B, share
//! sessions and replayable events through one Redis (the same key prefix);
//! A gets SIGTERM while its clients work, and a balancer sends every new
//! request to B from that moment. What the clients lose is counted:
//!
//! - ten clients, each on its own loopback source address (127.0.0.10 to
//!   127.0.0.19), each with a session made on A (`initialize` +
//!   `notifications/initialized`, protocol 2025-11-25), each calling `echo`
//!   every 100 ms, the ten 10 ms apart. A 404 means the session is gone:
//!   the client initializes again (on B) and counts a re-initialization. A
//!   503 with `Retry-After` is retried after that delay (a retried
//!   refusal). Any other answer but 200 with the call's result, or no
//!   answer, is a failed call;
//! - one client (127.0.0.9) with a long `count` call on A (20 steps of
//!   250 ms, with a progress token), reading its SSE stream. If the stream
//!   ends without the answer, it resumes as a real client does: a `GET`
//!   with `Mcp-Session-Id` and `Last-Event-ID` (the last event id it saw)
//!   on the balancer's current target, every 250 ms, until the answer
//!   arrives or 30 s pass;
//! - 1 s after the long call started, A gets SIGTERM (`kill -TERM`), or
//!   SIGKILL with `--kill` (a crash); requests already in flight on A stay
//!   on A. The clients run for `--secs` seconds (default 10) after the
//!   signal; A is given until 30 s after it to exit.
//!
//! The report gives A's exit status and the time from the signal to its
//! exit, the calls made, failed and retried, the re-initializations, the
//! sessions B served without a new `initialize`, what the long call got
//! (progress steps, duplicates, its answer, the resumes) and A's drain
//! summary line if it printed one.
//!
//! The bench builds `examples/server` with `--features redis` (release) and
//! runs it twice with `--redis $REDIS_URL` (default
//! `redis://127.0.0.1:6379/`) and a key prefix of the run's own, whose keys
//! it deletes at the end. `--server PATH` (or `ROLLING_RESTART_SERVER`)
//! runs another build instead, an older commit's say, to compare: it must
//! have been built with `--features redis`, and it is given only
//! `--bind`, `--max-sessions`, `--redis`, `--redis-prefix` and what
//! `--server-args` adds. Needs a Redis, and every 127.0.0.0/8 address on
//! loopback (as on Linux).
//!
//! ```text
//! cargo bench --bench rolling_restart --features redis
//! cargo bench --bench rolling_restart --features redis -- --kill
//! cargo bench --bench rolling_restart --features redis -- --server /path/to/old/examples/server
//! ```

mod common;
#[path = "common/example_server.rs"]
mod example_server;

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::process::{Command, ExitCode, ExitStatus};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::StreamExt;
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use example_server::{Counts, Server, build_server_with, bump, start_server};

const PROTOCOL_VERSION: &str = "2025-11-25";
const MAX_SESSIONS: &str = "1000";
const CLIENTS: u8 = 10;
const CALL_PERIOD: Duration = Duration::from_millis(100);
const LONG_CALL_SOURCE: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 9);
const LONG_CALL_ID: u64 = 1;
const LONG_CALL_STEPS: u64 = 20;
const LONG_CALL_DELAY_MS: u64 = 250;
/// From the long call's start to the signal.
const SIGNAL_AFTER: Duration = Duration::from_secs(1);
const RESUME_EVERY: Duration = Duration::from_millis(250);
const RESUME_FOR: Duration = Duration::from_secs(30);
/// From the signal, how long A may take to exit (its drain timeout, 25 s
/// by default, and the 5 s it gives connections to close).
const EXIT_WITHIN: Duration = Duration::from_secs(30);

const USAGE: &str = "\
Usage: cargo bench --bench rolling_restart --features redis -- [FLAGS]

  --secs N               how long the clients run after the signal (default 10)
  --kill                 SIGKILL instead of SIGTERM (a crash)
  --server PATH          run this examples/server build (built with --features
                         redis) instead of building the current one; also
                         ROLLING_RESTART_SERVER
  --server-args \"FLAGS\"  more flags for both instances, e.g. \"--drain-timeout 5\"

REDIS_URL names the Redis (default redis://127.0.0.1:6379/).";

fn client_source(client: u8) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 0, 10 + client)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Instance {
    A,
    B,
}

impl fmt::Display for Instance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Instance::A => "A",
            Instance::B => "B",
        })
    }
}

/// Where a new request goes: A until the signal, B from then on.
struct Balancer {
    a: String,
    b: String,
    to_b: AtomicBool,
}

impl Balancer {
    fn target(&self) -> (Instance, &str) {
        if self.to_b.load(Ordering::SeqCst) {
            (Instance::B, &self.b)
        } else {
            (Instance::A, &self.a)
        }
    }
}

fn transport_label(error: &reqwest::Error) -> String {
    if error.is_connect() {
        "connect error".into()
    } else {
        "transport error".into()
    }
}

/// An SSE event's `id:` and its `data:` lines joined.
fn sse_fields(event: &str) -> (Option<String>, Option<String>) {
    let mut id = None;
    let mut data: Option<String> = None;
    for line in event.lines() {
        if let Some(value) = line.strip_prefix("id:") {
            id = Some(value.trim_start().to_owned());
        } else if let Some(chunk) = line.strip_prefix("data:") {
            data.get_or_insert_default().push_str(chunk.trim_start());
        }
    }
    (id, data)
}

/// The JSON-RPC messages in an SSE body (priming events carry no data).
fn sse_messages(body: &str) -> Vec<Value> {
    body.split("\n\n")
        .filter_map(|event| sse_fields(event).1)
        .filter_map(|data| serde_json::from_str(&data).ok())
        .collect()
}

/// The answer to one `echo` call.
enum Call {
    Answered,
    SessionGone,
    /// 503 with `Retry-After`.
    Refused(Duration),
    Failed(String),
}

/// Speaks MCP's Streamable HTTP by hand from one source address, to the
/// balancer's current target.
struct Mcp {
    http: reqwest::Client,
    balancer: Arc<Balancer>,
}

impl Mcp {
    fn new(balancer: Arc<Balancer>, source: Ipv4Addr) -> Self {
        let http = reqwest::Client::builder()
            .local_address(IpAddr::V4(source))
            // An SSE answer goes out in several small writes; without
            // TCP_NODELAY each round trip can wait ~40 ms on delayed ACKs.
            .tcp_nodelay(true)
            .build()
            .expect("HTTP client");
        Self { http, balancer }
    }

    fn post(&self, url: &str, session: Option<&str>, body: &Value) -> reqwest::RequestBuilder {
        let mut request = self
            .http
            .post(url)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .header("mcp-protocol-version", PROTOCOL_VERSION)
            .json(body);
        if let Some(session) = session {
            request = request.header("mcp-session-id", session);
        }
        request
    }

    /// `initialize` + `notifications/initialized` on the current target:
    /// the new session's id, or why there is none.
    async fn open_session(&self) -> Result<String, String> {
        let (_, url) = self.balancer.target();
        let body = json!({
            "jsonrpc": "2.0", "id": 0, "method": "initialize",
            "params": {
                "protocolVersion": PROTOCOL_VERSION,
                "capabilities": {},
                "clientInfo": { "name": "rolling_restart", "version": "1" }
            }
        });
        let response = self
            .post(url, None, &body)
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
        let Some(session) = session.filter(|_| status.is_success()) else {
            return Err(status.as_u16().to_string());
        };
        if !sse_messages(&body)
            .iter()
            .any(|message| message["result"]["serverInfo"].is_object())
        {
            return Err(format!("{} without a result", status.as_u16()));
        }
        let body = json!({ "jsonrpc": "2.0", "method": "notifications/initialized" });
        let status = self
            .post(url, Some(&session), &body)
            .send()
            .await
            .map_err(|e| transport_label(&e))?
            .status();
        if status != StatusCode::ACCEPTED {
            return Err(format!("{} at notifications/initialized", status.as_u16()));
        }
        Ok(session)
    }

    /// One `echo` call in `session`, sent to the current target.
    async fn echo(&self, session: &str, id: u64) -> (Instance, Call) {
        let (on, url) = self.balancer.target();
        let body = json!({
            "jsonrpc": "2.0", "id": id, "method": "tools/call",
            "params": { "name": "echo", "arguments": { "text": "ping" } }
        });
        let response = match self.post(url, Some(session), &body).send().await {
            Ok(response) => response,
            Err(error) => return (on, Call::Failed(transport_label(&error))),
        };
        let status = response.status();
        if status == StatusCode::NOT_FOUND {
            return (on, Call::SessionGone);
        }
        let retry_after = response
            .headers()
            .get("retry-after")
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.trim().parse::<u64>().ok());
        if let (StatusCode::SERVICE_UNAVAILABLE, Some(secs)) = (status, retry_after) {
            return (on, Call::Refused(Duration::from_secs(secs)));
        }
        let text = match response.text().await {
            Ok(text) => text,
            Err(error) => return (on, Call::Failed(transport_label(&error))),
        };
        if status != StatusCode::OK {
            return (on, Call::Failed(status.as_u16().to_string()));
        }
        let answered = sse_messages(&text)
            .iter()
            .any(|message| message["id"] == id && message["result"].is_object());
        let call = match answered {
            true => Call::Answered,
            false => Call::Failed("200 without a result".into()),
        };
        (on, call)
    }
}

/// A call or an `initialize` that failed.
struct Failure {
    client: Ipv4Addr,
    label: String,
    on: Instance,
    sent: Instant,
    seen: Instant,
}

#[derive(Default)]
struct Active {
    made_on_a: u64,
    made_on_b: u64,
    answered: u64,
    failed: Vec<Failure>,
    initialize_failed: Vec<Failure>,
    refused_and_retried: u64,
    reinitialized: u64,
    /// Calls sent to A before the balancer turned to B (just before the
    /// signal) and answered, or not, after it turned.
    across_signal: u64,
    across_signal_answered: u64,
    /// The session made on A answered a call on B.
    original_served_by_b: bool,
}

/// One client calling `echo` every 100 ms in `session` from `first`, until
/// cancelled.
async fn active(
    mcp: &Mcp,
    source: Ipv4Addr,
    mut session: String,
    first: Instant,
    stats: &mut Active,
) {
    let mut original = true;
    let mut id = 0;
    let mut ticks = tokio::time::interval_at(first, CALL_PERIOD);
    // A slow answer delays the next call instead of bunching calls up.
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        id += 1;
        // The call, and its retries after a 503 with Retry-After.
        loop {
            let sent = Instant::now();
            let (on, call) = mcp.echo(&session, id).await;
            match on {
                Instance::A => stats.made_on_a += 1,
                Instance::B => stats.made_on_b += 1,
            }
            // The balancer turns to B at the signal.
            let across = on == Instance::A && mcp.balancer.to_b.load(Ordering::SeqCst);
            stats.across_signal += u64::from(across);
            stats.across_signal_answered += u64::from(across && matches!(call, Call::Answered));
            let failure = |label: String| Failure {
                client: source,
                label,
                on,
                sent,
                seen: Instant::now(),
            };
            match call {
                Call::Answered => {
                    stats.answered += 1;
                    stats.original_served_by_b |= original && on == Instance::B;
                }
                Call::Refused(after) => {
                    stats.refused_and_retried += 1;
                    tokio::time::sleep(after).await;
                    continue;
                }
                Call::Failed(label) => stats.failed.push(failure(label)),
                Call::SessionGone => {
                    stats.reinitialized += 1;
                    original = false;
                    session = loop {
                        let sent = Instant::now();
                        let (on, _) = mcp.balancer.target();
                        match mcp.open_session().await {
                            Ok(session) => break session,
                            Err(label) => {
                                stats.initialize_failed.push(Failure {
                                    client: source,
                                    label,
                                    on,
                                    sent,
                                    seen: Instant::now(),
                                });
                                tokio::time::sleep(CALL_PERIOD).await;
                            }
                        }
                    };
                }
            }
            break;
        }
    }
}

struct Answer {
    at: Instant,
    on: Instance,
    /// Its POST stream, or which resume.
    via: String,
    result: bool,
}

#[derive(Default)]
struct LongCall {
    started: Option<Instant>,
    /// How many times each progress step arrived.
    steps: BTreeMap<u64, u64>,
    last_event_id: Option<String>,
    /// When and why its POST stream ended without the answer.
    post_ended: Option<(Instant, String)>,
    answer: Option<Answer>,
    resumes: u64,
    resume_answers: Counts,
}

#[derive(PartialEq, Eq)]
enum Ending {
    Answered,
    Ended,
    Broke,
}

/// Reads a stream of the long call's until it ends or brings the answer.
async fn read_events(
    response: reqwest::Response,
    on: Instance,
    via: &str,
    stats: &mut LongCall,
) -> Ending {
    let mut body = response.bytes_stream();
    let mut buffer = String::new();
    loop {
        while let Some(end) = buffer.find("\n\n") {
            let event: String = buffer.drain(..end + 2).collect();
            let (id, data) = sse_fields(&event);
            // A priming event's id counts too: a client resumes after the
            // last id it saw.
            if let Some(id) = id {
                stats.last_event_id = Some(id);
            }
            let Some(message) = data.and_then(|data| serde_json::from_str::<Value>(&data).ok())
            else {
                continue;
            };
            if message["method"] == "notifications/progress" {
                if let Some(step) = message["params"]["progress"].as_f64() {
                    *stats.steps.entry(step as u64).or_default() += 1;
                }
            } else if message["id"] == LONG_CALL_ID {
                stats.answer = Some(Answer {
                    at: Instant::now(),
                    on,
                    via: via.to_owned(),
                    result: message["result"].is_object(),
                });
                return Ending::Answered;
            }
        }
        match body.next().await {
            Some(Ok(chunk)) => buffer.push_str(&String::from_utf8_lossy(&chunk).replace('\r', "")),
            Some(Err(_)) => return Ending::Broke,
            None => return Ending::Ended,
        }
    }
}

/// The long call, then its resumes if its stream ends without the answer;
/// until the answer, 30 s of resuming, or the end of the run.
async fn long_call(
    mcp: &Mcp,
    session: &str,
    started: tokio::sync::oneshot::Sender<Instant>,
    stats: &mut LongCall,
) {
    let body = json!({
        "jsonrpc": "2.0", "id": LONG_CALL_ID, "method": "tools/call",
        "params": {
            "name": "count",
            "arguments": { "steps": LONG_CALL_STEPS, "delay_ms": LONG_CALL_DELAY_MS },
            "_meta": { "progressToken": "rolling_restart" }
        }
    });
    let (on, url) = mcp.balancer.target();
    let now = Instant::now();
    stats.started = Some(now);
    let _ = started.send(now);
    let why = match mcp.post(url, Some(session), &body).send().await {
        Ok(response) if response.status() == StatusCode::OK => {
            match read_events(response, on, "its POST stream", stats).await {
                Ending::Answered => return,
                Ending::Ended => "ended".to_owned(),
                Ending::Broke => "broke".to_owned(),
            }
        }
        Ok(response) => format!("answered {}", response.status().as_u16()),
        Err(error) => transport_label(&error),
    };
    stats.post_ended = Some((Instant::now(), why));
    if stats.last_event_id.is_none() {
        // Nothing to resume after (no event arrived).
        return;
    }
    let give_up = Instant::now() + RESUME_FOR;
    while Instant::now() + RESUME_EVERY < give_up {
        tokio::time::sleep(RESUME_EVERY).await;
        let last_id = stats.last_event_id.clone().unwrap_or_default();
        let (on, url) = mcp.balancer.target();
        stats.resumes += 1;
        let resume = stats.resumes;
        let response = mcp
            .http
            .get(url)
            .header("accept", "text/event-stream")
            .header("mcp-protocol-version", PROTOCOL_VERSION)
            .header("mcp-session-id", session)
            .header("last-event-id", last_id)
            .send()
            .await;
        let response = match response {
            Ok(response) => response,
            Err(error) => {
                bump(&mut stats.resume_answers, transport_label(&error));
                continue;
            }
        };
        bump(
            &mut stats.resume_answers,
            response.status().as_u16().to_string(),
        );
        if response.status() != StatusCode::OK {
            continue;
        }
        let via = format!("resume {resume}");
        let read = read_events(response, on, &via, stats);
        if matches!(
            tokio::time::timeout_at(give_up, read).await,
            Ok(Ending::Answered)
        ) {
            return;
        }
    }
}

/// What one run saw.
struct Report {
    signal: &'static str,
    signal_at: Instant,
    exit: Option<(ExitStatus, Duration)>,
    /// How long A was given to exit.
    exit_waited: Duration,
    actives: Vec<Active>,
    long: LongCall,
    drain_summary: Option<String>,
    a_closed: Counts,
}

/// `at` against the signal, in seconds with a sign.
fn since(signal_at: Instant, at: Instant) -> String {
    if at >= signal_at {
        format!("+{:.2} s", (at - signal_at).as_secs_f64())
    } else {
        format!("-{:.2} s", (signal_at - at).as_secs_f64())
    }
}

async fn scenario(options: &Options, a: &mut Server, b: &Server) -> Result<Report, String> {
    let balancer = Arc::new(Balancer {
        a: a.url.clone(),
        b: b.url.clone(),
        to_b: AtomicBool::new(false),
    });
    // Every session is made on A before anything starts.
    let mut clients = Vec::new();
    for client in 0..CLIENTS {
        let source = client_source(client);
        let mcp = Mcp::new(balancer.clone(), source);
        let session = mcp
            .open_session()
            .await
            .map_err(|label| format!("initialize on A from {source}: {label}"))?;
        clients.push((mcp, source, session));
    }
    let long_mcp = Mcp::new(balancer.clone(), LONG_CALL_SOURCE);
    let long_session = long_mcp
        .open_session()
        .await
        .map_err(|label| format!("initialize on A from {LONG_CALL_SOURCE}: {label}"))?;

    let stop = CancellationToken::new();
    // The clients' calls spread over the period, as independent clients'
    // are: some are in flight whenever the signal comes.
    let start = Instant::now();
    let actives: Vec<_> = clients
        .into_iter()
        .zip(0..)
        .map(|((mcp, source, session), n)| {
            let first = start + CALL_PERIOD * n / u32::from(CLIENTS);
            let stop = stop.clone();
            tokio::spawn(async move {
                let mut stats = Active::default();
                tokio::select! {
                    () = stop.cancelled() => {}
                    () = active(&mcp, source, session, first, &mut stats) => {}
                }
                stats
            })
        })
        .collect();
    let (started_tx, started) = tokio::sync::oneshot::channel();
    let long = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut stats = LongCall::default();
            tokio::select! {
                () = stop.cancelled() => {}
                () = long_call(&long_mcp, &long_session, started_tx, &mut stats) => {}
            }
            stats
        })
    };
    let started = started
        .await
        .map_err(|_| "the long call did not start".to_owned())?;
    tokio::time::sleep_until(started + SIGNAL_AFTER).await;

    // From here every new request goes to B; then the signal.
    balancer.to_b.store(true, Ordering::SeqCst);
    let signal_at = Instant::now();
    let signal = if options.kill {
        a.child.kill().map_err(|e| format!("cannot kill A: {e}"))?;
        "SIGKILL"
    } else {
        let pid = a.child.id().to_string();
        let status = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .map_err(|e| format!("cannot run kill: {e}"))?;
        if !status.success() {
            return Err(format!("kill -TERM {pid} failed ({status})"));
        }
        "SIGTERM"
    };
    // The clients stop `--secs` after the signal; A's exit is awaited
    // until then, and on to `EXIT_WITHIN` after the signal if need be.
    let end = signal_at + Duration::from_secs(options.secs);
    let exit_deadline = end.max(signal_at + EXIT_WITHIN);
    let mut exit = None;
    loop {
        if exit.is_none()
            && let Some(status) = a.child.try_wait().map_err(|e| e.to_string())?
        {
            exit = Some((status, signal_at.elapsed()));
        }
        let now = Instant::now();
        if now >= end {
            stop.cancel();
            if exit.is_some() || now >= exit_deadline {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut reports = Vec::new();
    for task in actives {
        reports.push(task.await.map_err(|e| format!("client task: {e}"))?);
    }
    let long = long.await.map_err(|e| format!("long call task: {e}"))?;
    // A's log is read by a thread of its own: give it a moment for its
    // last lines.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let log = a.log.lock().unwrap();
    Ok(Report {
        signal,
        signal_at,
        exit,
        exit_waited: exit_deadline - signal_at,
        actives: reports,
        long,
        drain_summary: log.drain_summary.clone(),
        a_closed: log.closed.clone(),
    })
}

fn show_counts(counts: &Counts) -> String {
    if counts.is_empty() {
        return "none".into();
    }
    let parts: Vec<String> = counts
        .iter()
        .map(|(label, count)| format!("{label}: {count}"))
        .collect();
    parts.join(", ")
}

fn show_failures(failures: &[&Failure], signal_at: Instant) -> String {
    let mut lines: Vec<String> = failures
        .iter()
        .map(|f| {
            format!(
                "{} on {} from {} (sent {}, seen {})",
                f.label,
                f.on,
                f.client,
                since(signal_at, f.sent),
                since(signal_at, f.seen)
            )
        })
        .collect();
    const SHOWN: usize = 12;
    if lines.len() > SHOWN {
        let more = lines.len() - SHOWN;
        lines.truncate(SHOWN);
        lines.push(format!("and {more} more"));
    }
    lines.join("; ")
}

fn print_report(report: &Report, secs: u64) {
    let at = report.signal_at;
    let mut rows: Vec<(String, String)> = Vec::new();
    let mut row = |what: &str, figure: String| rows.push((what.to_owned(), figure));

    row(
        "A's exit",
        match &report.exit {
            Some((status, after)) => format!(
                "{status}, {:.2} s after the {}",
                after.as_secs_f64(),
                report.signal
            ),
            None => format!(
                "still running {} s after the {}: killed",
                report.exit_waited.as_secs(),
                report.signal
            ),
        },
    );
    let sum = |f: fn(&Active) -> u64| report.actives.iter().map(f).sum::<u64>();
    let (on_a, on_b) = (sum(|s| s.made_on_a), sum(|s| s.made_on_b));
    let mut failures: Vec<&Failure> = report.actives.iter().flat_map(|s| &s.failed).collect();
    failures.sort_by_key(|f| f.sent);
    row(
        "echo calls made / failed / refused and retried",
        format!(
            "{} / {} / {} (made on A: {on_a}, on B: {on_b}; answered: {})",
            on_a + on_b,
            failures.len(),
            sum(|s| s.refused_and_retried),
            sum(|s| s.answered)
        ),
    );
    if !failures.is_empty() {
        row("failed calls", show_failures(&failures, at));
    }
    row(
        "echo calls in flight on A when the balancer turned: answered",
        format!(
            "{} of {}",
            sum(|s| s.across_signal_answered),
            sum(|s| s.across_signal)
        ),
    );
    row("re-initializations", sum(|s| s.reinitialized).to_string());
    let mut initialize_failures: Vec<&Failure> = report
        .actives
        .iter()
        .flat_map(|s| &s.initialize_failed)
        .collect();
    initialize_failures.sort_by_key(|f| f.sent);
    if !initialize_failures.is_empty() {
        row(
            "failed initializations",
            show_failures(&initialize_failures, at),
        );
    }
    let kept = report
        .actives
        .iter()
        .filter(|s| s.original_served_by_b && s.reinitialized == 0)
        .count();
    row(
        "sessions kept on B without a new initialize",
        format!("{kept} of {CLIENTS}"),
    );

    let long = &report.long;
    let received: u64 = long.steps.values().sum();
    let distinct = long.steps.len() as u64;
    row(
        "long call: progress events received",
        format!(
            "{received} ({distinct} distinct steps of {LONG_CALL_STEPS}, {} duplicates{})",
            received - distinct,
            match long.steps.keys().next_back() {
                Some(last) => format!("; last step {last}"),
                None => String::new(),
            }
        ),
    );
    row(
        "long call: answer received",
        match &long.answer {
            Some(answer) => format!(
                "{}, {} after the signal ({:.2} s after the call started), on {}, {}",
                if answer.result {
                    "yes"
                } else {
                    "yes (an error)"
                },
                since(at, answer.at),
                long.started
                    .map_or(0.0, |started| (answer.at - started).as_secs_f64()),
                answer.on,
                answer.via
            ),
            None => "no".to_owned(),
        },
    );
    if let Some((when, why)) = &long.post_ended {
        row(
            "long call: its POST stream",
            format!("{why} without the answer at {}", since(at, *when)),
        );
    }
    row(
        "long call: resumes attempted",
        match long.resumes {
            0 => "0".to_owned(),
            n => format!("{n} (answers: {})", show_counts(&long.resume_answers)),
        },
    );
    row(
        "A's drain summary",
        report
            .drain_summary
            .clone()
            .map_or("not printed".to_owned(), |line| format!("`{line}`")),
    );
    row(
        "A's sessions closed (its log)",
        show_counts(&report.a_closed),
    );

    println!();
    println!(
        "{} to A 1 s into the long call; {secs} s of clients after it",
        report.signal
    );
    println!();
    println!("| | |");
    println!("|---|---|");
    for (what, figure) in rows {
        println!("| {what} | {figure} |");
    }
}

struct Options {
    secs: u64,
    kill: bool,
    server: Option<PathBuf>,
    server_args: Vec<String>,
    redis: String,
}

/// `None` when there is nothing to run (`--list`, `--help`).
fn parse_options() -> Result<Option<Options>, String> {
    let mut options = Options {
        secs: 10,
        kill: false,
        server: std::env::var_os("ROLLING_RESTART_SERVER").map(PathBuf::from),
        server_args: Vec::new(),
        redis: std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/".into()),
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
            "--kill" => options.kill = true,
            "--server" => {
                let value = args.next().ok_or("--server needs a path")?;
                options.server = Some(value.into());
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

/// Deletes every key under `prefix`.
async fn clean(url: &str, prefix: &str) -> Result<usize, String> {
    let client = redis::Client::open(url).map_err(|e| e.to_string())?;
    let mut connection = client
        .get_multiplexed_async_connection()
        .await
        .map_err(|e| e.to_string())?;
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}*"))
        .query_async(&mut connection)
        .await
        .map_err(|e| e.to_string())?;
    if !keys.is_empty() {
        let () = redis::cmd("DEL")
            .arg(&keys)
            .query_async(&mut connection)
            .await
            .map_err(|e| e.to_string())?;
    }
    Ok(keys.len())
}

fn run() -> Result<(), String> {
    let Some(options) = parse_options()? else {
        return Ok(());
    };
    // Fail early and clearly where only 127.0.0.1 is on loopback.
    for source in (0..CLIENTS).map(client_source).chain([LONG_CALL_SOURCE]) {
        std::net::TcpListener::bind((source, 0)).map_err(|e| {
            format!(
                "cannot use the source address {source}: {e} \
                 (the bench needs all of 127.0.0.0/8 on loopback, as on Linux)"
            )
        })?;
    }
    let exe = match &options.server {
        Some(path) => path.clone(),
        None => build_server_with(&["redis"])?,
    };
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let prefix = format!("bench:rolling_restart:{}:{nanos}:", std::process::id());
    let mut flags = vec![
        "--redis".to_owned(),
        options.redis.clone(),
        "--redis-prefix".to_owned(),
        prefix.clone(),
    ];
    flags.extend(options.server_args.iter().cloned());

    let runtime = common::runtime();
    let result = (|| {
        let mut a = start_server(&exe, MAX_SESSIONS, &flags)?;
        let b = start_server(&exe, MAX_SESSIONS, &flags)?;
        println!(
            "rolling_restart: {} --max-sessions {MAX_SESSIONS} {}, twice (A and B)",
            exe.display(),
            flags.join(" ")
        );
        println!("server: {}", a.config);
        let report = runtime.block_on(scenario(&options, &mut a, &b));
        // B (and A, if it still runs) stop before the keys go.
        drop(b);
        drop(a);
        report
    })();
    let cleaned = runtime.block_on(clean(&options.redis, &prefix));
    let report = result?;
    print_report(&report, options.secs);
    match cleaned {
        Ok(keys) => println!("\n{keys} keys under {prefix} deleted"),
        Err(error) => println!("\nthe keys under {prefix} could not be deleted: {error}"),
    }
    Ok(())
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("rolling_restart: {message}");
            ExitCode::FAILURE
        }
    }
}
