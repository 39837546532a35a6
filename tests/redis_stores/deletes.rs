//! `SessionStore::delete`: every key of the session, and only its own.

use std::time::Duration;

use crate::common::redis_server::{SHARED_URL, clean, connection, keys, unique_prefix};
use crate::helpers::{message, pttl, replay, session_id, session_state, store, stores};
use futures::StreamExt;

/// `SessionStore::delete` removes the session's value, streams and stream
/// index, leaves a tombstone with a TTL, publishes the id, and touches no
/// other session.
#[tokio::test]
async fn delete_removes_every_key_of_the_session() {
    let prefix = unique_prefix("delete");
    let stores = stores(SHARED_URL, &prefix, None).await;
    let sessions = stores.session_store();
    let events = stores.event_store();
    let (id, other) = (session_id(0xde1), session_id(0xeee));
    // Differs from `id` in its last digit only.
    let lookalike = session_id(0xde2);
    let (id, other, lookalike) = (id.as_str(), other.as_str(), lookalike.as_str());
    for session in [id, other, lookalike] {
        sessions.store(session, &session_state()).await.unwrap();
        store(&events, &format!("{session}:common"), &message(1)).await;
        store(&events, &format!("{session}:req-7"), &message(2)).await;
    }
    let kept_id = store(&events, &format!("{other}:common"), &message(3)).await;
    let before = keys(SHARED_URL, &prefix).await;
    assert_eq!(before.len(), 12, "{before:?}");

    let client = redis::Client::open(SHARED_URL).unwrap();
    let mut pubsub = client.get_async_pubsub().await.unwrap();
    pubsub.subscribe(format!("{prefix}deleted")).await.unwrap();
    let mut published = pubsub.into_on_message();

    sessions.delete(id).await.unwrap();

    let tombstone = format!("{prefix}deleted:{id}");
    let after = keys(SHARED_URL, &prefix).await;
    let expected: Vec<String> = before
        .iter()
        .filter(|key| !key.ends_with(&format!(":{id}")) && !key.contains(&format!(":{id}:")))
        .cloned()
        .chain([tombstone.clone()])
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    assert_eq!(after, expected);
    let left = pttl(SHARED_URL, &tombstone).await;
    assert!(left > 0, "the tombstone has a TTL: {left}");
    assert!(sessions.load(id).await.unwrap().is_none());

    let message = tokio::time::timeout(Duration::from_secs(2), published.next())
        .await
        .expect("the DELETE was published")
        .unwrap();
    assert_eq!(message.get_payload::<String>().unwrap(), id);

    // The other sessions are intact.
    assert!(sessions.load(other).await.unwrap().is_some());
    assert!(sessions.load(lookalike).await.unwrap().is_some());
    let first_of_other = format!("{}1", &kept_id[..kept_id.len() - 1]);
    assert_eq!(replay(&events, &first_of_other).await.unwrap().len(), 1);
    drop(stores);
    clean(SHARED_URL, &prefix).await;
}

/// A session that lives longer than the TTL keeps writing to a stream
/// created at its start, and opens another stream later: a DELETE must
/// still remove both streams (the index must not lose a live stream).
#[tokio::test]
async fn delete_removes_streams_older_than_the_ttl() {
    let prefix = unique_prefix("delete_old");
    let stores = stores(SHARED_URL, &prefix, Some(Duration::from_millis(400))).await;
    let sessions = stores.session_store();
    let events = stores.event_store();
    let id = session_id(0x10);
    let id = id.as_str();
    let (early, late) = (format!("{id}:common"), format!("{id}:req-9"));
    sessions.store(id, &session_state()).await.unwrap();
    for n in 0..10 {
        // Writes (and the session's own upkeep, here by hand) keep the
        // early stream and the session alive for 1 s, over twice the TTL.
        store(&events, &early, &message(n)).await;
        sessions.store(id, &session_state()).await.unwrap();
        if n == 7 {
            store(&events, &late, &message(n)).await;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let index: Vec<String> = redis::cmd("ZRANGE")
        .arg(format!("{prefix}streams:{id}"))
        .arg(0)
        .arg(-1)
        .query_async(&mut connection(SHARED_URL).await)
        .await
        .unwrap();
    let live = keys(SHARED_URL, &prefix).await;
    assert!(
        live.contains(&format!("{prefix}stream:{early}"))
            && live.contains(&format!("{prefix}stream:{late}")),
        "{live:?}"
    );

    sessions.delete(id).await.unwrap();
    let after = keys(SHARED_URL, &prefix).await;
    drop(stores);
    clean(SHARED_URL, &prefix).await;
    assert_eq!(
        after,
        vec![format!("{prefix}deleted:{id}")],
        "keys left after the DELETE (the stream index held {index:?} before it)"
    );
}
