//! Writes Redis lost or reported lost: a restart from an older snapshot
//! never re-issues an id, and an append that timed out but was stored
//! anyway is never replayed as if new.

use std::time::Duration;

use crate::common::parse_event_id;
use crate::common::redis_server::{PrivateRedis, connection, unique_prefix};
use crate::helpers::{message, replay, store, store_error};
use mcp_bounded_session::{RedisStores, StoreError};

async fn private_stores(redis: &PrivateRedis, prefix: &str) -> RedisStores {
    RedisStores::builder(redis.url())
        .prefix(prefix)
        .ttl(Duration::from_secs(30))
        .upkeep_interval(Duration::from_millis(100))
        .connect()
        .await
        .unwrap()
}

/// Events 1-3 are in a snapshot, 4-5 only in memory; Redis is killed and
/// restarts from the snapshot. The next event must not get id 4 again
/// (the client has it), and no replay may claim to be complete across the
/// lost events.
#[tokio::test]
async fn a_restart_from_an_older_snapshot_never_reissues_an_id() {
    let mut redis = PrivateRedis::start_with_snapshots();
    let prefix = unique_prefix("snapshot");
    let stores = private_stores(&redis, &prefix).await;
    let events = stores.event_store();
    let stream = "0b7e1c2a-5f7e-4c1b-9d7e-1c2a5f7e4c1b:common";
    let mut sent = Vec::new();
    for n in 1..=3 {
        sent.push(store(&events, stream, &message(n)).await);
    }
    let url = redis.url();
    let _: () = redis::cmd("SAVE")
        .query_async(&mut connection(&url).await)
        .await
        .unwrap();
    for n in 4..=5 {
        sent.push(store(&events, stream, &message(n)).await);
    }
    redis.stop();
    redis.restart();
    // The first call after the restart meets the dropped connection; the
    // short circuit then waits a second.
    let _ = events.store_event(stream, &message(0)).await;
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let next = store(&events, stream, &message(6)).await;
    assert!(
        !sent.contains(&next),
        "event 6 got the id {next}, already sent for another event: {sent:?}"
    );
    let (_, generation, _) = parse_event_id(&sent[0]);
    assert_ne!(
        parse_event_id(&next).1,
        generation,
        "continued the old generation: {next}"
    );
    // Every id of before the restart resumes nothing (4 and 5 are lost,
    // so a replay from 1, 2 or 3 could not be complete).
    for old in &sent {
        let error = replay(&events, old).await.expect_err(old);
        assert!(
            matches!(store_error(&error), StoreError::UnknownEvent(_)),
            "{old}: {error:?}"
        );
    }
}

/// Redis stalls (`DEBUG SLEEP`) past the store's response timeout while it
/// holds an append: the store reports a failure (the session sends the
/// event without an id), then Redis runs the append anyway. A replay from
/// before it must not hand the client that event again, nor skip it
/// silently: it is refused. A replay from after the next event works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_append_reported_failed_but_stored_is_never_replayed_as_new() {
    let redis = PrivateRedis::start_with_snapshots();
    let prefix = unique_prefix("late_append");
    let stores = private_stores(&redis, &prefix).await;
    let events = stores.event_store();
    let stream = "0b7e1c2a-5f7e-4c1b-9d7e-1c2a5f7e4c1b:req";
    let first = store(&events, stream, &message(1)).await;
    let url = redis.url();
    let sleeper = tokio::spawn(async move {
        let _: redis::RedisResult<()> = redis::cmd("DEBUG")
            .arg("SLEEP")
            .arg("1.3")
            .query_async(&mut connection(&url).await)
            .await;
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let failed = events.store_event(stream, &message(2)).await;
    assert!(failed.is_err(), "the stalled append reported {failed:?}");
    sleeper.await.unwrap();
    // Past the short circuit.
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let key = crate::common::redis_backend::key::stream(&prefix, stream);
    let kept: Vec<String> = redis::cmd("LRANGE")
        .arg(&key)
        .arg(0)
        .arg(-1)
        .query_async(&mut connection(&redis.url()).await)
        .await
        .unwrap();
    assert!(
        kept.iter().any(|entry| entry.contains("demo://test/2")),
        "the stalled append was not run after all (the test proves nothing): {kept:?}"
    );
    let third = store(&events, stream, &message(3)).await;
    match replay(&events, &first).await {
        Err(error) => assert!(
            matches!(store_error(&error), StoreError::ReplayGap(_)),
            "{error:?}"
        ),
        Ok(replayed) => panic!(
            "a replay from before the failed append gave {:?}",
            replayed
                .iter()
                .map(|e| e.event_id.clone())
                .collect::<Vec<_>>()
        ),
    }
    store(&events, stream, &message(4)).await;
    let after = replay(&events, &third).await.unwrap();
    assert_eq!(after.len(), 1, "the replay after the gap works");
}

/// The same with no event after the failed one (the answer of a request,
/// the last notification): a replay on this instance settles the gap
/// before it reads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_last_append_is_not_replayed_either() {
    let redis = PrivateRedis::start_with_snapshots();
    let prefix = unique_prefix("late_last_append");
    let stores = private_stores(&redis, &prefix).await;
    let events = stores.event_store();
    let stream = "0b7e1c2a-5f7e-4c1b-9d7e-1c2a5f7e4c1b:last";
    let first = store(&events, stream, &message(1)).await;
    let url = redis.url();
    let sleeper = tokio::spawn(async move {
        let _: redis::RedisResult<()> = redis::cmd("DEBUG")
            .arg("SLEEP")
            .arg("1.3")
            .query_async(&mut connection(&url).await)
            .await;
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(events.store_event(stream, &message(2)).await.is_err());
    sleeper.await.unwrap();
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    match replay(&events, &first).await {
        Err(error) => assert!(
            matches!(store_error(&error), StoreError::ReplayGap(_)),
            "{error:?}"
        ),
        Ok(replayed) => panic!(
            "a replay from before the failed append gave {} event(s)",
            replayed.len()
        ),
    }
}
