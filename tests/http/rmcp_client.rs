//! rmcp's own client (`StreamableHttpClientTransport`) against the example
//! server's handler behind `BoundedSessionManager`: initialize, a tool call
//! with progress, close.

use crate::common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{
    TestServer, assert_conserved, close_reason, created_sessions, eventually,
    record_lifecycle_events,
};
use mcp_bounded_session::BoundedSessionManagerBuilder;
use rmcp::model::{CallToolRequestParams, ProgressNotificationParam};
use rmcp::service::NotificationContext;
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::{ClientHandler, RoleClient, ServiceExt};

#[derive(Clone, Default)]
struct ProgressRecorder {
    seen: Arc<Mutex<Vec<ProgressNotificationParam>>>,
}

impl ClientHandler for ProgressRecorder {
    async fn on_progress(
        &self,
        params: ProgressNotificationParam,
        _context: NotificationContext<RoleClient>,
    ) {
        self.seen.lock().unwrap().push(params);
    }
}

#[tokio::test]
async fn rmcp_client_initializes_calls_a_tool_with_progress_and_closes() -> anyhow::Result<()> {
    record_lifecycle_events();
    let server = TestServer::start(BoundedSessionManagerBuilder::new(4).build()).await;
    let recorder = ProgressRecorder::default();
    let client = recorder
        .clone()
        .serve(StreamableHttpClientTransport::from_uri(server.url.clone()))
        .await?;
    assert_eq!(server.manager.session_count(), 1);
    let info = client.peer_info().expect("initialized");
    assert!(info.capabilities.tools.is_some());

    let tools = client.list_all_tools().await?;
    let mut names: Vec<_> = tools.iter().map(|t| t.name.to_string()).collect();
    names.sort();
    assert_eq!(names, ["announce", "count", "echo"]);

    let echoed = client
        .call_tool(
            CallToolRequestParams::new("echo").with_arguments(
                serde_json::json!({ "text": "hello" })
                    .as_object()
                    .unwrap()
                    .clone(),
            ),
        )
        .await?;
    assert_eq!(echoed.content[0].as_text().unwrap().text, "hello");

    let counted = client
        .call_tool(
            CallToolRequestParams::new("count").with_arguments(
                serde_json::json!({ "steps": 5, "delay_ms": 20 })
                    .as_object()
                    .unwrap()
                    .clone(),
            ),
        )
        .await?;
    assert_eq!(counted.content[0].as_text().unwrap().text, "counted to 5");
    assert!(
        eventually(Duration::from_secs(2), || recorder
            .seen
            .lock()
            .unwrap()
            .len()
            == 5)
        .await,
        "progress notifications: {:?}",
        recorder.seen.lock().unwrap()
    );
    let progress: Vec<f64> = recorder
        .seen
        .lock()
        .unwrap()
        .iter()
        .map(|p| p.progress)
        .collect();
    assert_eq!(progress, [1.0, 2.0, 3.0, 4.0, 5.0]);

    let created = created_sessions();
    assert_eq!(created.len(), 1, "this test made one session");
    client.cancel().await?;
    assert!(
        eventually(Duration::from_secs(5), || server.manager.session_count()
            == 0)
        .await,
        "the closed client's session is still live: {:?}",
        server.manager.stats()
    );
    assert_eq!(
        close_reason(&created[0]).as_deref(),
        Some("Closed"),
        "closed by DELETE"
    );
    assert_conserved(&server.manager);
    Ok(())
}
