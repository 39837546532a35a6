//! The per-client request rate limit: exact in its window, with the exact
//! `Retry-After`, keyed by the peer unless a trusted proxy names the
//! client.

use std::time::{Duration, Instant};

use mcp_bounded_session::BoundedSessionManagerBuilder;
use reqwest::StatusCode;
use serde_json::json;

use super::addr;
use crate::common::admission::{assert_refused, call};
use crate::common::{Client, TestServer};

/// The status of a quick `echo` call of `client`, with `headers`.
async fn echo(client: &Client, id: u64, headers: &[(&str, &str)]) -> reqwest::Response {
    let mut request = call(client, id, "echo", json!({ "text": "x" }));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.send().await.unwrap()
}

async fn sleep_until(deadline: Instant) {
    tokio::time::sleep(deadline.saturating_duration_since(Instant::now())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_request_rate_is_exact_in_its_window() {
    let _timed = crate::common::load::timed().await;
    const WINDOW: Duration = Duration::from_secs(2);
    // Grants and refusals land at least this far from a whole second of
    // the delays they are checked against: the slack a loaded machine has.
    const SPACING: Duration = Duration::from_millis(600);
    let (server, _probe) = TestServer::start_admission(
        BoundedSessionManagerBuilder::new(100)
            .request_rate_limit_per_client(3, WINDOW)
            .build(),
    )
    .await;
    let client = server.client_from(addr(2));
    let other = server.client_from(addr(3));

    let before_first = Instant::now();
    assert_eq!(echo(&client, 1, &[]).await.status(), StatusCode::OK);
    let first_answered = Instant::now();
    sleep_until(before_first + SPACING).await;
    assert_eq!(echo(&client, 2, &[]).await.status(), StatusCode::OK);
    assert_eq!(echo(&client, 3, &[]).await.status(), StatusCode::OK);
    // The fourth within the window: the first grant frees 2 s after it was
    // made, about 1.4 s from now: Retry-After 2.
    let refused = echo(&client, 4, &[]).await;
    assert!(
        first_answered.elapsed() < WINDOW - Duration::from_secs(1),
        "too slow to check the delay"
    );
    assert_refused(refused, StatusCode::TOO_MANY_REQUESTS, "request_rate", 2).await;
    // Another client's rate is its own.
    assert_eq!(echo(&other, 5, &[]).await.status(), StatusCode::OK);

    // Once the first grant left the window, exactly one more is admitted
    // (the refusal took nothing); the next waits for the second grant,
    // about 0.55 s away: Retry-After 1.
    sleep_until(first_answered + WINDOW + Duration::from_millis(50)).await;
    assert_eq!(echo(&client, 6, &[]).await.status(), StatusCode::OK);
    let refused = echo(&client, 7, &[]).await;
    assert!(
        before_first.elapsed() < WINDOW + SPACING,
        "too slow to check the delay"
    );
    assert_refused(refused, StatusCode::TOO_MANY_REQUESTS, "request_rate", 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_for_counts_only_from_a_trusted_proxy() {
    const WINDOW: Duration = Duration::from_secs(600);
    let (server, _probe) = TestServer::start_admission(
        BoundedSessionManagerBuilder::new(100)
            .trusted_proxies("x-forwarded-for", ["127.0.0.1/32"])
            .request_rate_limit_per_client(1, WINDOW)
            .build(),
    )
    .await;
    let xff = |value| [("x-forwarded-for", value)];

    // An untrusted peer's header is ignored: both requests are the peer's.
    let untrusted = server.client_from(addr(20));
    assert_eq!(
        echo(&untrusted, 1, &xff("203.0.113.5")).await.status(),
        StatusCode::OK
    );
    assert_refused(
        echo(&untrusted, 2, &xff("203.0.113.6")).await,
        StatusCode::TOO_MANY_REQUESTS,
        "request_rate",
        WINDOW.as_secs(),
    )
    .await;

    // The trusted proxy's header names the client: one key per address it
    // names...
    let proxy = server.client_from(addr(1));
    for (id, client) in [(3, "203.0.113.5"), (4, "203.0.113.6")] {
        assert_eq!(
            echo(&proxy, id, &xff(client)).await.status(),
            StatusCode::OK,
            "{client}"
        );
    }
    assert_refused(
        echo(&proxy, 6, &xff("203.0.113.5")).await,
        StatusCode::TOO_MANY_REQUESTS,
        "request_rate",
        WINDOW.as_secs(),
    )
    .await;
    // ...the untrusted peer's own included, whose budget is spent.
    assert_refused(
        echo(&proxy, 7, &xff("127.0.0.20")).await,
        StatusCode::TOO_MANY_REQUESTS,
        "request_rate",
        WINDOW.as_secs(),
    )
    .await;
}
