//! A session made on one instance, restored on the other.

use crate::common::redis_backend::key;
use crate::common::sse_messages;
use crate::mcp::{loopback, result_text, session_header, tool_call};
use crate::processes::Pair;
use reqwest::StatusCode;
use serde_json::json;

crate::redis_test! {
    /// A session made on A answers a tool call on B under the same id, without
    /// a new `initialize`, from its copy in Redis.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_session_made_on_one_instance_answers_on_the_other(backend) {
        let pair = Pair::start_on_backend("restore", backend);
        let on_a = pair.a.client(loopback(2));
        let on_b = pair.b.client(loopback(2));
        let session = on_a.initialize().await.expect("initialize on A");
        let stored = key::session(&pair.prefix, &session);
        assert!(
            backend.keys(&pair.prefix).await.contains(&stored),
            "{stored} not written after initialize"
        );

        let response = on_b
            .post(Some(session_header(&session)))
            .json(&tool_call(7, "echo", json!({ "text": "across instances" })))
            .send()
            .await
            .unwrap();
        let status = response.status();
        let header = response
            .headers()
            .get("mcp-session-id")
            .map(|v| v.to_str().unwrap().to_owned());
        let body = response.text().await.unwrap();
        assert_eq!(status, StatusCode::OK, "echo on B: {body}");
        assert!(
            header.as_deref().is_none_or(|h| h == session),
            "B answered under another session id: {header:?}"
        );
        let messages = sse_messages(&body);
        assert!(
            !messages
                .iter()
                .any(|m| m["result"]["serverInfo"].is_object()),
            "B answered with an initialize result: {body}"
        );
        let answer = messages
            .iter()
            .find(|m| m["id"] == json!(7))
            .unwrap_or_else(|| panic!("no answer to the call: {body}"));
        assert_eq!(result_text(answer), Some("across instances"), "{answer}");

        // Still one stored session, under the same id.
        let sessions: Vec<String> = backend
            .keys(&pair.prefix)
            .await
            .into_iter()
            .filter(|k| k.ends_with(":session"))
            .collect();
        assert_eq!(sessions, vec![stored]);
        // And A still answers it too.
        assert!(on_a.works(&session).await, "A lost the session");
        pair.finish().await;
    }
}
