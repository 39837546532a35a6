//! Resident memory per idle, initialized session at 10,000 sessions, for
//! this crate, rmcp 3.11's `LocalSessionManager` and `mcp-session` 0.2; and
//! at 100,000 for the first two (`mcp-session` would take minutes to fill).
//!
//! `rmcp_floor` is no manager: each session is rmcp's service on a
//! transport that only delivers `initialize` and takes the answer. What it
//! holds per session is what rmcp's own service costs (its task, its peer
//! and its channels), which no session manager can remove.
//!
//! Each manager is measured in a child process of its own (allocators do not
//! give memory back, so sequential measurements in one process would
//! interfere): the process RSS before and after creating and initializing
//! the sessions, each with its MCP handler running, divided by their number.
//!
//! ```text
//! cargo bench --bench memory_per_session
//! ```

mod common;

use std::process::Command;
use std::sync::Arc;

/// (live sessions, managers measured at that count).
const RUNS: [(usize, &[&str]); 2] = [
    (
        10_000,
        &["bounded", "rmcp_local", "mcp_session", "rmcp_floor"],
    ),
    (100_000, &["bounded", "rmcp_local", "rmcp_floor"]),
];

fn resident_bytes() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("Linux /proc");
    let pages: usize = statm
        .split_whitespace()
        .nth(1)
        .and_then(|field| field.parse().ok())
        .expect("statm resident field");
    // The page size of every platform this bench runs on (x86-64, aarch64 Linux).
    pages * 4096
}

fn initialize_json() -> serde_json::Value {
    serde_json::json!({
        "jsonrpc": "2.0", "id": 0, "method": "initialize",
        "params": {
            "protocolVersion": "2025-03-26",
            "capabilities": {},
            "clientInfo": { "name": "memory-bench", "version": "1" }
        }
    })
}

struct Silent;
impl rmcp::ServerHandler for Silent {}
struct SilentV1;
impl rmcp_v1::ServerHandler for SilentV1 {}

/// The least transport rmcp's service can run on: it delivers `initialize`
/// once, takes the answer, then waits forever.
struct FloorTransport {
    initialize: Option<rmcp::model::ClientJsonRpcMessage>,
    answered: Option<tokio::sync::oneshot::Sender<()>>,
}

impl rmcp::transport::Transport<rmcp::RoleServer> for FloorTransport {
    type Error = std::io::Error;

    fn send(
        &mut self,
        _item: rmcp::service::TxJsonRpcMessage<rmcp::RoleServer>,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send + 'static {
        if let Some(answered) = self.answered.take() {
            let _ = answered.send(());
        }
        std::future::ready(Ok(()))
    }

    async fn receive(&mut self) -> Option<rmcp::service::RxJsonRpcMessage<rmcp::RoleServer>> {
        match self.initialize.take() {
            Some(initialize) => Some(initialize),
            None => std::future::pending().await,
        }
    }

    async fn close(&mut self) -> Result<(), Self::Error> {
        Ok(())
    }
}

/// `$sessions` sessions of rmcp's service alone, initialized.
async fn fill_floor(sessions: usize) {
    for _ in 0..sessions {
        let (answered, answer) = tokio::sync::oneshot::channel();
        let transport = FloorTransport {
            initialize: Some(serde_json::from_value(initialize_json()).unwrap()),
            answered: Some(answered),
        };
        tokio::spawn(async move {
            if let Ok(service) = rmcp::serve_server(Silent, transport).await {
                let _ = service.waiting().await;
            }
        });
        answer.await.unwrap();
    }
}

/// Creates and initializes `$sessions` sessions with `$manager`, each served
/// by a handler from `$serve`; returns the manager (kept alive).
macro_rules! fill {
    ($sessions:expr, $manager:expr, $trait:path, $message:ty, $serve:expr) => {{
        use $trait as _;
        let manager = Arc::new($manager);
        for _ in 0..$sessions {
            let (id, transport) = manager.create_session().await.unwrap();
            tokio::spawn(async move {
                if let Ok(service) = $serve(transport).await {
                    let _ = service.waiting().await;
                }
            });
            let message: $message = serde_json::from_value(initialize_json()).unwrap();
            manager.initialize_session(&id, message).await.unwrap();
        }
        manager
    }};
}

fn measure(manager: &str, sessions: usize) {
    common::runtime().block_on(async {
        let before = resident_bytes();
        let mut config = mcp_bounded_session::SessionConfig::default();
        config.keep_alive = None;
        let keep: Box<dyn std::any::Any> = match manager {
            "bounded" => Box::new(fill!(
                sessions,
                mcp_bounded_session::BoundedSessionManager::new(config, sessions),
                rmcp::transport::streamable_http_server::session::SessionManager,
                rmcp::model::ClientJsonRpcMessage,
                |t| rmcp::serve_server(Silent, t)
            )),
            "rmcp_local" => {
                let mut local = rmcp::transport::streamable_http_server::session::local::LocalSessionManager::default();
                local.session_config.keep_alive = None;
                Box::new(fill!(
                    sessions,
                    local,
                    rmcp::transport::streamable_http_server::session::SessionManager,
                    rmcp::model::ClientJsonRpcMessage,
                    |t| rmcp::serve_server(Silent, t)
                ))
            }
            "rmcp_floor" => {
                fill_floor(sessions).await;
                Box::new(())
            }
            _ => {
                let mut config = mcp_session::SessionConfig::default();
                config.keep_alive = None;
                Box::new(fill!(
                    sessions,
                    mcp_session::BoundedSessionManager::new(config, sessions),
                    rmcp_v1::transport::streamable_http_server::session::SessionManager,
                    rmcp_v1::model::ClientJsonRpcMessage,
                    |t| rmcp_v1::serve_server(SilentV1, t)
                ))
            }
        };
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        let after = resident_bytes();
        println!(
            "memory_per_session/{manager}: {} bytes per idle initialized session ({sessions} sessions, RSS +{} KiB)",
            (after - before) / sessions,
            (after - before) / 1024
        );
        drop(keep);
    });
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(position) = args.iter().position(|arg| arg == "--measure") {
        let sessions = args[position + 2].parse().expect("a session count");
        measure(&args[position + 1], sessions);
        return;
    }
    if args.iter().any(|arg| arg == "--list") {
        return;
    }
    let exe = std::env::current_exe().expect("own path");
    for (sessions, managers) in RUNS {
        for manager in managers {
            let status = Command::new(&exe)
                .args(["--measure", manager, &sessions.to_string()])
                .status()
                .expect("child process");
            assert!(status.success(), "measuring {manager} failed");
        }
    }
}
