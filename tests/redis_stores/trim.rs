//! Streams trimmed to the replay capacity.

use crate::common::redis_backend::key;
use crate::common::redis_server::unique_prefix;
use crate::helpers::{json_of, message, replay, store, store_error, stores, stream_len};
use mcp_bounded_session::{BoundedSessionManager, StoreError};
use rmcp::transport::streamable_http_server::session::ServerSseMessage;

crate::redis_test! {
    /// With the manager's replay capacity 4 (attach sets it), a stream never
    /// holds more than 4 entries; a replay whose following events are all kept
    /// is complete; one whose following events were trimmed is
    /// `EventTrimmed`, never a stream with a hole.
    #[tokio::test]
    async fn streams_are_trimmed_to_the_replay_capacity(backend) {
        let prefix = unique_prefix("trim");
        let stores = stores(backend, &prefix, None).await;
        let _manager = BoundedSessionManager::builder(8)
            .replay_capacity(4)
            .redis(&stores)
            .build();
        let events = stores.event_store();
        let stream = "sess-trim:common";
        let key = key::stream(&prefix, stream);

        let mut ids = Vec::new();
        for n in 1..=10 {
            ids.push(store(&events, stream, &message(n)).await);
            assert_eq!(
                stream_len(backend, &key).await,
                n.min(4) as i64,
                "kept events after event {n}"
            );
        }
        let numbers = |replayed: &[ServerSseMessage]| -> Vec<String> {
            replayed
                .iter()
                .map(|e| {
                    json_of(e).unwrap()["params"]["uri"]
                        .as_str()
                        .unwrap()
                        .to_owned()
                })
                .collect()
        };
        let uris = |range: std::ops::RangeInclusive<usize>| -> Vec<String> {
            range.map(|n| format!("demo://test/{n}")).collect()
        };

        // After the 7th (the oldest kept): 8..10.
        let replayed = replay(&events, &ids[6])
            .await
            .expect("replay after the 7th");
        assert_eq!(numbers(&replayed), uris(8..=10));
        assert_eq!(
            replayed
                .iter()
                .map(|e| e.event_id.clone().unwrap())
                .collect::<Vec<_>>(),
            ids[7..].to_vec()
        );

        // After the 2nd: 3..6 are gone, so nothing but an error.
        let error = replay(&events, &ids[1])
            .await
            .expect_err("3..6 are trimmed");
        assert!(
            matches!(
                store_error(&error),
                StoreError::EventTrimmed { oldest_kept: 7, .. }
            ),
            "{error:?}"
        );

        // After the 6th: 7..10 are all kept, so the replay is complete (as
        // MemoryEventStore does: "the id right before the oldest kept: nothing
        // is missing after it").
        let after_sixth = replay(&events, &ids[5]).await;
        drop(stores);
        backend.clean(&prefix).await;
        match &after_sixth {
            Ok(replayed) => assert_eq!(numbers(replayed), uris(7..=10)),
            Err(error) => panic!(
                "replay after the 6th event failed although events 7..10 are all kept: {:?}",
                store_error(error)
            ),
        }
    }
}

crate::redis_test! {
    /// Without a manager, a stream keeps 64 events.
    #[tokio::test]
    async fn streams_keep_64_events_by_default(backend) {
        let prefix = unique_prefix("trim_default");
        let stores = stores(backend, &prefix, None).await;
        let events = stores.event_store();
        let stream = "sess-default:common";
        let key = key::stream(&prefix, stream);
        let mut ids = Vec::new();
        for n in 1..=70 {
            ids.push(store(&events, stream, &message(n)).await);
            assert_eq!(
                stream_len(backend, &key).await,
                n.min(64) as i64,
                "kept events after {n}"
            );
        }
        // 7..70 kept: a replay after the 7th gives 8..70, after the 5th fails.
        assert_eq!(replay(&events, &ids[6]).await.unwrap().len(), 63);
        let error = replay(&events, &ids[4]).await.expect_err("6 is trimmed");
        assert!(
            matches!(
                store_error(&error),
                StoreError::EventTrimmed { oldest_kept: 7, .. }
            ),
            "{error:?}"
        );
        drop(stores);
        backend.clean(&prefix).await;
    }
}

crate::redis_test! {
    /// A session's stream index is bounded by count: beyond 128 streams, the
    /// least recently used go, events and all; the standalone stream, however
    /// quiet, is never one of them.
    #[tokio::test]
    async fn a_sessions_stream_index_keeps_128_streams_its_standalone_one_among_them(backend) {
        let prefix = unique_prefix("index_bound");
        let stores = crate::helpers::stores(backend, &prefix, None).await;
        let events = stores.event_store();
        let session = crate::helpers::session_id(5);
        let common = format!("{session}:common");
        crate::helpers::store(&events, &common, &message(0)).await;
        for n in 0..140 {
            crate::helpers::store(&events, &format!("{session}:r{n}"), &message(n)).await;
        }
        let indexed: i64 = backend
            .query(redis::cmd("ZCARD").arg(key::index(&prefix, &session)))
            .await;
        let left: Vec<String> = backend
            .stored_keys(&prefix)
            .await
            .into_iter()
            .filter(|k| k.starts_with(&key::streams_of(&prefix, &session)))
            .collect();
        drop(stores);
        backend.clean(&prefix).await;
        assert_eq!(indexed, 128, "the index holds 128 streams");
        assert_eq!(
            left.len(),
            128,
            "the streams dropped from the index are gone"
        );
        assert!(left.contains(&key::stream(&prefix, &common)));
        for n in 0..13 {
            assert!(
                !left.contains(&key::stream(&prefix, &format!("{session}:r{n}"))),
                "r{n} kept"
            );
        }
    }
}
