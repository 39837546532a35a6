//! Isolation between sessions, through the manager.

use std::time::Duration;

use crate::common::redis_server::unique_prefix;
use crate::common::{PROTOCOL_VERSION, SseReader, body_within, sse_messages};
use crate::helpers::{instance, stores};
use reqwest::StatusCode;
use serde_json::json;

crate::redis_test! {
    /// Session S2 presenting S1's `Last-Event-ID` gets an empty stream, never
    /// S1's notifications; S1 itself gets them replayed.
    #[tokio::test]
    async fn a_session_never_replays_another_sessions_events(backend) {
        let prefix = unique_prefix("isolation");
        let stores = stores(backend, &prefix, None).await;
        let server = instance(&stores, 16).await;
        let client = server.client();
        let s1 = client.initialize().await.unwrap();
        let s2 = client.initialize().await.unwrap();

        let standalone = client.open_standalone(&s1).await;
        assert_eq!(standalone.status(), StatusCode::OK);
        let mut reader = SseReader::new(standalone);
        let (status, answer) = client
            .request(
                &s1,
                json!({ "jsonrpc": "2.0", "id": 2, "method": "tools/call",
                        "params": { "name": "announce", "arguments": { "count": 3 } } }),
            )
            .await;
        assert_eq!(status, StatusCode::OK);
        assert!(answer.iter().any(|m| m["result"].is_object()), "{answer:?}");
        let mut announced = Vec::new();
        while announced.len() < 3 {
            let event = reader
                .next(Duration::from_secs(5))
                .await
                .expect("the standalone stream stays open");
            if let (Some(id), Some(message)) = (event.id, event.message) {
                announced.push((id, message));
            }
        }
        drop(reader);
        for (n, (id, message)) in announced.iter().enumerate() {
            assert!(id.starts_with(&format!("{s1}:")), "{id}");
            assert_eq!(
                message["params"]["uri"],
                format!("demo://announce/{}", n + 1),
                "{message}"
            );
        }

        // S2 with S1's ids: 200 and an empty stream.
        for (id, _) in &announced {
            let response = client.resume(Some(&s2), PROTOCOL_VERSION, id).await;
            assert_eq!(response.status(), StatusCode::OK);
            let (body, ended) = body_within(response, Duration::from_secs(3)).await;
            assert!(ended, "the empty stream ends");
            assert!(
                sse_messages(&body).is_empty() && !body.contains(&*s1),
                "S2 got S1's events: {body}"
            );
        }

        // S1 with its own first id: notifications 2 and 3 (the control).
        let response = client
            .resume(Some(&s1), PROTOCOL_VERSION, &announced[0].0)
            .await;
        assert_eq!(response.status(), StatusCode::OK);
        let (body, _) = body_within(response, Duration::from_secs(3)).await;
        let replayed = sse_messages(&body);
        assert_eq!(
            replayed
                .iter()
                .map(|m| m["params"]["uri"].clone())
                .collect::<Vec<_>>(),
            vec![json!("demo://announce/2"), json!("demo://announce/3")],
            "{body}"
        );
        drop(server);
        drop(stores);
        backend.clean(&prefix).await;
    }
}
