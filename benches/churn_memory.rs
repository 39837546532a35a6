//! The example server's resident memory under an `initialize` flood that
//! keeps its cap full and churning: `--clients` clients (default 6), each
//! on its own loopback source address, open sessions in a loop (never
//! `DELETE`) for `--secs` seconds (default 60) against `examples/server
//! --max-sessions 1000` with its per-client limits off; the server's RSS is
//! sampled every 5 s. Evictions then free as many sessions as are created,
//! so the RSS should level off: what it levels off at, against the idle
//! figure per session, shows what the allocator keeps under churn.
//!
//! `--server PATH` measures another build of the example server (an older
//! commit's, to compare); by default the bench builds the current one.
//!
//! ```text
//! cargo bench --bench churn_memory
//! cargo bench --bench churn_memory -- --secs 30 --server /path/to/old/server
//! ```

#[path = "common/example_server.rs"]
mod example_server;

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use example_server::{build_server, start_server};

const MAX_SESSIONS: &str = "1000";
const SAMPLE_EVERY: Duration = Duration::from_secs(5);

struct Options {
    secs: u64,
    clients: u8,
    server: Option<PathBuf>,
}

fn parse_options() -> Result<Options, String> {
    let mut options = Options {
        secs: 60,
        clients: 6,
        server: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        match flag.as_str() {
            "--secs" | "--clients" | "--server" => {
                let value = args.next().ok_or(format!("{flag} needs a value"))?;
                match flag.as_str() {
                    "--secs" => options.secs = value.parse().map_err(|_| "--secs N")?,
                    "--clients" => options.clients = value.parse().map_err(|_| "--clients N")?,
                    _ => options.server = Some(value.into()),
                }
            }
            // What cargo bench passes to every bench binary.
            "--bench" => {}
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(options)
}

fn resident_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Opens sessions in a loop until `until`; counts the answered ones.
async fn open_sessions(url: String, source: Ipv4Addr, until: Instant, opened: Arc<AtomicU64>) {
    let http = reqwest::Client::builder()
        .local_address(IpAddr::V4(source))
        .tcp_nodelay(true)
        .build()
        .expect("HTTP client");
    let initialize = serde_json::json!({
        "jsonrpc": "2.0", "id": 0, "method": "initialize",
        "params": {
            "protocolVersion": "2025-11-25", "capabilities": {},
            "clientInfo": { "name": "churn-memory", "version": "1" }
        }
    });
    while Instant::now() < until {
        let sent = http
            .post(&url)
            .header("Accept", "application/json, text/event-stream")
            .json(&initialize)
            .send()
            .await;
        if let Ok(response) = sent
            && response.status().is_success()
            && response.bytes().await.is_ok()
        {
            opened.fetch_add(1, Ordering::Relaxed);
        }
    }
}

fn run() -> Result<(), String> {
    let options = parse_options()?;
    let exe = match options.server {
        Some(path) => path,
        None => build_server()?,
    };
    let limits_off = [
        "--max-sessions-per-client",
        "none",
        "--rate-limit-per-client",
        "none",
    ]
    .map(String::from);
    let server = start_server(&exe, MAX_SESSIONS, &limits_off)?;
    let pid = server.child.id();
    println!("server: {} ({})", exe.display(), server.config);
    let idle_kib = resident_kib(pid).ok_or("cannot read the server's RSS")?;
    let runtime = tokio::runtime::Runtime::new().map_err(|e| e.to_string())?;
    let opened = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let until = start + Duration::from_secs(options.secs);
    for client in 0..options.clients {
        let source = Ipv4Addr::new(127, 0, 0, 50 + client);
        runtime.spawn(open_sessions(
            server.url.clone(),
            source,
            until,
            opened.clone(),
        ));
    }
    println!("t (s)\tsessions opened\tcreated (server log)\tRSS (MB)");
    let mut samples = Vec::new();
    while Instant::now() < until {
        std::thread::sleep(SAMPLE_EVERY);
        let rss = resident_kib(pid).ok_or("the server exited")?;
        samples.push(rss);
        let created = server.log.lock().map(|log| log.created).unwrap_or(0);
        println!(
            "{}\t{}\t{}\t{:.1}",
            start.elapsed().as_secs(),
            opened.load(Ordering::Relaxed),
            created,
            rss as f64 / 1024.0
        );
    }
    drop(runtime);
    let last_half = &samples[samples.len() / 2..];
    let peak = samples.iter().copied().max().unwrap_or(0);
    let low = last_half.iter().copied().min().unwrap_or(0);
    let high = last_half.iter().copied().max().unwrap_or(0);
    println!(
        "churn_memory: {} sessions opened in {} s; RSS idle {:.1} MB, peak {:.1} MB, \
         second half {:.1}-{:.1} MB ({:.1} KB per slot of the cap at the peak)",
        opened.load(Ordering::Relaxed),
        options.secs,
        idle_kib as f64 / 1024.0,
        peak as f64 / 1024.0,
        low as f64 / 1024.0,
        high as f64 / 1024.0,
        (peak - idle_kib) as f64 * 1.024 / 1000.0,
    );
    Ok(())
}

fn main() -> ExitCode {
    if std::env::args().any(|arg| arg == "--list") {
        return ExitCode::SUCCESS;
    }
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("churn_memory: {error}");
            ExitCode::FAILURE
        }
    }
}
