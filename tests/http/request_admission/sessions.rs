//! Legacy sessions under request admission: their `POST`s count against
//! the in-flight bounds (whatever `Mcp-Method` they claim), their
//! standalone `GET` stream does not, and a successful `DELETE` answers 200.

use mcp_bounded_session::BoundedSessionManagerBuilder;
use reqwest::StatusCode;
use serde_json::json;
use tokio::task::JoinHandle;

use super::{LONG_MS, addr, wait_in_flight};
use crate::common::admission::assert_refused;
use crate::common::mcp::{session_header, tool_call_with_progress};
use crate::common::{Client, TestServer, sse_messages, tools_list_body};

/// Starts a `hold` call in `session`; its status and body once answered.
fn spawn_session_hold(client: &Client, session: &str, id: u64) -> JoinHandle<(StatusCode, String)> {
    let request = client
        .post(Some(session_header(session)))
        .json(&tool_call_with_progress(
            id,
            "hold",
            json!({ "ms": LONG_MS }),
            "hold",
        ));
    tokio::spawn(async move {
        let response = request.send().await.unwrap();
        (response.status(), response.text().await.unwrap())
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sessions_posts_count_and_its_standalone_stream_does_not() {
    let _timed = crate::common::load::timed().await;
    const QUOTA: usize = 2;
    let (server, probe) = TestServer::start_admission(
        BoundedSessionManagerBuilder::new(100)
            .max_requests_in_flight_per_client(QUOTA)
            .max_requests_in_flight(100)
            .max_listen_streams(1)
            .build(),
    )
    .await;
    let client = server.client_from(addr(2));
    let session = client.initialize().await.expect("a session");
    wait_in_flight(&server.manager, 0).await;

    // The standalone stream holds nothing here.
    let standalone = client.open_standalone(&session).await;
    assert_eq!(standalone.status(), StatusCode::OK);
    assert_eq!(server.manager.requests_in_flight(), 0);
    assert_eq!(server.manager.listen_streams(), 0);

    let held: Vec<_> = (1..=QUOTA as u64)
        .map(|id| spawn_session_hold(&client, &session, id))
        .collect();
    wait_in_flight(&server.manager, QUOTA).await;
    // One more POST in the session: the client's quota.
    let refused = client
        .post(Some(session_header(&session)))
        .json(&tools_list_body(9))
        .send()
        .await
        .unwrap();
    assert_refused(refused, StatusCode::TOO_MANY_REQUESTS, "request_quota", 1).await;
    // Another client's session is served meanwhile.
    let other = server.client_from(addr(3));
    let other_session = other.initialize().await.expect("a session");
    assert!(other.works(&other_session).await);

    probe.release();
    for handle in held {
        let (status, body) = handle.await.unwrap();
        assert_eq!(status, StatusCode::OK);
        assert!(
            sse_messages(&body)
                .iter()
                .any(|m| m["result"]["content"][0]["text"] == "held"),
            "{body}"
        );
    }
    wait_in_flight(&server.manager, 0).await;
    assert!(client.works(&session).await);
    // The standalone stream outlived all of it.
    assert!(
        !crate::common::stream_ends_within(standalone, std::time::Duration::from_millis(300)).await
    );
    assert_eq!(client.delete(&session).await, StatusCode::OK);
    assert_eq!(client.status_of(&session).await, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_successful_delete_answers_200_with_or_without_limits() {
    for builder in [
        BoundedSessionManagerBuilder::new(10),
        BoundedSessionManagerBuilder::new(10).max_requests_in_flight(10),
    ] {
        let server = TestServer::start(builder.build()).await;
        let client = server.client();
        let session = client.initialize().await.expect("a session");
        assert_eq!(client.delete(&session).await, StatusCode::OK);
        assert_eq!(client.status_of(&session).await, StatusCode::NOT_FOUND);
        assert_eq!(server.manager.session_count(), 0);
    }
}

/// A session's `POST` (protocol before 2026-07-28, whose headers rmcp does
/// not check against the body) labelled `Mcp-Method: subscriptions/listen`
/// is still a request: it cannot escape the request bounds by posing as a
/// listen stream. (Found by an independent probe: ten such calls ran at a
/// quota of one, none counted.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sessions_post_posing_as_a_listen_stream_counts_as_a_request() {
    let (server, probe) = TestServer::start_admission(
        BoundedSessionManagerBuilder::new(100)
            .max_requests_in_flight_per_client(1)
            .max_listen_streams(10)
            .build(),
    )
    .await;
    let client = server.client_from(addr(2));
    let session = client.initialize().await.expect("a session");
    wait_in_flight(&server.manager, 0).await;
    let posing = |id: u64| {
        client
            .post(Some(session_header(&session)))
            .header("mcp-method", "subscriptions/listen")
            .json(&tool_call_with_progress(
                id,
                "hold",
                json!({ "ms": LONG_MS }),
                "hold",
            ))
    };
    let first = posing(1);
    let held = tokio::spawn(async move {
        let response = first.send().await.unwrap();
        (response.status(), response.text().await.unwrap())
    });
    wait_in_flight(&server.manager, 1).await;
    assert_eq!(server.manager.listen_streams(), 0);
    let refused = posing(2).send().await.unwrap();
    assert_refused(refused, StatusCode::TOO_MANY_REQUESTS, "request_quota", 1).await;
    probe.release();
    assert_eq!(held.await.unwrap().0, StatusCode::OK);
    wait_in_flight(&server.manager, 0).await;
}
