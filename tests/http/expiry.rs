//! Idle timeout, init timeout and maximum lifetime through real HTTP: an
//! expired session answers 404 and its slot is free for a newcomer.

use crate::common;

use std::sync::Arc;
use std::time::Duration;

use common::{
    TestServer, assert_conserved, close_reason, eventually, record_lifecycle_events,
    stream_ends_within,
};
use mcp_bounded_session::{BoundedSessionManager, BoundedSessionManagerBuilder, SessionConfig};
use reqwest::StatusCode;
use rmcp::transport::streamable_http_server::session::SessionManager;

#[tokio::test]
async fn idle_sessions_free_their_slots_so_newcomers_evict_nobody() {
    let _timed = common::load::timed().await;
    const CAP: usize = 4;
    record_lifecycle_events();
    let server = TestServer::start(
        BoundedSessionManagerBuilder::new(CAP)
            .idle_timeout(Duration::from_millis(300))
            .build(),
    )
    .await;
    let client = server.client();
    let mut idle = Vec::new();
    for _ in 0..CAP {
        idle.push(client.initialize().await.unwrap());
    }
    assert!(
        eventually(Duration::from_secs(5), || server.manager.session_count()
            == 0)
        .await,
        "idle sessions still hold slots: {:?}",
        server.manager.stats()
    );
    for session in &idle {
        assert_eq!(client.status_of(session).await, StatusCode::NOT_FOUND);
        assert_eq!(close_reason(session).as_deref(), Some("IdleTimeout"));
    }

    // CAP new sessions all fit: none of them evicted another live one.
    let mut fresh = Vec::new();
    for _ in 0..CAP {
        fresh.push(client.initialize().await.unwrap());
    }
    for session in &fresh {
        assert!(client.works(session).await, "a new session was evicted");
    }
    assert_eq!(server.manager.session_count(), CAP);
    assert_conserved(&server.manager);
}

#[tokio::test]
async fn idle_expiry_ends_the_open_sse_stream() {
    let _timed = common::load::timed().await;
    let server = TestServer::start(
        BoundedSessionManagerBuilder::new(2)
            .idle_timeout(Duration::from_millis(300))
            .build(),
    )
    .await;
    let client = server.client();
    let session = client.initialize().await.unwrap();
    let stream = client.open_standalone(&session).await;
    assert_eq!(stream.status(), StatusCode::OK);
    assert!(
        stream_ends_within(stream, Duration::from_secs(5)).await,
        "the expired session's GET stream stayed open"
    );
    assert_eq!(client.status_of(&session).await, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn activity_keeps_a_session_alive_past_the_idle_timeout() {
    let _timed = common::load::timed().await;
    let server = TestServer::start(
        BoundedSessionManagerBuilder::new(2)
            .idle_timeout(Duration::from_millis(400))
            .build(),
    )
    .await;
    let client = server.client();
    let session = client.initialize().await.unwrap();
    for _ in 0..6 {
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert!(client.works(&session).await);
    }
}

#[tokio::test]
async fn max_lifetime_closes_active_sessions() {
    let _timed = common::load::timed().await;
    record_lifecycle_events();
    let server = TestServer::start(
        BoundedSessionManagerBuilder::new(4)
            .max_lifetime(Duration::from_millis(500))
            .build(),
    )
    .await;
    let client = server.client();
    let session = client.initialize().await.unwrap();
    // Activity does not extend a lifetime.
    let mut answered = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while client.works(&session).await {
        answered += 1;
        assert!(
            tokio::time::Instant::now() < deadline,
            "session outlived its lifetime"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        answered >= 2,
        "the session worked before its lifetime ended"
    );
    assert_eq!(client.status_of(&session).await, StatusCode::NOT_FOUND);
    assert!(
        eventually(Duration::from_secs(2), || server.manager.session_count()
            == 0)
        .await
    );
    assert_eq!(close_reason(&session).as_deref(), Some("MaxLifetime"));
    assert_conserved(&server.manager);
}

#[tokio::test]
async fn a_session_never_initialized_is_reclaimed_by_init_timeout() {
    let _timed = common::load::timed().await;
    record_lifecycle_events();
    let mut config = SessionConfig::default();
    config.init_timeout = Some(Duration::from_millis(200));
    let manager = Arc::new(BoundedSessionManager::new(config, 2));
    let _server = TestServer::start(manager.clone()).await;
    // What the service does before the handshake, minus the handshake: the
    // transport is held by a task like rmcp's handler task would.
    let (id, transport) = manager.create_session().await.unwrap();
    let holder = tokio::spawn(async move {
        let mut transport = transport;
        rmcp::transport::Transport::receive(&mut transport).await
    });
    assert!(manager.has_session(&id).await.unwrap());
    assert!(
        holder.await.unwrap().is_none(),
        "worker quit on init timeout"
    );
    assert!(!manager.has_session(&id).await.unwrap());
    assert_eq!(close_reason(&id).as_deref(), Some("InitTimeout"));
    assert_eq!(manager.session_count(), 0);
    assert_conserved(&manager);
}
