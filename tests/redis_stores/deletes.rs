//! `SessionStore::delete`: every key of the session, and only its own.

use std::time::Duration;

use crate::common::redis_backend::key;
use crate::common::redis_server::unique_prefix;
use crate::helpers::{message, replay, session_id, session_state, store, stores};
use futures::StreamExt;

crate::redis_test! {
    /// `SessionStore::delete` removes the session's value, streams and stream
    /// index, leaves a tombstone with a TTL, publishes the id, and touches no
    /// other session.
    #[tokio::test]
    async fn delete_removes_every_key_of_the_session(backend) {
        let prefix = unique_prefix("delete");
        let stores = stores(backend, &prefix, None).await;
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
        let before = backend.stored_keys(&prefix).await;
        assert_eq!(before.len(), 12, "{before:?}");

        // Any node carries a cluster's publications.
        let subscribe_url = match backend {
            crate::common::redis_backend::Backend::Single(url) => url.clone(),
            crate::common::redis_backend::Backend::Cluster(cluster) => cluster.urls()[2].clone(),
        };
        let client = redis::Client::open(subscribe_url).unwrap();
        let mut pubsub = client.get_async_pubsub().await.unwrap();
        pubsub.subscribe(format!("{prefix}deleted")).await.unwrap();
        let mut published = pubsub.into_on_message();

        sessions.delete(id).await.unwrap();

        let tombstone = key::tombstone(&prefix, id);
        let after = backend.stored_keys(&prefix).await;
        let expected: Vec<String> = before
            .iter()
            .filter(|k| key::tag(k) != Some(id))
            .cloned()
            .chain([tombstone.clone()])
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        assert_eq!(after, expected);
        let left = backend.pttl(&tombstone).await;
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
        backend.clean(&prefix).await;
    }
}

crate::redis_test! {
    /// A session that lives longer than the TTL keeps writing to a stream
    /// created at its start, and opens another stream later: a DELETE must
    /// still remove both streams (the index must not lose a live stream).
    #[tokio::test]
    async fn delete_removes_streams_older_than_the_ttl(backend) {
        let prefix = unique_prefix("delete_old");
        let stores = stores(backend, &prefix, Some(Duration::from_millis(400))).await;
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
        let index: Vec<String> = backend
            .query(
                redis::cmd("ZRANGE")
                    .arg(key::index(&prefix, id))
                    .arg(0)
                    .arg(-1),
            )
            .await;
        let live = backend.stored_keys(&prefix).await;
        assert!(
            live.contains(&key::stream(&prefix, &early))
                && live.contains(&key::stream(&prefix, &late)),
            "{live:?}"
        );

        sessions.delete(id).await.unwrap();
        let after = backend.stored_keys(&prefix).await;
        drop(stores);
        backend.clean(&prefix).await;
        assert_eq!(
            after,
            vec![key::tombstone(&prefix, id)],
            "keys left after the DELETE (the stream index held {index:?} before it)"
        );
    }
}
