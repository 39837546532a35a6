use rmcp::model::ClientJsonRpcMessage;
use rmcp::transport::streamable_http_server::session::{RestoreOutcome, SessionManager};

use super::*;

#[tokio::test]
async fn a_refused_create_returns_its_rate_grant_and_holds_no_slot() {
    let manager = BoundedSessionManager::new(SessionConfig::default(), 1)
        .with_rate_limit(1, Duration::from_secs(60));
    // The only slot belongs to a creation in progress: nothing to evict.
    let in_progress = manager.registry.acquire_slot().await.unwrap();
    assert!(matches!(
        manager.create_session().await,
        Err(BoundedSessionError::AtCapacity)
    ));
    drop(in_progress);
    let stats = manager.stats();
    assert_eq!(
        (stats.session_count, stats.free_slots, stats.queued),
        (0, 1, 0)
    );

    // The grant came back: exactly one creation is allowed, not zero or two.
    let (_id, _transport) = manager.create_session().await.unwrap();
    assert!(matches!(
        manager.create_session().await,
        Err(BoundedSessionError::RateLimited)
    ));
    assert_eq!(manager.session_count(), 1);
}

#[tokio::test]
async fn restore_counts_against_the_cap_and_reports_presence() {
    let manager = BoundedSessionManager::new(SessionConfig::default(), 1);
    let (first, _first_transport) = manager.create_session().await.unwrap();
    assert!(matches!(
        manager.restore_session(first.clone()).await.unwrap(),
        RestoreOutcome::AlreadyPresent
    ));
    let restored: SessionId = "restored-from-store".into();
    let RestoreOutcome::Restored(_transport) =
        manager.restore_session(restored.clone()).await.unwrap()
    else {
        panic!("expected a restore");
    };
    assert!(manager.has_session(&restored).await.unwrap());
    assert!(
        !manager.has_session(&first).await.unwrap(),
        "evicted for the restore"
    );
    assert_eq!(manager.session_count(), 1);
}

#[tokio::test]
async fn huge_durations_mean_never_not_a_panic() {
    let mut config = SessionConfig::default();
    config.keep_alive = Some(Duration::MAX);
    config.init_timeout = Some(Duration::MAX);
    let manager = BoundedSessionManager::new(config, 2).with_max_lifetime(Duration::MAX);
    let (id, transport) = manager.create_session().await.unwrap();
    assert!(manager.has_session(&id).await.unwrap());
    // The session ends (DELETE); the transport infers a reason without
    // adding Duration::MAX to the clock.
    let mut transport = transport;
    manager.close_session(&id).await.unwrap();
    assert!(
        rmcp::transport::Transport::receive(&mut transport)
            .await
            .is_none()
    );
}

#[tokio::test]
async fn dropping_the_transport_closes_the_session() {
    let manager = BoundedSessionManager::new(SessionConfig::default(), 2);
    let (id, transport) = manager.create_session().await.unwrap();
    assert!(manager.has_session(&id).await.unwrap());
    drop(transport);
    assert!(!manager.has_session(&id).await.unwrap());
    assert_eq!(manager.stats().free_slots, 2);
}

#[tokio::test]
async fn operations_on_unknown_sessions_are_not_found() {
    let manager = BoundedSessionManager::new(SessionConfig::default(), 2);
    let unknown: SessionId = "unknown".into();
    let message: ClientJsonRpcMessage = serde_json::from_value(serde_json::json!({
        "jsonrpc": "2.0", "method": "notifications/initialized"
    }))
    .unwrap();
    let error = manager.accept_message(&unknown, message).await.unwrap_err();
    assert!(error.is_session_not_found(), "{error}");
    assert!(manager.close_session(&unknown).await.is_ok());
    assert!(
        manager
            .resume(&unknown, "0".into())
            .await
            .err()
            .unwrap()
            .is_session_not_found()
    );
}
