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

mod clients;
#[path = "../common/mod.rs"]
mod common;
#[path = "../common/example_server.rs"]
mod example_server;
mod mcp;
mod report;

use clients::*;
use mcp::*;
use report::*;

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
