//! The example server (`examples/server`) as a child process, for the
//! benches that measure it from outside (`flood`, `churn_memory`,
//! `rolling_restart`): built by cargo, started on a free loopback port, its
//! session events and drain summary read from its log.

#![allow(dead_code, reason = "each bench uses its own part of it")]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use serde_json::Value;

/// How many times each outcome happened, by label ("404", "429", ...).
pub type Counts = BTreeMap<String, u64>;

/// Counts one more `label`.
pub fn bump(counts: &mut Counts, label: impl Into<String>) {
    *counts.entry(label.into()).or_default() += 1;
}

/// What the server's log says about sessions.
#[derive(Default)]
pub struct ServerLog {
    pub created: u64,
    pub closed: Counts,
    /// The line a drain ends with (`drained in ...`), once printed.
    pub drain_summary: Option<String>,
}

/// Removes the ANSI colours the server's log writes even into a pipe.
fn strip_ansi(line: &str) -> String {
    let mut plain = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            // ESC [ parameters, then one final byte in '@'..='~'.
            for c in chars.by_ref() {
                if ('@'..='~').contains(&c) && c != '[' {
                    break;
                }
            }
        } else {
            plain.push(c);
        }
    }
    plain
}

/// The server's stdout, line by line: its two start-up lines (sent on
/// `ready`), then the session events and the drain summary.
fn read_log(stdout: impl Read, ready: mpsc::Sender<(String, String)>, log: Arc<Mutex<ServerLog>>) {
    let mut stdout = BufReader::new(stdout);
    let mut raw = Vec::new();
    let mut url = None;
    loop {
        raw.clear();
        match stdout.read_until(b'\n', &mut raw) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let line = strip_ansi(String::from_utf8_lossy(&raw).trim_end());
        if let Some(address) = line.strip_prefix("MCP server listening on ") {
            url = Some(address.to_owned());
        } else if line.starts_with("max sessions ") {
            if let Some(url) = url.take() {
                let _ = ready.send((url, line));
            }
        } else if line.contains("mcp_bounded_session::registry") {
            let mut log = log.lock().unwrap();
            if line.contains("session created") {
                log.created += 1;
            } else if line.contains("session closed") {
                let reason = line
                    .split_whitespace()
                    .find_map(|word| word.strip_prefix("reason="))
                    .unwrap_or("no reason");
                bump(&mut log.closed, reason);
            }
        } else if line.starts_with("drained in ") {
            log.lock().unwrap().drain_summary = Some(line);
        }
    }
}

/// The server process, killed when dropped (also when the bench panics).
pub struct Server {
    pub child: Child,
    pub url: String,
    pub config: String,
    pub log: Arc<Mutex<ServerLog>>,
    stderr: Option<std::thread::JoinHandle<String>>,
}

impl Server {
    /// Everything it wrote to stderr; call once it has exited.
    pub fn stderr(&mut self) -> String {
        let text = self.stderr.take().map(|thread| thread.join());
        text.and_then(Result::ok).unwrap_or_default()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Builds `examples/server` in release mode and returns the executable cargo
/// reports (wherever the target directory is).
pub fn build_server() -> Result<PathBuf, String> {
    build_server_with(&[])
}

/// [`build_server`] with these crate features (e.g. `metrics`, for the
/// example's `/metrics`).
pub fn build_server_with(features: &[&str]) -> Result<PathBuf, String> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let manifest = concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml");
    let output = Command::new(&cargo)
        .args(["build", "--release", "--example", "server"])
        .args(["--features", &features.join(",")])
        .args([
            "--message-format=json-render-diagnostics",
            "--manifest-path",
        ])
        .arg(manifest)
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("cannot run {}: {e}", cargo.to_string_lossy()))?;
    if !output.status.success() {
        return Err(format!(
            "`cargo build --release --example server` failed ({}); see its errors above",
            output.status
        ));
    }
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .find(|message| {
            message["reason"] == "compiler-artifact"
                && message["target"]["name"] == "server"
                && message["target"]["kind"][0] == "example"
        })
        .and_then(|message| message["executable"].as_str().map(PathBuf::from))
        .ok_or_else(|| "cargo built examples/server but named no executable".into())
}

pub fn start_server(exe: &Path, max_sessions: &str, extra: &[String]) -> Result<Server, String> {
    let mut child = Command::new(exe)
        .args(["--bind", "127.0.0.1:0", "--max-sessions", max_sessions])
        .args(extra)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", exe.display()))?;
    let (ready_tx, ready) = mpsc::channel();
    let log = Arc::new(Mutex::new(ServerLog::default()));
    let stdout = child.stdout.take().expect("piped stdout");
    std::thread::spawn({
        let log = log.clone();
        move || read_log(stdout, ready_tx, log)
    });
    let mut pipe = child.stderr.take().expect("piped stderr");
    let stderr = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = pipe.read_to_string(&mut text);
        text
    });
    let mut server = Server {
        child,
        url: String::new(),
        config: String::new(),
        log,
        stderr: Some(stderr),
    };
    match ready.recv_timeout(Duration::from_secs(10)) {
        Ok((url, config)) => {
            server.url = url;
            server.config = config;
            Ok(server)
        }
        Err(_) => {
            // Either it exited (its stdout closed) or it hangs: stop it, then
            // give its status and what it wrote to stderr.
            let _ = server.child.kill();
            let status = server.child.wait().map(|s| s.to_string());
            Err(format!(
                "the server did not start ({}); its stderr:\n{}",
                status.unwrap_or_else(|e| e.to_string()),
                server.stderr().trim_end()
            ))
        }
    }
}
