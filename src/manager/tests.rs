use rmcp::model::ClientJsonRpcMessage;
use rmcp::transport::streamable_http_server::session::{RestoreOutcome, SessionManager};

use super::*;
use crate::store::memory_sessions::tests::state;

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
    let manager = BoundedSessionManager::builder(2)
        .session_config(config)
        .max_lifetime(Duration::MAX)
        .build();
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

/// Polls `future` once; whether it is still pending.
fn pending_after_one_poll<F: std::future::Future>(future: std::pin::Pin<&mut F>) -> bool {
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    future.poll(&mut cx).is_pending()
}

#[tokio::test]
async fn a_create_dropped_while_waiting_for_a_close_leaks_no_slot_nor_rate_grant() {
    let manager = BoundedSessionManager::new(SessionConfig::default(), 1)
        .with_rate_limit(2, Duration::from_secs(60));
    let (first, _first_transport) = manager.create_session().await.unwrap();
    {
        // A close in flight at the full cap: the creation waits for its
        // slot, holding a rate grant.
        let _close = manager.registry.close_in_flight();
        let mut create = std::pin::pin!(manager.create_session());
        assert!(pending_after_one_poll(create.as_mut()), "did not wait");
        assert_eq!(manager.registry.waiters(), 1);
    } // dropped mid-wait (the client hung up), then the close ends
    assert_eq!(manager.registry.waiters(), 0);
    let stats = manager.stats();
    assert_eq!((stats.session_count, stats.free_slots), (1, 0), "{stats:?}");
    assert!(manager.has_session(&first).await.unwrap());
    // The grant came back: one more creation (evicting `first`), not zero.
    let (_id, _transport) = manager.create_session().await.unwrap();
    assert!(!manager.has_session(&first).await.unwrap());
    assert!(matches!(
        manager.create_session().await,
        Err(BoundedSessionError::RateLimited)
    ));
    assert!(manager.stats().is_consistent());
}

#[tokio::test]
async fn a_client_admission_dropped_mid_wait_returns_its_quota_unit_and_grants() {
    let manager = BoundedSessionManagerBuilder::new(1)
        .rate_limit(2, Duration::from_secs(60))
        .max_sessions_per_client(1)
        .rate_limit_per_client(1, Duration::from_secs(60))
        .build();
    let (first, _first_transport) = manager.create_session().await.unwrap();
    let client = crate::clients::ClientKey::named("client");
    let admit = || {
        admission::admit(
            &manager.registry,
            manager.rate_limiter.as_ref(),
            manager.clients.as_deref(),
            &client,
        )
    };
    {
        let _close = manager.registry.close_in_flight();
        let mut admitting = std::pin::pin!(admit());
        assert!(pending_after_one_poll(admitting.as_mut()), "did not wait");
        assert_eq!(manager.registry.waiters(), 1);
    }
    assert_eq!(manager.registry.waiters(), 0);
    assert!(manager.stats().is_consistent());
    // Quota 1, a client rate of 1 and one global grant left: any of them
    // leaked by the dropped admission would refuse this one.
    let admitted = admit().await;
    assert!(admitted.is_ok(), "{admitted:?}");
    assert!(
        !manager.has_session(&first).await.unwrap(),
        "evicted for it"
    );
    drop(admitted);
    assert!(manager.stats().is_consistent());
}

#[tokio::test]
async fn a_restore_waits_out_a_close_in_flight_instead_of_answering_present() {
    let manager = BoundedSessionManager::new(SessionConfig::default(), 1);
    let (id, _transport) = manager.create_session().await.unwrap();
    let activity = manager
        .registry
        .with_activity(&id, |_, activity| activity.clone())
        .unwrap();
    let mut restore = std::pin::pin!(manager.restore_session(id.clone()));
    // An eviction claimed the session and has yet to remove it; a DELETE
    // that lost the race to it marked the session as ending. The restore
    // started in that moment must wait for the removal, not answer
    // `AlreadyPresent` for a session that is gone a moment later.
    let slot = manager.registry.evict_idle(&activity, || {
        assert!(
            !manager
                .registry
                .close(&id, None, crate::CloseReason::Closed)
        );
        assert!(!manager.registry.contains(&id), "marked as ending");
        assert!(
            pending_after_one_poll(restore.as_mut()),
            "answered while the close was in flight"
        );
    });
    assert!(slot.is_some(), "evicted");
    drop(slot);
    // The removal done, the restore admits the id anew.
    let RestoreOutcome::Restored(_restored) = restore.await.unwrap() else {
        panic!("the removed session was answered as present");
    };
    assert!(manager.has_session(&id).await.unwrap());
    assert_eq!(manager.session_count(), 1);
    assert!(manager.stats().is_consistent());
}

