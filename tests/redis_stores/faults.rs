//! Redis away: the store's calls fail at once after a failure, sessions
//! made only while it was away are written once it is back, and the
//! background tasks end with the stores.

use std::time::Duration;

use crate::common::eventually_async;
use crate::common::redis_backend::key;
use crate::common::redis_server::{PrivateRedis, unique_prefix};
use crate::helpers::{exists, instance, message, session_id, session_state, store_error, stores};
use mcp_bounded_session::{RedisStores, StoreError};

async fn private_stores(redis: &PrivateRedis, prefix: &str) -> RedisStores {
    RedisStores::builder(redis.url())
        .prefix(prefix)
        .ttl(Duration::from_secs(3))
        .upkeep_interval(Duration::from_millis(100))
        .connect()
        .await
        .unwrap()
}

/// After one failure, the next call does not wait for Redis: it fails at
/// once with `RedisUnavailable`, until the probe interval has passed.
#[tokio::test]
async fn after_a_failure_calls_fail_at_once() {
    let mut redis = PrivateRedis::start();
    let stores = private_stores(&redis, &unique_prefix("circuit")).await;
    let events = stores.event_store();
    assert!(events.store_event("s:common", &message(1)).await.is_ok());
    redis.stop();
    let first = events
        .store_event("s:common", &message(2))
        .await
        .unwrap_err();
    assert!(
        matches!(store_error(&first), StoreError::Redis(_)),
        "{first}"
    );
    let second = events
        .store_event("s:common", &message(3))
        .await
        .unwrap_err();
    assert!(
        matches!(store_error(&second), StoreError::RedisUnavailable),
        "{second}"
    );
    redis.restart();
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    assert!(
        events.store_event("s:common", &message(4)).await.is_ok(),
        "the probe after the interval reaches Redis again"
    );
}

/// An instance whose only sessions were made while Redis was away writes
/// them once Redis answers (the refresh has nothing to send then, and must
/// not stop the round).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_made_only_during_an_outage_are_written_when_redis_returns() {
    let mut redis = PrivateRedis::start();
    let prefix = unique_prefix("outage_only");
    let stores = private_stores(&redis, &prefix).await;
    let server = instance(&stores, 8).await;
    let client = server.client();
    redis.stop();
    let session = client
        .initialize()
        .await
        .expect("initialize while Redis is away");
    assert!(client.works(&session).await);
    redis.restart();
    let url = redis.url();
    let key = key::session(&prefix, &session);
    assert!(
        eventually_async(Duration::from_secs(5), || exists(&url, &key)).await,
        "the session was never written after Redis came back"
    );
}

crate::redis_test! {
    /// Every DELETE of a well-shaped id leaves a tombstone (Redis may have
    /// lost the value of a session an instance still holds): four TTLs for a
    /// session that existed, one for an id nobody here knew, never shortened
    /// by a later DELETE.
    #[tokio::test]
    async fn every_delete_leaves_a_tombstone_that_outlives_the_ttl_if_the_session_existed(backend) {
        let prefix = unique_prefix("tombstone");
        let stores = stores(backend, &prefix, Some(Duration::from_secs(10))).await;
        let sessions = stores.session_store();
        let (known, unknown) = (session_id(1), session_id(2));
        sessions.store(&known, &session_state()).await.unwrap();
        sessions.delete(&known).await.unwrap();
        let ttl = backend.pttl(&key::tombstone(&prefix, &known)).await;
        assert!(ttl > 10_000 && ttl <= 40_000, "tombstone PTTL {ttl}");
        sessions.delete(&known).await.unwrap();
        let again = backend.pttl(&key::tombstone(&prefix, &known)).await;
        assert!(again > 10_000, "a second DELETE shortened it: {again}");
        sessions.delete(&unknown).await.unwrap();
        let ttl = backend.pttl(&key::tombstone(&prefix, &unknown)).await;
        assert!(ttl > 5_000 && ttl <= 10_000, "tombstone PTTL {ttl}");
        backend.clean(&prefix).await;
    }
}

/// Ids that cannot be this crate's (rmcp passes on any `Mcp-Session-Id`)
/// never reach Redis or the memory kept for an outage: a load answers
/// "no such session" without asking Redis (so even while it is away), a
/// DELETE keeps and sends nothing, a store is refused.
#[tokio::test]
async fn ids_no_session_can_have_never_reach_the_store() {
    let mut redis = PrivateRedis::start();
    let prefix = unique_prefix("bad_session_ids");
    let stores = private_stores(&redis, &prefix).await;
    let sessions = stores.session_store();
    let bad = [
        "x".repeat(10 * 1024),
        "sess-1".to_owned(),
        session_id(3).to_uppercase(),
        format!("{}:common", session_id(3)),
    ];
    for id in &bad {
        assert!(
            sessions.store(id, &session_state()).await.is_err(),
            "{id:.40}"
        );
    }
    redis.stop();
    for id in &bad {
        assert!(
            sessions.load(id).await.unwrap().is_none(),
            "{id:.40}: load asked the Redis that is away"
        );
        sessions.delete(id).await.unwrap();
    }
    // A well-shaped id's DELETE waits for Redis (the control).
    sessions.delete(&session_id(4)).await.unwrap();
    redis.restart();
    let url = redis.url();
    let control = key::tombstone(&prefix, &session_id(4));
    assert!(
        eventually_async(Duration::from_secs(5), || exists(&url, &control)).await,
        "the queued DELETE was not sent"
    );
    assert_eq!(
        crate::common::redis_server::keys(&url, &prefix).await,
        vec![control],
        "only the well-shaped id's tombstone"
    );
}

