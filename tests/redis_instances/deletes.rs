//! A DELETE on one instance ends the session on the other.

use std::time::{Duration, Instant};

use crate::common::redis_backend::key;
use crate::mcp::{loopback, session_header};
use crate::processes::Pair;
use reqwest::StatusCode;
use serde_json::json;

crate::redis_test! {
    /// A DELETE on B ends A's copy too (over pub/sub), and leaves nothing of
    /// the session in Redis but its tombstone.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_delete_on_one_instance_ends_the_session_on_the_other(backend) {
        const BOUND: Duration = Duration::from_secs(2);
        let pair = Pair::start_on_backend("delete", backend);
        let on_a = pair.a.client(loopback(2));
        let on_b = pair.b.client(loopback(2));
        let session = on_a.initialize().await.expect("initialize on A");
        assert!(on_a.works(&session).await);
        // Restored on B: both instances hold a copy now.
        assert!(on_b.works(&session).await, "B did not restore the session");
        let before = backend.stored_keys(&pair.prefix).await;
        for key in [
            key::session(&pair.prefix, &session),
            key::index(&pair.prefix, &session),
        ] {
            assert!(before.contains(&key), "{key} missing: {before:?}");
        }
        assert!(
            before
                .iter()
                .any(|k| k.starts_with(&key::streams_of(&pair.prefix, &session))),
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

        let tombstone = key::tombstone(&pair.prefix, &session);
        let after = backend.stored_keys(&pair.prefix).await;
        assert_eq!(after, vec![tombstone.clone()], "keys left after the DELETE");
        // Nor does anything come back later (an upkeep round, a late write).
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(backend.stored_keys(&pair.prefix).await, vec![tombstone]);
        pair.finish().await;
    }
}

crate::redis_test! {
    /// A DELETE on an instance that never held the session (a load balancer
    /// may send it anywhere) still ends the copy on the instance that does.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_delete_on_an_instance_without_a_copy_ends_the_session(backend) {
        let pair = Pair::start_on_backend("delete_unheld", backend);
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
            backend.stored_keys(&pair.prefix).await,
            vec![key::tombstone(&pair.prefix, &session)]
        );
        pair.finish().await;
    }
}
