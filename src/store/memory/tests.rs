use super::*;
use futures::StreamExt;

fn limited(max_events: usize, stream_capacity: usize, ttl_secs: u64) -> MemoryEventStore {
    let builder = MemoryEventStore::builder().max_events(max_events);
    let builder = builder.stream_capacity(stream_capacity);
    builder.ttl(Duration::from_secs(ttl_secs)).build()
}

/// Stores events told apart by their `retry` (`n` milliseconds).
async fn put(store: &MemoryEventStore, stream: &str, ns: &[u64]) -> Vec<String> {
    let mut ids = Vec::new();
    for &n in ns {
        let mut event = ServerSseMessage::default();
        event.retry = Some(Duration::from_millis(n));
        ids.push(store.store_event(stream, &event).await.unwrap());
    }
    ids
}

/// The `retry` of each event replayed after `id`, once checked that each
/// carries the id after the one before (so the one it was issued with).
async fn replay(store: &MemoryEventStore, id: &str) -> Result<Vec<u64>, StoreError> {
    let events = match store.replay_events_after(id).await {
        Ok(events) => events.collect::<Vec<_>>().await,
        Err(error) => return Err(*error.downcast::<StoreError>().unwrap()),
    };
    let mut last = StoredEventId::parse(id).unwrap();
    let mut found = Vec::new();
    for event in &events {
        let own = StoredEventId::parse(event.event_id.as_deref().unwrap()).unwrap();
        last.sequence += 1;
        assert_eq!(own, last);
        found.push(event.retry.unwrap().as_millis() as u64);
    }
    Ok(found)
}

fn unknown(result: Result<Vec<u64>, StoreError>) -> bool {
    matches!(result, Err(StoreError::UnknownEvent(_)))
}

#[tokio::test]
async fn a_stream_keeps_its_most_recent_events() {
    let store = limited(100, 3, 60);
    let ids = put(&store, "a", &[1, 2, 3, 4, 5]).await;
    assert_eq!(store.event_count(), 3);
    match replay(&store, &ids[0]).await {
        Err(StoreError::EventTrimmed { id, oldest_kept: 3 }) => assert_eq!(id, ids[0]),
        other => panic!("not trimmed: {other:?}"),
    }
    // The id right before the oldest kept: nothing is missing after it.
    assert_eq!(replay(&store, &ids[1]).await.unwrap(), [3, 4, 5]);
    // A stream capacity above the total is lowered to it.
    let small = limited(2, 5, 60);
    let ids = put(&small, "a", &[1, 2, 3, 4]).await;
    assert_eq!((small.event_count(), small.stream_count()), (2, 1));
    assert_eq!(replay(&small, &ids[1]).await.unwrap(), [3, 4]);
}

#[tokio::test]
async fn room_is_made_from_the_least_recently_used_stream() {
    let store = limited(4, 2, 60);
    let a = put(&store, "a", &[1, 2]).await;
    let b = put(&store, "b", &[3, 4]).await;
    // A replay is a use: `b` is now the stalest.
    assert_eq!(replay(&store, &a[0]).await.unwrap(), [2]);
    put(&store, "c", &[5]).await;
    assert_eq!((store.event_count(), store.stream_count()), (3, 2));
    assert!(unknown(replay(&store, &b[0]).await));
    // A write is a use too: `c` goes next, not `a`.
    put(&store, "a", &[6]).await;
    put(&store, "d", &[7, 8]).await;
    assert_eq!(replay(&store, &a[0]).await.unwrap(), [2, 6]);
    assert_eq!((store.event_count(), store.stream_count()), (4, 2));
}

#[tokio::test(start_paused = true)]
async fn a_stream_unused_for_the_ttl_is_dropped_and_restarts_anew() {
    let (store, second) = (limited(100, 10, 10), Duration::from_secs(1));
    let a = put(&store, "a", &[1, 2]).await;
    let b = put(&store, "b", &[3]).await;
    tokio::time::advance(6 * second).await;
    assert_eq!(replay(&store, &a[0]).await.unwrap(), [2]);
    tokio::time::advance(4 * second).await;
    // `b` was last used exactly one ttl ago, `a` 4 seconds ago.
    assert_eq!((store.event_count(), store.stream_count()), (2, 1));
    assert!(unknown(replay(&store, &b[0]).await));
    tokio::time::advance(6 * second - Duration::from_millis(1)).await;
    assert_eq!(replay(&store, &a[0]).await.unwrap(), [2]);
    tokio::time::advance(10 * second).await;
    assert_eq!((store.event_count(), store.stream_count()), (0, 0));
    // Started again: a new generation, and the old ids name nothing.
    let again = put(&store, "a", &[4, 5]).await;
    let old = StoredEventId::parse(&a[0]).unwrap();
    let new = StoredEventId::parse(&again[0]).unwrap();
    assert_eq!(new.sequence, 1);
    assert_ne!(old.generation, new.generation);
    assert!(unknown(replay(&store, &a[0]).await));
    assert_eq!(replay(&store, &again[0]).await.unwrap(), [5]);
}

