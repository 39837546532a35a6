use std::sync::Arc;
use std::time::Duration;

use rmcp::transport::streamable_http_server::session::SessionId;
use rmcp::transport::streamable_http_server::session::store::{SessionState, SessionStore};

use super::{MemorySessionStore, NotParked, Parked};
use crate::clients::ClientKey;

fn id(n: u32) -> SessionId {
    format!("0b7e1c2a-5f7e-4c1b-9d7e-{n:012}").into()
}

/// The state rmcp stores for a minimal client's session.
pub(crate) fn state() -> SessionState {
    serde_json::from_value(serde_json::json!({
        "initialize_params": {
            "protocolVersion": "2025-11-25",
            "capabilities": {},
            "clientInfo": { "name": "test", "version": "1" }
        }
    }))
    .unwrap()
}

/// A live copy (`generation`) of `n` whose state rmcp stored.
async fn live(store: &MemorySessionStore, n: u32, generation: u64) {
    store.expect(&id(n), generation, ClientKey::anonymous(), None);
    store.store(&id(n), &state()).await.unwrap();
}

fn park(store: &MemorySessionStore, n: u32, generation: u64) -> Parked {
    store.inner.closed(&id(n), generation, true, None)
}

#[tokio::test]
async fn parking_beyond_the_bound_drops_the_least_recently_parked() {
    let store = MemorySessionStore::builder().max_parked(3).build();
    for n in 0..6 {
        live(&store, n, 1).await;
        assert_eq!(park(&store, n, 1), Parked::Yes);
        assert!(store.parked() <= 3);
    }
    assert_eq!(store.parked(), 3);
    for n in 0..3 {
        assert!(store.load(&id(n)).await.unwrap().is_none(), "{n} kept");
    }
    for n in 3..6 {
        assert!(store.load(&id(n)).await.unwrap().is_some(), "{n} dropped");
    }
    assert_eq!(store.inner.entries_len(), 3, "nothing else kept");
}

#[tokio::test]
async fn only_the_copy_an_entry_names_parks_or_ends_it() {
    let store = MemorySessionStore::default();
    live(&store, 1, 7).await;
    assert_eq!(park(&store, 1, 6), Parked::NotHere, "an earlier copy");
    assert_eq!(store.parked(), 0);
    assert_eq!(park(&store, 1, 7), Parked::Yes);
    // Restored as copy 8; copy 7's late end changes nothing.
    let pin = store.inner.pin(&id(1)).unwrap();
    assert!(pin.commit(8));
    assert_eq!(store.inner.closed(&id(1), 7, false, None), Parked::NotHere);
    assert!(
        store.load(&id(1)).await.unwrap().is_some(),
        "copy 8's entry"
    );
    // Copy 8 ends for good.
    assert_eq!(store.inner.closed(&id(1), 8, false, None), Parked::NotHere);
    assert!(store.load(&id(1)).await.unwrap().is_none());
    assert_eq!(store.inner.entries_len(), 0);
}

#[tokio::test]
async fn a_state_rmcp_never_stored_parks_nothing() {
    let store = MemorySessionStore::default();
    store.expect(&id(1), 1, ClientKey::anonymous(), None);
    assert_eq!(park(&store, 1, 1), Parked::NoState);
    assert_eq!(store.inner.entries_len(), 0);
    // A state for an id no live copy expects is not kept.
    store.store(&id(2), &state()).await.unwrap();
    assert_eq!(store.inner.entries_len(), 0);
}

#[tokio::test]
async fn a_pin_dropped_without_commit_parks_the_entry_again() {
    let store = MemorySessionStore::builder().max_parked(2).build();
    live(&store, 1, 1).await;
    park(&store, 1, 1);
    let pin = store.inner.pin(&id(1)).unwrap();
    assert_eq!(store.parked(), 0, "a pinned entry is out of the bound");
    assert_eq!(
        store.inner.pin(&id(1)).unwrap_err(),
        NotParked::Gone,
        "one restore at a time"
    );
    // Others parked meanwhile cannot drop it.
    for n in 2..5 {
        live(&store, n, 1).await;
        park(&store, n, 1);
    }
    assert!(store.load(&id(1)).await.unwrap().is_some());
    drop(pin);
    assert_eq!(store.parked(), 2, "parked again, within the bound");
    assert!(store.load(&id(1)).await.unwrap().is_some(), "as the newest");
}

