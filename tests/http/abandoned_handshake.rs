//! A client that gives up on its `initialize` while the handler hangs in
//! it: the session still ends at `init_timeout` and frees its slot, though
//! nobody polls the session's transport meanwhile (rmcp's service does not
//! while its handler runs `initialize`).

use std::future::Future;
use std::task::{Context, Waker};
use std::time::Duration;

use mcp_bounded_session::{BoundedSessionManager, SessionConfig};
use rmcp::model::ClientJsonRpcMessage;
use rmcp::transport::Transport;
use rmcp::transport::streamable_http_server::session::SessionManager;
use serde_json::json;

#[tokio::test(start_paused = true)]
async fn a_dropped_initialize_with_a_hung_handler_ends_at_the_init_timeout() {
    let mut config = SessionConfig::default();
    config.init_timeout = Some(Duration::from_secs(10));
    let manager = BoundedSessionManager::new(config, 2);
    let (id, mut transport) = manager.create_session().await.unwrap();
    let initialize: ClientJsonRpcMessage = serde_json::from_value(json!({
        "jsonrpc": "2.0", "id": 0, "method": "initialize",
        "params": {
            "protocolVersion": "2025-11-25", "capabilities": {},
            "clientInfo": { "name": "test", "version": "0" }
        }
    }))
    .unwrap();
    {
        let mut asking = std::pin::pin!(manager.initialize_session(&id, initialize));
        let mut cx = Context::from_waker(Waker::noop());
        assert!(asking.as_mut().poll(&mut cx).is_pending());
        // The handler takes `initialize` and hangs in it: nobody polls the
        // transport from now on.
        assert!(transport.receive().await.is_some());
        assert!(asking.as_mut().poll(&mut cx).is_pending());
        // The client hangs up.
    }
    tokio::time::sleep(Duration::from_secs(9)).await;
    assert!(
        manager.has_session(&id).await.unwrap(),
        "not before its timeout"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(!manager.has_session(&id).await.unwrap());
    assert_eq!(manager.stats().free_slots, 2, "its slot is free");
    drop(transport);
}