/// rmcp looks a session up (`has_session`), then hands it the request
/// (`create_stream`): in between, `park_after` or an eviction must not end
/// it, or a request for a live session would be answered `404`.
#[tokio::test]
async fn a_session_found_by_a_request_stays_until_the_request_reaches_it() {
    let manager = BoundedSessionManager::new(SessionConfig::default(), 2);
    let (id, _transport) = manager.create_session().await.unwrap();
    let generation = manager
        .registry
        .with_activity(&id, |_, activity| activity.generation())
        .unwrap();
    let stream_busy = http::in_request(async {
        assert!(manager.has_session(&id).await.unwrap());
        assert!(
            !manager.registry.park(&id, generation),
            "parked between the lookup and the request"
        );
        // A step that is not the request's stream leaves the mark held.
        let (_, step) = manager.begin(&id, Refusal::SessionGone).unwrap();
        drop(step);
        assert!(!manager.registry.park(&id, generation));
        // The stream takes it over, and keeps it past the request's scope.
        let (_, busy) = manager.begin_stream(&id, Refusal::SessionGone).unwrap();
        busy
    })
    .await;
    assert!(!manager.registry.park(&id, generation));
    drop(stream_busy);
    assert!(manager.registry.park(&id, generation), "quiet: it parks");
    assert!(!manager.has_session(&id).await.unwrap());
}

/// A lookup outside the layer holds nothing; a session claimed by a park
/// or a close, still mapped while that close removes it, is gone to a
/// lookup in or out of the layer (rmcp then restores it), and to a
/// request that held it before the claim (a close does not wait for
/// requests, as a park does).
#[tokio::test]
async fn a_claimed_session_is_gone_to_lookups_and_to_held_requests() {
    let store = crate::store::MemorySessionStore::default();
    let manager = BoundedSessionManager::builder(2).park_in(&store).build();
    let (id, _transport) = manager.create_session().await.unwrap();
    let generation = manager
        .registry
        .with_activity(&id, |_, activity| activity.generation())
        .unwrap();
    assert!(manager.has_session(&id).await.unwrap());
    assert!(
        manager.registry.park(&id, generation),
        "outside: nothing held"
    );

    let (other, _other_transport) = manager.create_session().await.unwrap();
    let claim = || {
        manager
            .registry
            .with_activity(&other, |_, activity| activity.claim(false))
            .unwrap()
    };
    http::in_request(async {
        assert!(manager.has_session(&other).await.unwrap());
        // A DELETE's claim, the entry not removed yet.
        assert!(claim());
        assert!(
            manager.begin_stream(&other, Refusal::SessionGone).is_err(),
            "served by a closed session"
        );
        assert!(!manager.has_session(&other).await.unwrap());
        let parking = manager.settings.parking.as_ref().unwrap();
        assert!(parking.is_awaited(&other), "a lookup that found it gone");
    })
    .await;
    assert!(!manager.has_session(&other).await.unwrap());
    let parking = manager.settings.parking.as_ref().unwrap();
    assert!(!parking.is_awaited(&other), "listed past its request");
}

/// Two requests for one parked session: one restores it, the other waits
/// for that restore (rmcp runs one at a time) and reaches the session
/// after the first is done with it. In between, `park_after` must leave
/// the idle restored copy to the waiting request.
#[tokio::test]
async fn a_session_awaited_by_a_request_is_not_parked() {
    use rmcp::transport::streamable_http_server::session::store::SessionStore;

    let store = crate::store::MemorySessionStore::default();
    let manager = Arc::new(
        BoundedSessionManager::builder(2)
            .park_in(&store)
            .park_after(Duration::from_millis(1))
            .build(),
    );
    let (id, _transport) = manager.create_session().await.unwrap();
    let generation = |manager: &BoundedSessionManager| {
        manager
            .registry
            .with_activity(&id, |_, activity| activity.generation())
            .unwrap()
    };
    store.expect(
        &id,
        generation(&manager),
        crate::clients::ClientKey::anonymous(),
        None,
    );
    store.store(&id, &state()).await.unwrap();
    assert!(manager.registry.park(&id, generation(&manager)));

    let _transport = http::in_request(async {
        assert!(!manager.has_session(&id).await.unwrap(), "parked");
        // Restored by another request, which is done with it at once.
        let restoring = {
            let (manager, id) = (manager.clone(), id.clone());
            tokio::spawn(async move { manager.restore_session(id).await })
        };
        // Kept: its end would close the restored copy.
        let RestoreOutcome::Restored(_transport) = restoring.await.unwrap().unwrap() else {
            panic!("expected a restore");
        };
        assert!(
            !manager.registry.park(&id, generation(&manager)),
            "parked under the waiting request"
        );
        _transport
    })
    .await;
    assert!(manager.registry.park(&id, generation(&manager)));
}