crate::redis_test! {
    /// The listener and the upkeep end when the last clone of the stores is
    /// dropped.
    #[tokio::test]
    async fn the_background_tasks_end_with_the_stores(backend) {
        let metrics = tokio::runtime::Handle::current().metrics();
        let before = metrics.num_alive_tasks();
        let stores = stores(backend, &unique_prefix("tasks"), None).await;
        let clone = stores.clone();
        // The listener and the upkeep, and redis-rs's connection tasks.
        assert!(metrics.num_alive_tasks() >= before + 2);
        drop(stores);
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(
            metrics.num_alive_tasks() >= before + 2,
            "a clone keeps them"
        );
        drop(clone);
        assert!(
            eventually_async(Duration::from_secs(2), || async {
                metrics.num_alive_tasks() == before
            })
            .await,
            "{} tasks left",
            metrics.num_alive_tasks() - before
        );
    }
}

/// An error Redis answers with (out of memory under `noeviction`) is not
/// an outage: the calls after it still try Redis (reads work), instead of
/// failing at once for a second.
#[tokio::test]
async fn an_error_redis_answers_with_does_not_short_circuit_other_calls() {
    let redis = PrivateRedis::start_with(&["--maxmemory-policy", "noeviction"]);
    let prefix = unique_prefix("oom");
    let stores = private_stores(&redis, &prefix).await;
    let events = stores.event_store();
    let sessions = stores.session_store();
    let kept = crate::helpers::store(&events, "s:kept", &message(1)).await;
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory")
        .arg("1")
        .query_async(&mut crate::common::redis_server::connection(&redis.url()).await)
        .await
        .unwrap();
    let refused = events
        .store_event("s:full", &message(2))
        .await
        .expect_err("an append to a full Redis");
    assert!(
        matches!(store_error(&refused), StoreError::Redis(_)),
        "{refused}"
    );
    let replayed = crate::helpers::replay(&events, &kept).await;
    assert!(
        replayed.is_ok(),
        "a read right after the refused write: {:?}",
        replayed.err()
    );
    assert!(
        sessions.load(&session_id(9)).await.is_ok(),
        "a load right after the refused write"
    );
}

/// An instance that could not see Redis for longer than a tombstone lives
/// (four TTLs) does not write its sessions back: a DELETE may have come
/// meanwhile and its tombstone expired. The copy goes on there only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_unconfirmed_longer_than_a_tombstone_lives_is_not_written_back() {
    let mut redis = PrivateRedis::start();
    let prefix = unique_prefix("long_cut_off");
    let stores = RedisStores::builder(redis.url())
        .prefix(prefix.as_str())
        .ttl(Duration::from_millis(200))
        .upkeep_interval(Duration::from_millis(50))
        .connect()
        .await
        .unwrap();
    let server = instance(&stores, 8).await;
    let client = server.client();
    let session = client.initialize().await.unwrap();
    let url = redis.url();
    let key = key::session(&prefix, &session);
    assert!(exists(&url, &key).await);
    redis.stop();
    // Four TTLs are 800 ms.
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    redis.restart();
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(
        !exists(&url, &key).await,
        "written back after a cut-off longer than a tombstone lives"
    );
    let id = session.clone().into();
    assert!(
        server.manager.session(&id).is_some(),
        "the copy goes on on its instance"
    );
}

/// DELETEs queued during an outage are all sent once Redis is back, even
/// if one of them fails there (its session's stream index is not a sorted
/// set): that one stays queued, the others go.
#[tokio::test]
async fn one_failing_queued_delete_does_not_hold_back_the_others() {
    let mut redis = PrivateRedis::start_with_snapshots();
    let prefix = unique_prefix("queued_deletes");
    let stores = private_stores(&redis, &prefix).await;
    let sessions = stores.session_store();
    let (failing, fine) = (session_id(0xbad), session_id(0x600d));
    let url = redis.url();
    let mut connection = crate::common::redis_server::connection(&url).await;
    let _: () = redis::cmd("SET")
        .arg(key::index(&prefix, &failing))
        .arg("not a sorted set")
        .query_async(&mut connection)
        .await
        .unwrap();
    let _: () = redis::cmd("SAVE")
        .query_async(&mut connection)
        .await
        .unwrap();
    redis.stop();
    sessions.delete(&failing).await.unwrap();
    sessions.delete(&fine).await.unwrap();
    redis.restart();
    let tombstone = key::tombstone(&prefix, &fine);
    assert!(
        eventually_async(Duration::from_secs(5), || exists(&url, &tombstone)).await,
        "the DELETE queued after the failing one was never sent"
    );
}
