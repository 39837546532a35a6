//! The example server's processes: one `Instance` a process, and a `Pair`
//! of them on one Redis prefix.

use std::io::{BufRead, BufReader};
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::common::Client;
use crate::common::redis_backend::Backend;
use crate::common::redis_server::unique_prefix;

/// `target/debug/examples/server`, next to this test's `deps` directory.
fn server_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    let binary = exe
        .parent()
        .and_then(|deps| deps.parent())
        .map(|profile| profile.join("examples").join("server"))
        .expect("the test binary lives in target/<profile>/deps");
    assert!(
        binary.is_file(),
        "the example server is not built at {}: run `cargo test --features redis` \
         (or `cargo build --features redis --example server`) first",
        binary.display()
    );
    binary
}

/// Removes ANSI colour sequences (`ESC [ ... letter`) from a log line.
fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// One `examples/server` process; killed when dropped.
pub struct Instance {
    name: &'static str,
    pub url: String,
    child: Child,
    log: Arc<Mutex<Vec<String>>>,
}

impl Instance {
    /// Starts the server on a free port on `backend` (`--redis URL` or
    /// `--redis-cluster URLS`) and `prefix`; waits for its `MCP server
    /// listening on http://ADDR/mcp` line.
    fn start(name: &'static str, backend: &Backend, prefix: &str, extra: &[&str]) -> Self {
        let binary = server_binary();
        let mut child = Command::new(&binary)
            .args(["--bind", "127.0.0.1:0"])
            .args(backend.server_flags())
            .args(["--redis-prefix", prefix])
            .args(extra)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()));
        let log = Arc::new(Mutex::new(Vec::new()));
        // Both pipes are drained for the process's whole life (its log goes
        // to stdout: a full pipe would block the server).
        let (url_tx, url_rx) = std::sync::mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn({
            let log = log.clone();
            move || {
                let mut url_tx = Some(url_tx);
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    let line = strip_ansi(&line);
                    if let Some(rest) = line.split("MCP server listening on ").nth(1)
                        && let Some(tx) = url_tx.take()
                    {
                        let _ = tx.send(rest.trim().to_owned());
                    }
                    log.lock().unwrap().push(line);
                }
            }
        });
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn({
            let log = log.clone();
            move || {
                for line in BufReader::new(stderr).lines() {
                    let Ok(line) = line else { break };
                    log.lock()
                        .unwrap()
                        .push(format!("stderr: {}", strip_ansi(&line)));
                }
            }
        });
        let url = match url_rx.recv_timeout(Duration::from_secs(20)) {
            Ok(url) => url,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                std::thread::sleep(Duration::from_millis(100));
                panic!(
                    "server {name} ({}) printed no `MCP server listening on` line \
                     (is it built with --features redis?); its output:\n{}",
                    binary.display(),
                    log.lock().unwrap().join("\n")
                );
            }
        };
        assert!(
            url.starts_with("http://127.0.0.1:") && url.ends_with("/mcp"),
            "unexpected listening line: {url}"
        );
        Self {
            name,
            url,
            child,
            log,
        }
    }

    /// A client of this instance whose connections come from `source`.
    pub fn client(&self, source: Ipv4Addr) -> Client {
        Client::from_source(&self.url, source)
    }

    /// Whether a line of its output so far holds `text`.
    pub fn logged(&self, text: &str) -> bool {
        self.log
            .lock()
            .unwrap()
            .iter()
            .any(|line| line.contains(text))
    }

    /// Sends SIGTERM, as an orchestrator stopping the instance does.
    pub fn terminate(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill(1) runs");
        assert!(status.success(), "kill -TERM {} failed", self.child.id());
    }

    /// The process's exit status, if it exits within `timeout`.
    pub async fn exit_within(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("the child's status") {
                return Some(status);
            }
            if tokio::time::Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Kills the process (SIGKILL: a crash) and waits for it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            let log = self.log.lock().unwrap();
            let tail = &log[log.len().saturating_sub(40)..];
            eprintln!(
                "--- last lines of server {} ({}) ---\n{}",
                self.name,
                self.url,
                tail.join("\n")
            );
        }
    }
}

/// Two instances, A and B, on one Redis prefix: both killed, then the
/// prefix's keys removed, when dropped (also when a test fails).
pub struct Pair {
    pub a: Instance,
    pub b: Instance,
    pub prefix: String,
    /// The Redis both use.
    pub backend: Backend,
}

impl Pair {
    /// A pair on the shared Redis.
    pub fn start(test: &str) -> Self {
        Self::start_on_backend(test, &Backend::single())
    }

    /// A pair on the Redis at `url` (a test's private one, say).
    pub fn start_on(test: &str, url: &str) -> Self {
        Self::start_on_backend(test, &Backend::at(url))
    }

    /// A pair on `backend` (a single Redis or a cluster).
    pub fn start_on_backend(test: &str, backend: &Backend) -> Self {
        Self::start_with(test, backend, &[])
    }

    /// A pair on `backend`, A with the extra flags `a_flags`.
    pub fn start_with(test: &str, backend: &Backend, a_flags: &[&str]) -> Self {
        let prefix = unique_prefix(test);
        // Started one after the other, but each takes a fraction of a
        // second; no need for threads.
        let a = Instance::start("A", backend, &prefix, a_flags);
        let b = Instance::start("B", backend, &prefix, &[]);
        Self {
            a,
            b,
            prefix,
            backend: backend.clone(),
        }
    }

    /// Kills both servers, then removes the prefix's keys.
    pub async fn finish(self) {
        let (backend, prefix) = (self.backend.clone(), self.prefix.clone());
        drop(self);
        backend.clean(&prefix).await;
    }
}

impl Drop for Pair {
    fn drop(&mut self) {
        // The instances drop (and are killed) after this body runs; kill
        // them first so that nothing writes after the clean-up.
        self.a.kill();
        self.b.kill();
        // Best effort: a failed test leaves no keys either.
        self.backend.clean_blocking(&self.prefix);
    }
}