#[tokio::test]
async fn bad_ids_and_names_are_errors_never_panics() {
    let store = MemoryEventStore::default();
    let ids = put(&store, "a", &[1]).await;
    for malformed in ["", "garbage", "a#1-0", "a#x-1", "#1-1", "a#1-1-1"] {
        let error = replay(&store, malformed).await;
        assert!(matches!(error, Err(StoreError::MalformedEventId)));
    }
    let id = StoredEventId::parse(&ids[0]).unwrap();
    let (generation, sequence) = (id.generation + 1, u64::MAX);
    let others = [
        StoredEventId { generation, ..id },
        StoredEventId { sequence: 2, ..id },
        StoredEventId { sequence, ..id },
        StoredEventId { stream: "b", ..id },
    ];
    for other in others {
        assert!(unknown(replay(&store, &other.to_string()).await), "{other}");
    }
    for name in [String::new(), "x".repeat(129)] {
        let error = store.store_event(&name, &ServerSseMessage::default()).await;
        let error = *error.unwrap_err().downcast().unwrap();
        assert!(matches!(error, StoreError::InvalidStreamName { .. }));
    }
    assert_eq!((store.event_count(), store.stream_count()), (1, 1));
}

#[tokio::test]
async fn a_replay_yields_exactly_the_later_events_of_the_ids_stream() {
    let store = MemoryEventStore::default();
    // `a#1-1`'s ids look like they extend `a`'s.
    let streams = [("a", 0), ("b", 10), ("a#1-1", 20)];
    let mut ids = Vec::new();
    for round in 0..3 {
        for (stream, base) in streams {
            ids.extend(put(&store, stream, &[base + round]).await);
        }
    }
    let first = StoredEventId::parse(&ids[0]).unwrap();
    assert_eq!((first.stream, first.sequence), ("a", 1));
    for ((_, base), first) in streams.into_iter().zip(&ids) {
        assert_eq!(replay(&store, first).await.unwrap(), [base + 1, base + 2]);
    }
    assert_eq!(replay(&store, &ids[8]).await.unwrap(), Vec::<u64>::new());
    assert_eq!((store.event_count(), store.stream_count()), (9, 3));
}

#[tokio::test]
async fn the_bounds_hold_under_churn() {
    let store = limited(20, 7, 60);
    // Every event stored: (its id, its stream, its `n`), oldest first.
    let (mut seed, mut issued) = (12_345_u64, Vec::<(String, String, u64)>::new());
    let mut complete_replays = 0;
    for n in 0..2_000 {
        seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
        if seed >> 63 == 0 || issued.is_empty() {
            let stream = format!("s{}", (seed >> 33) % 9);
            for id in put(&store, &stream, &[n]).await {
                issued.push((id, stream.clone(), n));
            }
        } else {
            // Among the recent ids. A replay is all the later events of the
            // id's stream, or refused because some of them (or the stream)
            // were dropped for the bounds; never a partial one.
            let at = issued.len() - 1 - (seed >> 40) as usize % issued.len().min(40);
            let (id, stream, _) = &issued[at];
            let later: Vec<u64> = issued[at + 1..]
                .iter()
                .filter(|(_, s, _)| s == stream)
                .map(|&(_, _, n)| n)
                .collect();
            match replay(&store, id).await {
                Ok(replayed) => {
                    assert_eq!(replayed, later, "replay after {id}");
                    complete_replays += 1;
                }
                Err(StoreError::UnknownEvent(_) | StoreError::EventTrimmed { .. }) => {}
                Err(error) => panic!("replay after {id}: {error}"),
            }
        }
        let state = store.state.lock();
        let lengths = state.streams.values().map(|s| s.events.len());
        assert!(lengths.clone().all(|n| (1..=7).contains(&n)));
        assert_eq!(lengths.sum::<usize>(), state.events);
        assert!(state.events <= 20);
    }
    assert!(
        complete_replays > 100,
        "only {complete_replays} replays made"
    );
}

#[test]
fn zero_limits_panic() {
    use std::panic::catch_unwind;
    let builder = MemoryEventStore::builder;
    assert!(catch_unwind(|| builder().max_events(0)).is_err());
    assert!(catch_unwind(|| builder().stream_capacity(0)).is_err());
    assert!(catch_unwind(|| builder().ttl(Duration::ZERO)).is_err());
}
