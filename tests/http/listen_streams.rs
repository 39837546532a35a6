//! Listen streams (`subscriptions/listen` of protocol 2026-07-28) through
//! real HTTP: the per-client quota replaces the client's own oldest stream
//! (whose handler sees its cancellation) and never another client's, or
//! refuses with 429; the global bound refuses with 503. The handler
//! ([`common::admission`]) records each `listen` that started and each
//! that saw its cancellation. Each 127.0.0.x source address is a client.

use crate::common;

use std::net::Ipv4Addr;
use std::time::Duration;

use common::admission::{assert_refused, call, listen, open_listen};
use common::{SseReader, TestServer, eventually};
use mcp_bounded_session::{BoundedSessionManager, BoundedSessionManagerBuilder, ListenAtQuota};
use reqwest::StatusCode;
use serde_json::json;

const TIMEOUT: Duration = Duration::from_secs(20);

fn addr(last: u8) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 0, last)
}

/// Whether the stream sends nothing and does not end for a while.
async fn still_open(reader: &mut SseReader) -> bool {
    tokio::time::timeout(
        Duration::from_millis(300),
        reader.next(Duration::from_secs(600)),
    )
    .await
    .is_err()
}

/// Whether the stream ends (after whatever it still sends) in time.
async fn ends(reader: &mut SseReader) -> bool {
    tokio::time::timeout(TIMEOUT, async {
        while reader.next(TIMEOUT).await.is_some() {}
    })
    .await
    .is_ok()
}

async fn wait_listening(manager: &BoundedSessionManager, streams: usize) {
    assert!(
        eventually(TIMEOUT, || manager.listen_streams() == streams).await,
        "{} listen streams, never {streams}",
        manager.listen_streams()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_its_quota_a_client_replaces_its_own_oldest_stream() {
    let _timed = common::load::timed().await;
    let (server, probe) = TestServer::start_admission(
        BoundedSessionManagerBuilder::new(100)
            .max_listen_streams(10)
            .max_listen_streams_per_client(2)
            // Listen streams are not requests: this bound stays free.
            .max_requests_in_flight(1)
            .build(),
    )
    .await;
    let a = server.client_from(addr(2));
    let b = server.client_from(addr(3));
    let mut a1 = open_listen(&a, 1).await;
    let mut a2 = open_listen(&a, 2).await;
    let mut b3 = open_listen(&b, 3).await;
    assert!(eventually(TIMEOUT, || (1..=3).all(|id| probe.listen_started(id))).await);
    wait_listening(&server.manager, 3).await;
    assert_eq!(server.manager.requests_in_flight(), 0);
    let echo = call(&a, 10, "echo", json!({ "text": "x" }))
        .send()
        .await
        .unwrap();
    assert_eq!(echo.status(), StatusCode::OK);

    // A's third: admitted, and A's oldest ends, its handler cancelled.
    let mut a4 = open_listen(&a, 4).await;
    assert!(ends(&mut a1).await, "A's oldest stream did not end");
    assert!(
        eventually(TIMEOUT, || probe.listen_cancelled(1)).await,
        "the replaced stream's listen never saw its cancellation"
    );
    assert!(still_open(&mut a2).await && still_open(&mut b3).await);
    assert!(!probe.listen_cancelled(2) && !probe.listen_cancelled(3));
    wait_listening(&server.manager, 3).await;

    // And again: now A's oldest is 2; B's stream is never touched.
    let mut a5 = open_listen(&a, 5).await;
    assert!(ends(&mut a2).await, "A's oldest stream did not end");
    assert!(eventually(TIMEOUT, || probe.listen_cancelled(2)).await);
    assert!(still_open(&mut b3).await && still_open(&mut a4).await && still_open(&mut a5).await);
    assert!(!probe.listen_cancelled(3) && !probe.listen_cancelled(4));
    wait_listening(&server.manager, 3).await;

    // Clients going away give their places back.
    drop((a4, a5, b3));
    assert!(eventually(TIMEOUT, || (3..=5).all(|id| probe.listen_cancelled(id))).await);
    wait_listening(&server.manager, 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_its_quota_a_client_may_be_refused_instead() {
    let _timed = common::load::timed().await;
    let (server, probe) = TestServer::start_admission(
        BoundedSessionManagerBuilder::new(100)
            .max_listen_streams_per_client(1)
            .listen_at_quota(ListenAtQuota::Refuse)
            .build(),
    )
    .await;
    let a = server.client_from(addr(2));
    let b = server.client_from(addr(3));
    let mut a1 = open_listen(&a, 1).await;
    let refused = listen(&a, 2).send().await.unwrap();
    assert_refused(refused, StatusCode::TOO_MANY_REQUESTS, "listen_quota", 1).await;
    assert!(!probe.listen_started(2));
    // A's stream goes on; B has its own quota.
    let _b3 = open_listen(&b, 3).await;
    assert!(still_open(&mut a1).await);
    assert!(!probe.listen_cancelled(1));
    wait_listening(&server.manager, 2).await;
    // Once A's stream is closed, A may open another.
    drop(a1);
    assert!(eventually(TIMEOUT, || probe.listen_cancelled(1)).await);
    wait_listening(&server.manager, 1).await;
    let _a4 = open_listen(&a, 4).await;
    wait_listening(&server.manager, 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_global_bound_refuses_with_503() {
    let _timed = common::load::timed().await;
    let (server, probe) = TestServer::start_admission(
        BoundedSessionManagerBuilder::new(100)
            .max_listen_streams(2)
            .max_listen_streams_per_client(1)
            .build(),
    )
    .await;
    let a = server.client_from(addr(2));
    let b = server.client_from(addr(3));
    let c = server.client_from(addr(4));
    let mut a1 = open_listen(&a, 1).await;
    let mut b2 = open_listen(&b, 2).await;
    let refused = listen(&c, 3).send().await.unwrap();
    assert_refused(
        refused,
        StatusCode::SERVICE_UNAVAILABLE,
        "listen_at_capacity",
        1,
    )
    .await;
    assert!(!probe.listen_started(3));
    // Requests do not count against it.
    let echo = call(&c, 10, "echo", json!({ "text": "x" }))
        .send()
        .await
        .unwrap();
    assert_eq!(echo.status(), StatusCode::OK);

    // A replacing its own stream needs no new place: admitted while full.
    let _a4 = open_listen(&a, 4).await;
    assert!(ends(&mut a1).await);
    assert!(eventually(TIMEOUT, || probe.listen_cancelled(1)).await);
    assert!(still_open(&mut b2).await);
    wait_listening(&server.manager, 2).await;

    // A place freed is C's.
    drop(b2);
    wait_listening(&server.manager, 1).await;
    let _c5 = open_listen(&c, 5).await;
    wait_listening(&server.manager, 2).await;
    assert!(eventually(TIMEOUT, || probe.listen_cancelled(2)).await);
}
