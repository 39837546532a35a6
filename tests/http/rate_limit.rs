//! The creation rate limit through real HTTP.

use crate::common;

use std::time::Duration;

use common::{TestServer, assert_conserved};
use mcp_bounded_session::BoundedSessionManagerBuilder;
use reqwest::StatusCode;

#[tokio::test]
async fn refusal_is_429_evicts_nothing_and_lifts_after_the_window() {
    let _timed = common::load::timed().await;
    const WINDOW: Duration = Duration::from_millis(1_500);
    // The cap is full after two sessions: a creation that got past the rate
    // limit would evict one of them.
    let server = TestServer::start(
        BoundedSessionManagerBuilder::new(2)
            .rate_limit(2, WINDOW)
            .build(),
    )
    .await;
    let client = server.client();
    let first = client.initialize().await.unwrap();
    let second = client.initialize().await.unwrap();
    let started = tokio::time::Instant::now();

    for _ in 0..5 {
        let (status, body) = client.initialize().await.unwrap_err();
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
        assert!(body.contains("rate limit"), "{body}");
    }
    let refused = client
        .post(None)
        .json(&common::initialize_body())
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry_after: u64 = refused.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=2).contains(&retry_after), "Retry-After: {retry_after}");

    assert!(client.works(&first).await, "a refused creation evicted");
    assert!(client.works(&second).await, "a refused creation evicted");
    assert_eq!(server.manager.session_count(), 2);
    assert_conserved(&server.manager);

    tokio::time::sleep_until(started + WINDOW).await;
    let third = client.initialize().await.unwrap();
    assert!(client.works(&third).await);
    // Now at the cap, the new session evicted the oldest one.
    assert_eq!(client.status_of(&first).await, StatusCode::NOT_FOUND);
    assert!(client.works(&second).await);
    assert_conserved(&server.manager);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_creators_get_exactly_the_limit() {
    let server = TestServer::start(
        BoundedSessionManagerBuilder::new(100)
            .rate_limit(5, Duration::from_secs(60))
            .build(),
    )
    .await;
    let client = server.client();
    let results = futures::future::join_all((0..40).map(|_| {
        let client = client.clone();
        async move { client.initialize().await }
    }))
    .await;
    let created = results.iter().filter(|r| r.is_ok()).count();
    let limited = results
        .iter()
        .filter(|r| matches!(r, Err((StatusCode::TOO_MANY_REQUESTS, _))))
        .count();
    assert_eq!(created, 5);
    assert_eq!(limited, 35);
    assert_eq!(server.manager.session_count(), 5);
}
