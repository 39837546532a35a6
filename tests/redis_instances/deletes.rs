//! A DELETE on one instance ends the session on the other.

use std::time::{Duration, Instant};

use crate::common::redis_server::{SHARED_URL, keys};
use crate::mcp::{loopback, session_header};
use crate::processes::Pair;
use reqwest::StatusCode;
use serde_json::json;

/// A DELETE on B ends A's copy too (over pub/sub), and leaves nothing of
/// the session in Redis but its tombstone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delete_on_one_instance_ends_the_session_on_the_other() {
    const BOUND: Duration = Duration::from_secs(2);
    let pair = Pair::start("delete");
    let on_a = pair.a.client(loopback(2));
    let on_b = pair.b.client(loopback(2));
    let session = on_a.initialize().await.expect("initialize on A");
    assert!(on_a.works(&session).await);
    // Restored on B: both instances hold a copy now.
    assert!(on_b.works(&session).await, "B did not restore the session");
    let before = keys(SHARED_URL, &pair.prefix).await;
    for key in [
        format!("{}session:{session}", pair.prefix),
        format!("{}streams:{session}", pair.prefix),
    ] {
        assert!(before.contains(&key), "{key} missing: {before:?}");
    }
    assert!(
        before
            .iter()
            .any(|k| k.starts_with(&format!("{}stream:{session}:", pair.prefix))),
        "no stream of the session stored: {before:?}"
    );

    let status = on_b.delete(&session).await;
    assert!(
        status == StatusCode::ACCEPTED || status == StatusCode::OK,
        "DELETE on B: {status}"
    );
    let deleted_at = Instant::now();
    // Polled with a notification: unlike a request, it opens no stream, so
    // the polling itself cannot write to Redis while A still holds a copy.
    let notification = json!({ "jsonrpc": "2.0", "method": "notifications/roots/list_changed" });
    let delay = loop {
        let status = on_a
            .post(Some(session_header(&session)))
            .json(&notification)
            .send()
            .await
            .unwrap()
            .status();
        if status == StatusCode::NOT_FOUND {
            break deleted_at.elapsed();
        }
        assert_eq!(
            status,
            StatusCode::ACCEPTED,
            "A answered neither 202 nor 404"
        );
        assert!(
            deleted_at.elapsed() < BOUND,
            "A still accepts the session {BOUND:?} after its DELETE on B"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    println!("A ended its copy {delay:?} after the DELETE on B");
    assert_eq!(on_a.status_of(&session).await, StatusCode::NOT_FOUND);
    assert_eq!(on_b.status_of(&session).await, StatusCode::NOT_FOUND);

    let tombstone = format!("{}deleted:{session}", pair.prefix);
    let after = keys(SHARED_URL, &pair.prefix).await;
    assert_eq!(after, vec![tombstone.clone()], "keys left after the DELETE");
    // Nor does anything come back later (an upkeep round, a late write).
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(keys(SHARED_URL, &pair.prefix).await, vec![tombstone]);
    pair.finish().await;
}

/// A DELETE on an instance that never held the session (a load balancer
/// may send it anywhere) still ends the copy on the instance that does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delete_on_an_instance_without_a_copy_ends_the_session() {
    let pair = Pair::start("delete_unheld");
    let on_a = pair.a.client(loopback(2));
    let on_b = pair.b.client(loopback(2));
    let session = on_a.initialize().await.expect("initialize on A");
    assert!(on_a.works(&session).await);

    let status = on_b.delete(&session).await;
    assert!(
        status == StatusCode::ACCEPTED || status == StatusCode::OK,
        "DELETE on B (which never held the session): {status}"
    );
    let deleted_at = Instant::now();
    let notification = json!({ "jsonrpc": "2.0", "method": "notifications/roots/list_changed" });
    loop {
        let status = on_a
            .post(Some(session_header(&session)))
            .json(&notification)
            .send()
            .await
            .unwrap()
            .status();
        if status == StatusCode::NOT_FOUND {
            break;
        }
        assert!(
            deleted_at.elapsed() < Duration::from_secs(2),
            "A still answers {status} 2 s after the DELETE on B"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(on_b.status_of(&session).await, StatusCode::NOT_FOUND);
    assert_eq!(
        keys(SHARED_URL, &pair.prefix).await,
        vec![format!("{}deleted:{session}", pair.prefix)]
    );
    pair.finish().await;
}
