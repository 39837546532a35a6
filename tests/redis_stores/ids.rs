//! Ids, replays, and ids that name nothing kept: malformed, foreign or
//! of a dropped stream.

use std::time::Duration;

use crate::common::parse_event_id;
use crate::common::redis_backend::key;
use crate::common::redis_server::unique_prefix;
use crate::helpers::{json_of, message, now_ms, replay, retry, store, store_error, stores};
use mcp_bounded_session::StoreError;
use rmcp::transport::streamable_http_server::session::ServerSseMessage;

crate::redis_test! {
    /// Ids are `<stream>#<generation>-<sequence>` numbered 1, 2, 3, ... in one
    /// generation; a replay after event k gives exactly k+1.. in order, with
    /// their ids, messages and retries; streams do not mix.
    #[tokio::test]
    async fn events_round_trip_with_their_ids_in_order(backend) {
        let prefix = unique_prefix("round_trip");
        let stores = stores(backend, &prefix, None).await;
        let events = stores.event_store();

        let mut message_and_retry = message(3);
        message_and_retry.retry = Some(Duration::from_millis(1500));
        let sent: Vec<ServerSseMessage> = vec![
            message(1),
            retry(3000),
            message_and_retry,
            ServerSseMessage::default(), // neither message nor retry
            message(5),
            message(6),
        ];
        for stream in [
            "sess-a:common",
            "0b7e1c2a-5f7e-4c1b-9d7e-1c2a5f7e4c1b",
            "odd#name-1:x",
        ] {
            let before = now_ms();
            let mut ids = Vec::new();
            for event in &sent {
                ids.push(store(&events, stream, event).await);
                // Another stream's events in between must not show up.
                store(&events, "sess-other:common", &message(99)).await;
            }
            let generation = parse_event_id(&ids[0]).1;
            let generation_ms = generation / 1_000;
            assert!(
                generation_ms + 60_000 > before && generation_ms < now_ms() + 60_000,
                "the generation is the Redis time of the first event (µs): {generation}"
            );
            for (k, id) in ids.iter().enumerate() {
                assert_eq!(
                    parse_event_id(id),
                    (stream, generation, k as u64 + 1),
                    "id {id}"
                );
                assert_eq!(id, &format!("{stream}#{generation}-{}", k + 1));
            }
            for k in 0..ids.len() {
                let replayed = replay(&events, &ids[k])
                    .await
                    .unwrap_or_else(|error| panic!("replay after {} failed: {error}", ids[k]));
                let got: Vec<_> = replayed
                    .iter()
                    .map(|e| (e.event_id.clone(), json_of(e), e.retry))
                    .collect();
                let expected: Vec<_> = (k + 1..sent.len())
                    .map(|j| (Some(ids[j].clone()), json_of(&sent[j]), sent[j].retry))
                    .collect();
                assert_eq!(got, expected, "replay after event {} of {stream}", k + 1);
            }
        }

        // Stream names no id could carry are refused.
        for name in [String::new(), "x".repeat(129)] {
            let error = events
                .store_event(&name, &message(1))
                .await
                .expect_err("an invalid stream name");
            assert!(
                matches!(store_error(&error), StoreError::InvalidStreamName { length } if *length == name.len()),
                "{error:?}"
            );
        }
        drop(stores);
        backend.clean(&prefix).await;
    }
}

