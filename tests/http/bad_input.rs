//! Malformed or unknown `Mcp-Session-Id` values get a 4xx, never a 500, and
//! leave the manager untouched.

use crate::common;

use common::{TestServer, assert_conserved, tools_list_body};
use mcp_bounded_session::BoundedSessionManagerBuilder;
use reqwest::StatusCode;
use reqwest::header::HeaderValue;

fn bad_session_ids() -> Vec<(&'static str, HeaderValue)> {
    vec![
        (
            "unknown",
            HeaderValue::from_static("6f1c2a0e-3b1d-4c5e-9f00-000000000000"),
        ),
        ("empty", HeaderValue::from_static("")),
        (
            "10 KB",
            HeaderValue::from_str(&"a".repeat(10 * 1024)).unwrap(),
        ),
        (
            "non-UTF-8",
            HeaderValue::from_bytes(b"\xff\xfe\x80session").unwrap(),
        ),
        ("path-like", HeaderValue::from_static("../../etc/passwd")),
    ]
}

#[tokio::test]
async fn bad_session_ids_get_a_4xx_on_every_method() {
    let server = TestServer::start(BoundedSessionManagerBuilder::new(2).build()).await;
    let client = server.client();
    let live = client.initialize().await.unwrap();

    for (name, id) in bad_session_ids() {
        let post = client
            .post(Some(id.clone()))
            .json(&tools_list_body(7))
            .send()
            .await
            .unwrap()
            .status();
        assert!(post.is_client_error(), "POST with {name} id: {post}");

        let notification = client
            .post(Some(id.clone()))
            .json(&serde_json::json!({"jsonrpc": "2.0", "method": "notifications/initialized"}))
            .send()
            .await
            .unwrap()
            .status();
        assert!(
            notification.is_client_error(),
            "notification with {name} id: {notification}"
        );

        let get = client
            .http
            .get(&client.url)
            .header("accept", "text/event-stream")
            .header("mcp-protocol-version", common::PROTOCOL_VERSION)
            .header("mcp-session-id", id.clone())
            .send()
            .await
            .unwrap()
            .status();
        assert!(get.is_client_error(), "GET with {name} id: {get}");

        let resume = client
            .http
            .get(&client.url)
            .header("accept", "text/event-stream")
            .header("mcp-protocol-version", common::PROTOCOL_VERSION)
            .header("mcp-session-id", id.clone())
            .header("last-event-id", "0")
            .send()
            .await
            .unwrap()
            .status();
        assert!(resume.is_client_error(), "resume with {name} id: {resume}");

        let delete = client
            .http
            .delete(&client.url)
            .header("mcp-protocol-version", common::PROTOCOL_VERSION)
            .header("mcp-session-id", id)
            .send()
            .await
            .unwrap()
            .status();
        assert_ne!(
            delete,
            StatusCode::INTERNAL_SERVER_ERROR,
            "DELETE with {name} id"
        );
    }

    assert!(
        client.works(&live).await,
        "bad input disturbed a live session"
    );
    assert_eq!(server.manager.session_count(), 1);
    assert_conserved(&server.manager);
}

#[tokio::test]
async fn garbage_last_event_id_is_not_a_server_error() {
    let server = TestServer::start(BoundedSessionManagerBuilder::new(2).build()).await;
    let client = server.client();
    let live = client.initialize().await.unwrap();
    for last_event_id in [
        "garbage",
        "-1",
        "99999999999999999999999",
        "1/x",
        "5/999",
        "",
    ] {
        let status = client
            .http
            .get(&client.url)
            .header("accept", "text/event-stream")
            .header("mcp-protocol-version", common::PROTOCOL_VERSION)
            .header("mcp-session-id", &live)
            .header("last-event-id", last_event_id)
            .send()
            .await
            .unwrap()
            .status();
        assert_ne!(
            status,
            StatusCode::INTERNAL_SERVER_ERROR,
            "Last-Event-ID {last_event_id:?}"
        );
    }
    assert!(client.works(&live).await);
}
