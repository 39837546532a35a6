//! Any `Last-Event-ID` a client sends to a live, initialized session gets a
//! replay stream or an error, promptly: never a panic, never a hang, and the
//! session keeps working.

use std::sync::OnceLock;
use std::time::Duration;

use mcp_bounded_session::{BoundedSessionManager, SessionConfig, SessionId};
use rmcp::ServerHandler;
use rmcp::model::ClientJsonRpcMessage;
use rmcp::transport::streamable_http_server::session::SessionManager;

struct Silent;
impl ServerHandler for Silent {}

struct Fixture {
    runtime: tokio::runtime::Runtime,
    manager: std::sync::Arc<BoundedSessionManager>,
    session: SessionId,
}

fn initialize() -> ClientJsonRpcMessage {
    serde_json::from_value(serde_json::json!({
        "jsonrpc": "2.0", "id": 0, "method": "initialize",
        "params": {
            "protocolVersion": "2025-11-25",
            "capabilities": {},
            "clientInfo": { "name": "model", "version": "1" }
        }
    }))
    .expect("valid initialize")
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let manager = std::sync::Arc::new(BoundedSessionManager::new(SessionConfig::default(), 4));
        let session = runtime.block_on(async {
            let (id, transport) = manager.create_session().await.unwrap();
            tokio::spawn(async move {
                if let Ok(service) = rmcp::serve_server(Silent, transport).await {
                    let _ = service.waiting().await;
                }
            });
            manager.initialize_session(&id, initialize()).await.unwrap();
            id
        });
        Fixture {
            runtime,
            manager,
            session,
        }
    })
}

pub fn check(data: &[u8]) {
    let last_event_id = String::from_utf8_lossy(data).into_owned();
    let Fixture {
        runtime,
        manager,
        session,
    } = fixture();
    runtime.block_on(async {
        let resumed = tokio::time::timeout(
            Duration::from_secs(5),
            manager.resume(session, last_event_id.clone()),
        )
        .await;
        assert!(resumed.is_ok(), "resume({last_event_id:?}) hung");
        assert!(manager.has_session(session).await.unwrap());
    });
}