/// A restore that finds the session's copy still ending (out of the
/// registry, not yet parked: the closing thread was preempted in between)
/// waits for the park, however long the preemption lasts, up to a second.
#[tokio::test(start_paused = true)]
async fn a_restore_waits_for_a_copy_that_is_still_ending() {
    use rmcp::transport::streamable_http_server::session::store::SessionStore;

    let store = crate::store::MemorySessionStore::default();
    let manager = BoundedSessionManager::builder(2).park_in(&store).build();
    let id: SessionId = "0b7e1c2a-5f7e-4c1b-9d7e-000000000001".into();
    let state = state();
    // Copy 7 of it is live in the store, but no longer in the registry.
    store.expect(&id, 7, crate::clients::ClientKey::anonymous(), None);
    store.store(&id, &state).await.unwrap();
    let parking = {
        let (store, id) = (store.clone(), id.clone());
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            store.inner.closed(&id, 7, true, None)
        })
    };
    let RestoreOutcome::Restored(_transport) = manager.restore_session(id.clone()).await.unwrap()
    else {
        panic!("expected a restore");
    };
    assert_eq!(
        parking.await.unwrap(),
        crate::store::memory_sessions::Parked::Yes
    );
    assert!(manager.has_session(&id).await.unwrap());

    // A copy that never finishes ending is given up on after the limit.
    let other: SessionId = "0b7e1c2a-5f7e-4c1b-9d7e-000000000002".into();
    store.expect(&other, 3, crate::clients::ClientKey::anonymous(), None);
    store.store(&other, &state).await.unwrap();
    let started = tokio::time::Instant::now();
    assert!(manager.restore_session(other).await.is_err());
    assert!(started.elapsed() >= Duration::from_secs(1));
}
/// Parking does not extend a session's maximum lifetime: a restored copy
/// ends when its first copy would have, and a session parked past that
/// end is not restored.
#[tokio::test(start_paused = true)]
async fn parking_does_not_extend_the_maximum_lifetime() {
    use rmcp::transport::streamable_http_server::session::store::SessionStore;

    let store = crate::store::MemorySessionStore::default();
    let manager = BoundedSessionManager::builder(2)
        .park_in(&store)
        .max_lifetime(Duration::from_secs(10))
        .build();
    let started = tokio::time::Instant::now();
    let (id, _transport) = manager.create_session().await.unwrap();
    let copy = |manager: &BoundedSessionManager| {
        manager
            .registry
            .with_activity(&id, |session, activity| {
                (activity.generation(), session.handle.shared().lifetime_end)
            })
            .unwrap()
    };
    let (generation, end) = copy(&manager);
    assert_eq!(end, Some(started + Duration::from_secs(10)));
    // Its handshake done (the manager expects its entry, rmcp fills it).
    store.expect(&id, generation, crate::clients::ClientKey::anonymous(), end);
    store.store(&id, &state()).await.unwrap();
    assert!(manager.registry.park(&id, generation));

    tokio::time::advance(Duration::from_secs(6)).await;
    let RestoreOutcome::Restored(_restored) = manager.restore_session(id.clone()).await.unwrap()
    else {
        panic!("expected a restore");
    };
    let (generation, restored_end) = copy(&manager);
    assert_eq!(restored_end, end, "the restore extended the lifetime");
    assert!(manager.registry.park(&id, generation));

    tokio::time::advance(Duration::from_secs(5)).await;
    assert!(
        manager.restore_session(id.clone()).await.is_err(),
        "restored past its lifetime"
    );
}