crate::redis_test! {
    /// Any id that is not exactly one of a kept stream's is an error: never a
    /// panic, never events of another stream or generation.
    #[tokio::test]
    async fn bad_ids_replay_nothing(backend) {
        let prefix = unique_prefix("bad_ids");
        let stores = stores(backend, &prefix, None).await;
        let events = stores.event_store();
        let stream = "sess-bad:common";
        let mut ids = Vec::new();
        for n in 1..=3 {
            ids.push(store(&events, stream, &message(n)).await);
        }
        // Another stream with events, whose ids are close to these.
        let other = store(&events, "sess-other:common", &message(100)).await;
        let (_, generation, _) = parse_event_id(&ids[0]);
        let (_, other_generation, _) = parse_event_id(&other);

        let malformed = [
            String::new(),
            "garbage".to_owned(),
            "s#1-0".to_owned(),
            "s#01-1".to_owned(),
            "s#1-01".to_owned(),
            format!("{stream}#{generation}-0"),
            format!("{stream}#{generation}-1-2"),
            format!("{stream}#{generation}"),
            format!("{stream}#-{generation}-1"),
            format!("{stream}#{generation}-18446744073709551616"),
            format!("#{generation}-1"),
            "a".repeat(10 * 1024),
            format!("{}#1-1", "a".repeat(10 * 1024)),
            format!("{stream}#{generation}-1").repeat(300),
        ];
        for id in &malformed {
            let error = replay(&events, id).await.expect_err("malformed");
            assert!(
                matches!(store_error(&error), StoreError::MalformedEventId),
                "{:.60}: {error:?}",
                id
            );
        }

        let unknown = [
            // A stream that never existed.
            "s#1-1".to_owned(),
            format!("sess-never:common#{generation}-1"),
            // Ahead of the last event.
            format!("{stream}#{generation}-4"),
            format!("{stream}#{generation}-18446744073709551615"),
            // Another generation of this stream.
            format!("{stream}#{}-1", generation - 1),
            format!("{stream}#{}-2", generation + 1),
            format!("{stream}#0-1"),
            // Another stream's generation on this stream's name.
            format!("{stream}#{other_generation}-1"),
        ];
        for id in &unknown {
            let result = replay(&events, id).await;
            match &result {
                Err(error) => assert!(
                    matches!(
                        store_error(error),
                        StoreError::UnknownEvent(_) | StoreError::EventTrimmed { .. }
                    ),
                    "{id}: {error:?}"
                ),
                Ok(replayed) => panic!(
                    "{id} replayed {} events: {:?}",
                    replayed.len(),
                    replayed
                        .iter()
                        .map(|e| e.event_id.clone())
                        .collect::<Vec<_>>()
                ),
            }
        }

        // An earlier generation: the stream is dropped (as an expiry or a
        // DELETE does) and started again; its old ids must not point into the
        // new events.
        backend.del(&key::stream(&prefix, stream)).await;
        tokio::time::sleep(Duration::from_millis(3)).await;
        let mut new_ids = Vec::new();
        for n in 11..=15 {
            new_ids.push(store(&events, stream, &message(n)).await);
        }
        let (_, new_generation, first_sequence) = parse_event_id(&new_ids[0]);
        assert!(new_generation > generation, "a new generation");
        assert_eq!(first_sequence, 1);
        for old in &ids {
            match replay(&events, old).await {
                Err(error) => assert!(
                    matches!(store_error(&error), StoreError::UnknownEvent(_)),
                    "{old}: {error:?}"
                ),
                Ok(replayed) => panic!("old id {old} replayed {} new events", replayed.len()),
            }
        }
        // The new ids work (the errors above are not a broken stream).
        assert_eq!(replay(&events, &new_ids[0]).await.unwrap().len(), 4);
        drop(stores);
        backend.clean(&prefix).await;
    }
}

crate::redis_test! {
    /// A stream dropped (as the DELETE script drops a session's streams) and
    /// started again at once gets a new generation too: an id of the dropped
    /// stream never replays the new one's events. The generation is the Redis
    /// time in ms of the first event, so a restart within the same millisecond
    /// reuses it; this tries up to 300 times.
    #[tokio::test]
    async fn a_stream_restarted_within_a_millisecond_does_not_reuse_old_ids(backend) {
        let prefix = unique_prefix("same_ms");
        let stores = stores(backend, &prefix, None).await;
        let events = stores.event_store();
        let mut leaked = None;
        for round in 0..300 {
            let stream = format!("sess-{round}:common");
            let old = store(&events, &stream, &message(1)).await;
            store(&events, &stream, &message(2)).await;
            backend.del(&key::stream(&prefix, &stream)).await;
            let new = store(&events, &stream, &message(3)).await;
            store(&events, &stream, &message(4)).await;
            if let Ok(replayed) = replay(&events, &old).await {
                leaked = Some((round, old, new, replayed.len()));
                break;
            }
        }
        drop(stores);
        backend.clean(&prefix).await;
        if let Some((round, old, new, count)) = leaked {
            panic!(
                "round {round}: the dropped stream's id {old} replayed {count} event(s) of the \
                 restarted stream (whose first id is {new})"
            );
        }
    }
}
