//! Resident memory per idle, initialized session at 10,000 sessions, for
//! this crate, rmcp 3.11's `LocalSessionManager` and `mcp-session` 0.2; and
//! at 100,000 for the first two (`mcp-session` would take minutes to fill).
//! Then per *parked* session (`bounded_parked`), at 100,000 and 1,000,000.
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
//! `bounded_parked` is this crate with a cap of [`PARKED_CAP`] live sessions
//! parking in a `MemorySessionStore`: the cap is filled first (each session's
//! state stored as rmcp stores it after the handshake), the RSS taken, then
//! N more sessions are created and initialized, each evicting (parking) the
//! least recently active one, whose handler task then ends. The live
//! sessions stay [`PARKED_CAP`], their memory freed and taken again by the
//! next ones, so the RSS grows by what the N parked entries hold: their
//! state JSON (its size printed too), the store's map and order slots, and
//! whatever the allocator cannot give back to later sessions around them.
//! `bounded_evicted` is the same churn with no store (each evicted session
//! lost): what the churn alone leaves in the RSS. With glibc, each line also
//! gives the bytes the allocator has handed out (`mallinfo2`), per session:
//! the store's own cost, where the RSS also counts the heap fragmented
//! around the parked entries.
//!
//! ```text
//! cargo bench --bench memory_per_session
//! ```

mod common;

use std::process::Command;
use std::sync::Arc;

use rmcp::transport::streamable_http_server::session::{
    SessionManager as _, SessionState, SessionStore,
};

/// (sessions, managers measured at that count): live sessions, or for
/// `bounded_parked` and `bounded_evicted` the sessions evicted at their cap.
const RUNS: [(usize, &[&str]); 3] = [
    (
        10_000,
        &["bounded", "rmcp_local", "mcp_session", "rmcp_floor"],
    ),
    (
        100_000,
        &[
            "bounded",
            "rmcp_local",
            "rmcp_floor",
            "bounded_parked",
            "bounded_evicted",
        ],
    ),
    (1_000_000, &["bounded_parked"]),
];

/// The live sessions of `bounded_parked`: the cap every further session is
/// created at, evicting (parking) one.
const PARKED_CAP: usize = 1_000;

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

/// Creates and initializes one session of `manager`, its handler running,
/// and stores its state in `store` as rmcp does after a handshake.
async fn create_stored(
    manager: &mcp_bounded_session::BoundedSessionManager,
    store: &mcp_bounded_session::MemorySessionStore,
    state: &SessionState,
) {
    let (id, transport) = manager.create_session().await.unwrap();
    tokio::spawn(async move {
        if let Ok(service) = rmcp::serve_server(Silent, transport).await {
            let _ = service.waiting().await;
        }
    });
    let message: rmcp::model::ClientJsonRpcMessage =
        serde_json::from_value(initialize_json()).unwrap();
    manager.initialize_session(&id, message).await.unwrap();
    store.store(&id, state).await.unwrap();
}

/// Bytes the allocator has handed out and not got back (glibc's
/// `mallinfo2`: its heaps and its mmapped chunks), where there is one to ask.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn heap_in_use() -> Option<usize> {
    /// glibc's `struct mallinfo2` (malloc.h), ten `size_t`.
    #[repr(C)]
    struct MallInfo2 {
        arena: usize,
        ordblks: usize,
        smblks: usize,
        hblks: usize,
        hblkhd: usize,
        usmblks: usize,
        fsmblks: usize,
        uordblks: usize,
        fordblks: usize,
        keepcost: usize,
    }
    unsafe extern "C" {
        fn mallinfo2() -> MallInfo2;
    }
    // SAFETY: mallinfo2 takes nothing and returns a plain struct by value
    // (glibc 2.33 and later).
    let info = unsafe { mallinfo2() };
    Some(info.uordblks + info.hblkhd)
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn heap_in_use() -> Option<usize> {
    None
}

/// `bounded_parked`: RSS per parked session, `sessions` sessions evicted
/// into the store at a full cap of [`PARKED_CAP`] (module docs); with
/// `park` false (`bounded_evicted`), the same churn with no store, each
/// evicted session lost: what the churn alone leaves in the RSS.
fn measure_churn(sessions: usize, park: bool) {
    common::runtime().block_on(async {
        let state = SessionState::new(
            serde_json::from_value(initialize_json()["params"].clone()).unwrap(),
        );
        let store = mcp_bounded_session::MemorySessionStore::builder()
            .max_parked(sessions)
            .build();
        let mut config = mcp_bounded_session::SessionConfig::default();
        config.keep_alive = None;
        let mut builder =
            mcp_bounded_session::BoundedSessionManager::builder(PARKED_CAP).session_config(config);
        if park {
            builder = builder.park_in(&store);
        }
        let manager = builder.build();
        for _ in 0..PARKED_CAP {
            create_stored(&manager, &store, &state).await;
        }
        assert_eq!(store.parked(), 0, "nothing parked below the cap");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        let (before, heap_before) = (resident_bytes(), heap_in_use());
        for _ in 0..sessions {
            create_stored(&manager, &store, &state).await;
        }
        // Parking is synchronous with the eviction; the evicted handlers'
        // tasks end on the runtime's workers.
        let expected = if park { sessions } else { 0 };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while store.parked() != expected && std::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert_eq!(store.parked(), expected, "every evicted session parked");
        assert_eq!(manager.session_count(), PARKED_CAP);
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        let (after, heap_after) = (resident_bytes(), heap_in_use());
        let grown = after.saturating_sub(before);
        let heap = match (heap_before, heap_after) {
            (Some(before), Some(after)) => format!(
                "; malloc in use {:+} bytes each",
                (after as isize - before as isize) / sessions as isize
            ),
            _ => String::new(),
        };
        if park {
            let state_json = serde_json::to_vec(&state).unwrap().len();
            println!(
                "memory_per_session/bounded_parked: {} bytes per parked session ({sessions} sessions, {PARKED_CAP} live, RSS +{} KiB{heap}; state JSON {state_json} bytes)",
                grown / sessions,
                grown / 1024
            );
        } else {
            println!(
                "memory_per_session/bounded_evicted: {} bytes per evicted session, none parked ({sessions} sessions, {PARKED_CAP} live, RSS +{} KiB{heap})",
                grown / sessions,
                grown / 1024
            );
        }
        drop(manager);
    });
}

fn measure(manager: &str, sessions: usize) {
    if let Some(park) = match manager {
        "bounded_parked" => Some(true),
        "bounded_evicted" => Some(false),
        _ => None,
    } {
        measure_churn(sessions, park);
        return;
    }
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