#[tokio::test]
async fn a_live_entry_is_not_pinned_and_a_deleted_one_is_gone() {
    let store = MemorySessionStore::default();
    live(&store, 1, 1).await;
    assert_eq!(store.inner.pin(&id(1)).unwrap_err(), NotParked::Live);
    park(&store, 1, 1);
    store.delete(&id(1)).await.unwrap();
    assert_eq!(store.parked(), 0);
    assert_eq!(store.inner.pin(&id(1)).unwrap_err(), NotParked::Gone);
    assert!(store.load(&id(1)).await.unwrap().is_none());
}

#[tokio::test(start_paused = true)]
async fn a_parked_entry_ends_at_its_deadline() {
    let store = MemorySessionStore::builder()
        .ttl(Duration::from_secs(60))
        .build();
    // Its idle deadline first (10 s), then the TTL (60 s) for the other.
    live(&store, 1, 1).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    store.inner.closed(&id(1), 1, true, Some(deadline));
    live(&store, 2, 1).await;
    park(&store, 2, 1);
    tokio::time::advance(Duration::from_secs(11)).await;
    assert!(store.load(&id(1)).await.unwrap().is_none());
    assert_eq!(store.inner.pin(&id(1)).unwrap_err(), NotParked::Gone);
    assert!(store.load(&id(2)).await.unwrap().is_some());
    tokio::time::advance(Duration::from_secs(50)).await;
    assert!(store.load(&id(2)).await.unwrap().is_none());
    // Found past its deadline by the next park, from the front.
    live(&store, 3, 1).await;
    park(&store, 3, 1);
    assert_eq!(store.parked(), 1);
    assert_eq!(store.inner.entries_len(), 1);
}

#[tokio::test]
async fn a_copy_ending_past_its_deadline_is_forgotten() {
    let store = MemorySessionStore::default();
    live(&store, 1, 1).await;
    let past = tokio::time::Instant::now();
    assert_eq!(
        store.inner.closed(&id(1), 1, true, Some(past)),
        Parked::NotHere
    );
    assert_eq!(store.inner.entries_len(), 0);
}

#[test]
fn concurrent_parks_never_exceed_the_bound() {
    let store = Arc::new(MemorySessionStore::builder().max_parked(50).build());
    let threads: Vec<_> = (0..4u32)
        .map(|t| {
            let store = store.clone();
            std::thread::spawn(move || {
                for n in 0..500 {
                    let n = t * 1_000 + n;
                    store.inner.expect(&id(n), 1, ClientKey::anonymous(), None);
                    store.inner.fill(&id(n), b"{}");
                    store.inner.closed(&id(n), 1, true, None);
                    assert!(store.parked() <= 50);
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
    assert_eq!(store.parked(), 50);
    assert_eq!(store.inner.entries_len(), 50);
}

#[tokio::test]
async fn identical_states_share_one_allocation() {
    let store = MemorySessionStore::default();
    live(&store, 1, 1).await;
    live(&store, 2, 1).await;
    let (a, b) = (
        store.inner.state_of(&id(1)).unwrap(),
        store.inner.state_of(&id(2)).unwrap(),
    );
    assert!(Arc::ptr_eq(&a, &b));
}

#[tokio::test]
async fn restores_given_back_leave_the_order_bounded() {
    let store = MemorySessionStore::builder().max_parked(10).build();
    for n in 0..10 {
        live(&store, n, 1).await;
        park(&store, n, 1);
    }
    // Each pin leaves a stale slot, each give-back a new one.
    for _ in 0..1_000 {
        for n in 0..10 {
            drop(store.inner.pin(&id(n)).unwrap());
        }
        assert!(store.inner.order_len() <= 2 * 10 + 64 + 1);
    }
    assert_eq!(store.parked(), 10);
    for n in 0..10 {
        assert!(store.load(&id(n)).await.unwrap().is_some());
    }
}

/// A DELETE that removes a restoring entry (after the restore pinned it,
/// before it committed) wins: the commit says so, and nothing comes back.
#[tokio::test]
async fn a_commit_after_a_delete_says_the_session_is_gone() {
    let store = MemorySessionStore::default();
    live(&store, 1, 1).await;
    assert_eq!(park(&store, 1, 1), Parked::Yes);
    let pin = store.inner.pin(&id(1)).unwrap();
    store.delete(&id(1)).await.unwrap();
    assert!(!pin.commit(2), "committed a deleted session");
    assert!(store.load(&id(1)).await.unwrap().is_none());
    assert_eq!(store.parked(), 0);
    assert_eq!(store.inner.entries_len(), 0);
}
