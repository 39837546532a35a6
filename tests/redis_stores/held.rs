//! Sessions an instance holds: a DELETE wins over every copy (also when
//! Redis lost the session's value, also between rmcp's load and restore),
//! and their streams live as long as they do.

use std::time::Duration;

use crate::common::eventually_async;
use crate::common::redis_backend::{Backend, key};
use crate::common::redis_server::unique_prefix;
use crate::helpers::instance;
use mcp_bounded_session::RedisStores;
use reqwest::StatusCode;
use rmcp::transport::streamable_http_server::session::{RestoreOutcome, SessionManager};

async fn stores_with(
    backend: &Backend,
    prefix: &str,
    ttl: Duration,
    upkeep: Duration,
) -> RedisStores {
    backend
        .builder()
        .prefix(prefix)
        .ttl(ttl)
        .upkeep_interval(upkeep)
        .connect()
        .await
        .unwrap()
}

async fn fast_stores(backend: &Backend, prefix: &str, ttl: Duration) -> RedisStores {
    stores_with(backend, prefix, ttl, Duration::from_millis(50)).await
}

crate::redis_test! {
    /// Redis lost the value of a session A holds (evicted, say); a DELETE
    /// reaches B, which has no copy. The DELETE must still end A's copy, and
    /// A's upkeep must not write the session back.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_delete_wins_when_redis_lost_the_sessions_value(backend) {
        let prefix = unique_prefix("delete_lost");
        // A slow upkeep, so that it does not write the value back before the
        // DELETE comes (which would make the DELETE find it).
        let slow =
            |prefix| stores_with(backend, prefix, Duration::from_secs(5), Duration::from_secs(1));
        let (stores_a, stores_b) = (slow(&prefix).await, slow(&prefix).await);
        let (a, b) = (instance(&stores_a, 8).await, instance(&stores_b, 8).await);
        let (on_a, on_b) = (a.client(), b.client());
        let session = on_a.initialize().await.unwrap();
        assert!(on_a.works(&session).await);
        let key = key::session(&prefix, &session);
        backend.del(&key).await;
        let status = on_b.delete(&session).await;
        assert!(status.is_success(), "DELETE on B: {status}");
        let ended = eventually_async(Duration::from_secs(2), || async {
            on_a.status_of(&session).await == StatusCode::NOT_FOUND
        })
        .await;
        // Upkeep rounds later, nothing came back.
        tokio::time::sleep(Duration::from_millis(1_500)).await;
        let left = backend.stored_keys(&prefix).await;
        drop((a, b, stores_a, stores_b));
        backend.clean(&prefix).await;
        assert!(ended, "A's copy outlived the DELETE on B");
        assert!(
            !left.contains(&key),
            "the session was written back: {left:?}"
        );
        assert!(
            left.contains(&key::tombstone(&prefix, &session)),
            "no tombstone: {left:?}"
        );
    }
}

crate::redis_test! {
    /// rmcp loads a session, then a DELETE of it comes on the same instance
    /// (close, then the store's delete), then rmcp asks the manager to restore
    /// it: the restore is refused, and no copy lives on.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_delete_between_load_and_restore_wins(backend) {
        let prefix = unique_prefix("delete_restore");
        // A session loaded here is kept for two upkeep intervals (a restore
        // may still be registering it): 1 s rounds give the restore below
        // 2 s, where 50 ms rounds gave it 100 ms, which a loaded machine
        // overran (the restore was then admitted).
        let paced = |prefix| {
            stores_with(backend, prefix, Duration::from_secs(5), Duration::from_secs(1))
        };
        let (stores_a, stores_b) = (paced(&prefix).await, paced(&prefix).await);
        let (a, b) = (instance(&stores_a, 8).await, instance(&stores_b, 8).await);
        let session = a.client().initialize().await.unwrap();
        let id: mcp_bounded_session::SessionId = session.clone().into();
        let sessions_b = stores_b.session_store();
        assert!(sessions_b.load(&session).await.unwrap().is_some());
        b.manager.close_session(&id).await.unwrap();
        sessions_b.delete(&session).await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        let restored = b.manager.restore_session(id.clone()).await;
        let refused = !matches!(restored, Ok(RestoreOutcome::Restored(_)));
        drop(restored);
        tokio::time::sleep(Duration::from_secs(1)).await;
        let lives = b.manager.session(&id).is_some();
        drop((a, b, stores_a, stores_b));
        backend.clean(&prefix).await;
        assert!(refused, "the restore after the DELETE was admitted");
        assert!(!lives, "the restored copy still lives after the DELETE");
    }
}

crate::redis_test! {
    /// A session's streams live as long as it does, however quiet: the upkeep
    /// of the instance holding it refreshes them with its value.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_quiet_stream_lives_as_long_as_its_session(backend) {
        let prefix = unique_prefix("quiet_stream");
        let ttl = Duration::from_millis(400);
        let stores = fast_stores(backend, &prefix, ttl).await;
        let server = instance(&stores, 8).await;
        let client = server.client();
        let session = client.initialize().await.unwrap();
        assert!(client.works(&session).await);
        let stream_prefix = key::streams_of(&prefix, &session);
        let streams: Vec<String> = backend
            .stored_keys(&prefix)
            .await
            .into_iter()
            .filter(|key| key.starts_with(&stream_prefix))
            .collect();
        assert!(!streams.is_empty(), "the call stored no stream");
        // Three TTLs without a write to the streams; the session lives (a
        // notification keeps the local copy active and writes no event).
        for _ in 0..6 {
            tokio::time::sleep(ttl / 2).await;
            let status = client
                .post(Some(session.parse().unwrap()))
                .json(&serde_json::json!({
                    "jsonrpc": "2.0", "method": "notifications/roots/list_changed"
                }))
                .send()
                .await
                .unwrap()
                .status();
            assert_eq!(status, StatusCode::ACCEPTED);
        }
        let mut gone = Vec::new();
        for stream in &streams {
            if !backend.exists(stream).await {
                gone.push(stream.clone());
            }
        }
        drop(server);
        drop(stores);
        backend.clean(&prefix).await;
        assert!(
            gone.is_empty(),
            "streams of a live session expired: {gone:?}"
        );
    }
}
