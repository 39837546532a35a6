//! The cap through real HTTP: oldest-first eviction, exactness under a burst
//! of concurrent `initialize` requests, DELETE freeing the slot.

use crate::common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::{
    TestServer, assert_conserved, close_reason, eventually, record_lifecycle_events,
    stream_ends_within, was_created,
};
use mcp_bounded_session::{BoundedSessionManager, BoundedSessionManagerBuilder, SessionConfig};
use reqwest::StatusCode;

#[tokio::test]
async fn full_cap_evicts_the_oldest_session_only() {
    record_lifecycle_events();
    let server = TestServer::start(BoundedSessionManagerBuilder::new(3).build()).await;
    let client = server.client();
    let mut sessions = Vec::new();
    for _ in 0..3 {
        sessions.push(client.initialize().await.unwrap());
    }
    assert_eq!(server.manager.session_count(), 3);

    let newest = client.initialize().await.unwrap();
    assert_eq!(server.manager.session_count(), 3);
    assert_eq!(client.status_of(&sessions[0]).await, StatusCode::NOT_FOUND);
    assert_eq!(close_reason(&sessions[0]).as_deref(), Some("Evicted"));
    assert!(was_created(&newest));
    assert!(client.works(&sessions[1]).await);
    assert!(client.works(&sessions[2]).await);
    assert!(client.works(&newest).await);

    // The next one evicts the second oldest, not the newest.
    client.initialize().await.unwrap();
    assert_eq!(client.status_of(&sessions[1]).await, StatusCode::NOT_FOUND);
    assert!(client.works(&sessions[2]).await);
    assert!(client.works(&newest).await);
    assert_conserved(&server.manager);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_initialize_burst_never_exceeds_the_cap() {
    let _heavy = common::load::heavy().await;
    const CAP: usize = 8;
    const CLIENTS: usize = 64;
    let server = TestServer::start(BoundedSessionManagerBuilder::new(CAP).build()).await;
    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let manager = server.manager.clone();
        let done = done.clone();
        std::thread::spawn(move || {
            let (mut samples, mut max_seen) = (0u64, 0);
            while !done.load(Ordering::Relaxed) {
                // The counter, not the map's length: DashMap::len sums its
                // shards one by one, so an eviction in one shard and an
                // insert in another can be counted together although they
                // never coexisted. (The loom models check the map itself,
                // whose stand-in counts atomically.)
                max_seen = max_seen.max(manager.session_count());
                samples += 1;
            }
            (samples, max_seen)
        })
    };
    let client = server.client();
    let results = futures::future::join_all((0..CLIENTS).map(|_| {
        let client = client.clone();
        async move { client.initialize().await }
    }))
    .await;
    done.store(true, Ordering::Relaxed);
    let (samples, max_seen) = sampler.join().unwrap();
    assert!(
        samples > 1_000,
        "the sampler ran throughout ({samples} samples)"
    );
    assert!(
        max_seen <= CAP,
        "saw {max_seen} live sessions at a cap of {CAP}"
    );
    assert_eq!(server.manager.session_count(), CAP);
    assert_conserved(&server.manager);

    // Exactly CAP of the sessions handed out still work; every other one is
    // gone (evicted, possibly before its handshake finished).
    let created: Vec<String> = results.into_iter().filter_map(Result::ok).collect();
    assert!(created.len() >= CAP);
    let mut working = 0;
    for session in &created {
        if client.works(session).await {
            working += 1;
        } else {
            assert_eq!(client.status_of(session).await, StatusCode::NOT_FOUND);
        }
    }
    assert_eq!(working, CAP);
}

#[tokio::test]
async fn delete_closes_the_session_and_frees_its_slot() {
    record_lifecycle_events();
    let server = TestServer::start(BoundedSessionManagerBuilder::new(2).build()).await;
    let client = server.client();
    let first = client.initialize().await.unwrap();
    let second = client.initialize().await.unwrap();
    assert!(client.delete(&first).await.is_success());
    assert_eq!(client.status_of(&first).await, StatusCode::NOT_FOUND);
    assert_eq!(close_reason(&first).as_deref(), Some("Closed"));
    assert_eq!(server.manager.session_count(), 1);

    // The freed slot is used: creating one more evicts nobody.
    let third = client.initialize().await.unwrap();
    assert!(client.works(&second).await);
    assert!(client.works(&third).await);
    assert_conserved(&server.manager);
}

#[tokio::test]
async fn eviction_ends_the_open_sse_stream() {
    let server = TestServer::start(BoundedSessionManagerBuilder::new(1).build()).await;
    let client = server.client();
    let victim = client.initialize().await.unwrap();
    let stream = client.open_standalone(&victim).await;
    assert_eq!(stream.status(), StatusCode::OK);
    client.initialize().await.unwrap();
    assert!(
        stream_ends_within(stream, Duration::from_secs(5)).await,
        "the evicted session's GET stream stayed open"
    );
    assert_eq!(client.status_of(&victim).await, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn delete_ends_the_open_sse_stream() {
    let server = TestServer::start(BoundedSessionManagerBuilder::new(2).build()).await;
    let client = server.client();
    let session = client.initialize().await.unwrap();
    let stream = client.open_standalone(&session).await;
    assert_eq!(stream.status(), StatusCode::OK);
    assert!(client.delete(&session).await.is_success());
    assert!(
        stream_ends_within(stream, Duration::from_secs(5)).await,
        "the deleted session's GET stream stayed open"
    );
}

#[tokio::test]
async fn handler_end_frees_the_slot() {
    // Server shutdown stops every handler; each session must leave.
    record_lifecycle_events();
    let manager = Arc::new(BoundedSessionManager::new(SessionConfig::default(), 4));
    let server = TestServer::start(manager.clone()).await;
    let client = server.client();
    let mut sessions = Vec::new();
    for _ in 0..3 {
        sessions.push(client.initialize().await.unwrap());
    }
    assert_eq!(manager.session_count(), 3);
    drop(server);
    assert!(
        eventually(Duration::from_secs(5), || manager.session_count() == 0).await,
        "sessions outlived their handlers: {:?}",
        manager.stats()
    );
    for session in &sessions {
        assert_eq!(close_reason(session).as_deref(), Some("HandlerEnded"));
    }
    assert_conserved(&manager);
}
