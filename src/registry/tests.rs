use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::*;
use crate::eviction::queue::compaction_slack;
use crate::eviction::{AtCapacity, EvictionPolicy};

impl Stop for CancellationToken {
    fn stop(&self, _reason: CloseReason, _generation: u64) {
        self.cancel();
    }
}

type TestRegistry = Registry<CancellationToken>;

fn admit(registry: &TestRegistry, slot: Slot<'_>, n: usize) -> (SessionId, CancellationToken) {
    let id: SessionId = format!("s{n}").into();
    let cancel = CancellationToken::new();
    registry
        .insert(slot, id.clone(), registry.draw_generation(), cancel.clone())
        .map_err(|_| "duplicate id")
        .unwrap();
    (id, cancel)
}

fn assert_conserved(registry: &TestRegistry) {
    let stats = registry.stats();
    assert!(stats.is_consistent(), "{stats:?}");
}

#[tokio::test]
async fn evicts_oldest_and_hands_over_its_slot() {
    let registry = TestRegistry::new(3);
    let mut admitted = Vec::new();
    for n in 0..3 {
        let slot = registry.acquire_slot().await.unwrap();
        admitted.push(admit(&registry, slot, n));
    }
    assert_eq!(registry.stats().free_slots, 0);
    let slot = registry.acquire_slot().await.unwrap();
    assert!(admitted[0].1.is_cancelled(), "oldest session evicted");
    assert!(!registry.contains(&admitted[0].0));
    assert!(registry.contains(&admitted[1].0));
    admit(&registry, slot, 3);
    assert_eq!(registry.session_count(), 3);
    assert_conserved(&registry);
}

#[tokio::test]
async fn closed_sessions_are_skipped_and_free_their_slot() {
    let registry = TestRegistry::new(2);
    let a = admit(&registry, registry.acquire_slot().await.unwrap(), 0);
    let b = admit(&registry, registry.acquire_slot().await.unwrap(), 1);
    assert!(registry.close(&a.0, None, CloseReason::Closed));
    assert!(
        !registry.close(&a.0, None, CloseReason::Closed),
        "closed once"
    );
    // The freed slot is used; b is not evicted.
    admit(&registry, registry.acquire_slot().await.unwrap(), 2);
    assert!(registry.contains(&b.0));
    assert!(!b.1.is_cancelled());
    assert_conserved(&registry);
    // Now full: the next creation evicts b (a's stale entry is skipped).
    let slot = registry.acquire_slot().await.unwrap();
    assert!(b.1.is_cancelled());
    admit(&registry, slot, 3);
    assert_conserved(&registry);
}

#[tokio::test]
async fn close_with_old_seq_does_not_touch_a_restored_session() {
    let registry = TestRegistry::new(2);
    let id: SessionId = "same".into();
    let first = registry
        .insert(
            registry.acquire_slot().await.unwrap(),
            id.clone(),
            registry.draw_generation(),
            CancellationToken::new(),
        )
        .map_err(|_| "duplicate")
        .unwrap();
    let first = first.generation();
    assert!(registry.close(&id, Some(first), CloseReason::Closed));
    let second_cancel = CancellationToken::new();
    let second = registry
        .insert(
            registry.acquire_slot().await.unwrap(),
            id.clone(),
            registry.draw_generation(),
            second_cancel.clone(),
        )
        .map_err(|_| "duplicate")
        .unwrap();
    let second = second.generation();
    assert_ne!(first, second);
    assert!(!registry.close(&id, Some(first), CloseReason::HandshakeAbandoned));
    assert!(registry.contains(&id));
    assert!(!second_cancel.is_cancelled());
    assert_conserved(&registry);
}

#[tokio::test]
async fn duplicate_insert_returns_the_slot() {
    let registry = TestRegistry::new(2);
    let id: SessionId = "dup".into();
    registry
        .insert(
            registry.acquire_slot().await.unwrap(),
            id.clone(),
            registry.draw_generation(),
            CancellationToken::new(),
        )
        .map_err(|_| "duplicate")
        .unwrap();
    let slot = registry.acquire_slot().await.unwrap();
    let (slot, _) = registry
        .insert(
            slot,
            id,
            registry.draw_generation(),
            CancellationToken::new(),
        )
        .unwrap_err();
    drop(slot);
    assert_conserved(&registry);
    assert_eq!(registry.session_count(), 1);
}

#[tokio::test]
async fn churn_below_cap_keeps_the_queue_bounded() {
    let registry = TestRegistry::new(1_000);
    let keeper = admit(
        &registry,
        registry.acquire_slot().await.unwrap(),
        usize::MAX,
    );
    for n in 0..100_000 {
        let (id, _) = admit(&registry, registry.acquire_slot().await.unwrap(), n);
        assert!(registry.close(&id, None, CloseReason::Closed));
        let stats = registry.stats();
        assert!(
            stats.queued <= 2 * stats.session_count + compaction_slack(1_000) + 1,
            "{stats:?}"
        );
    }
    assert!(
        registry.contains(&keeper.0),
        "a live session survives compaction"
    );
    assert_conserved(&registry);
    // The old keeper is still the oldest: the compactions kept the order.
    let slots: Vec<Slot<'_>> = (0..999)
        .map(|_| registry.slots.try_take().unwrap())
        .collect();
    let slot = registry.acquire_slot().await.unwrap();
    assert!(keeper.1.is_cancelled());
    admit(&registry, slot, usize::MAX - 1);
    drop(slots);
    assert_conserved(&registry);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_creators_never_exceed_cap() {
    let registry = Arc::new(TestRegistry::new(4));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = {
        let registry = registry.clone();
        let stop = stop.clone();
        tokio::task::spawn_blocking(move || {
            let mut max_seen = 0;
            while !stop.load(Ordering::Relaxed) {
                max_seen = max_seen.max(registry.session_count());
            }
            max_seen
        })
    };
    let tasks: Vec<_> = (0..64)
        .map(|t| {
            let registry = registry.clone();
            tokio::spawn(async move {
                for n in 0..200 {
                    // Every session may be busy for a moment (between
                    // its insert and the end of its creating request).
                    let slot = loop {
                        match registry.acquire_slot().await {
                            Some(slot) => break slot,
                            None => tokio::task::yield_now().await,
                        }
                    };
                    let id: SessionId = format!("{t}-{n}").into();
                    registry
                        .insert(
                            slot,
                            id.clone(),
                            registry.draw_generation(),
                            CancellationToken::new(),
                        )
                        .map_err(|_| "duplicate")
                        .unwrap();
                    if n % 3 == 0 {
                        registry.close(&id, None, CloseReason::Closed);
                    }
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    assert!(sampler.await.unwrap() <= 4);
    assert_eq!(registry.session_count(), 4);
    assert_conserved(&registry);
}

#[tokio::test]
async fn a_full_cap_of_busy_sessions_refuses_at_once_and_evicts_nothing() {
    let registry = TestRegistry::new(2);
    let slot = registry.acquire_slot().await.unwrap();
    let a = registry.insert(slot, "a".into(), 0, CancellationToken::new());
    let slot = registry.acquire_slot().await.unwrap();
    let b = registry.insert(slot, "b".into(), 1, CancellationToken::new());
    let (Ok(a), Ok(b)) = (a, b) else {
        panic!("unique ids")
    };
    // Both are busy (their `initialize` requests are in flight).
    let (a, b) = (a.begin().unwrap(), b.begin().unwrap());
    assert!(registry.acquire_slot().await.is_none());
    assert!(matches!(registry.try_acquire_slot(), Err(NoSlot::Full)));
    assert_eq!(registry.session_count(), 2);
    assert!(registry.stats().is_consistent());
    // The queue entries of busy sessions were consumed; when `b` goes
    // idle it re-queues and is the one evicted.
    drop(b);
    let slot = registry.acquire_slot().await.unwrap();
    assert!(!registry.contains(&"b".into()));
    assert!(registry.contains(&"a".into()));
    admit(&registry, slot, 3);
    drop(a);
    assert_conserved(&registry);
}

#[tokio::test]
async fn a_busy_session_is_skipped_and_the_next_idle_one_evicted() {
    let registry = TestRegistry::new(3);
    for n in 0..3 {
        admit(&registry, registry.acquire_slot().await.unwrap(), n);
    }
    let oldest = registry
        .with_activity(&"s0".into(), |_, activity| activity.clone())
        .unwrap();
    let busy = oldest.begin().unwrap();
    let slot = registry.acquire_slot().await.unwrap();
    assert!(registry.contains(&"s0".into()), "busy: never evicted");
    assert!(!registry.contains(&"s1".into()), "the next idle one was");
    admit(&registry, slot, 3);
    // s0 goes idle: it re-queues at the tail, behind s2 and s3.
    drop(busy);
    let slot = registry.acquire_slot().await.unwrap();
    assert!(!registry.contains(&"s2".into()));
    assert!(registry.contains(&"s0".into()));
    admit(&registry, slot, 4);
    assert_conserved(&registry);
}

#[tokio::test]
async fn activity_moves_a_session_behind_the_others() {
    let registry = TestRegistry::new(3);
    for n in 0..3 {
        admit(&registry, registry.acquire_slot().await.unwrap(), n);
    }
    registry
        .with_activity(&"s0".into(), |_, activity| activity.touch())
        .unwrap();
    drop(registry.acquire_slot().await.unwrap());
    assert!(registry.contains(&"s0".into()), "recently active: kept");
    assert!(!registry.contains(&"s1".into()), "least recently active");
}

#[tokio::test]
async fn refuse_at_capacity_never_evicts() {
    let registry = TestRegistry::with_policy(
        1,
        EvictionPolicy::LeastRecentlyActive,
        AtCapacity::Refuse,
        None,
    );
    admit(&registry, registry.acquire_slot().await.unwrap(), 0);
    assert!(registry.acquire_slot().await.is_none());
    assert!(registry.contains(&"s0".into()));
    assert!(registry.close(&"s0".into(), None, CloseReason::Closed));
    admit(&registry, registry.acquire_slot().await.unwrap(), 1);
    assert_conserved(&registry);
}

#[tokio::test]
async fn oldest_created_ignores_activity() {
    let registry =
        TestRegistry::with_policy(2, EvictionPolicy::OldestCreated, AtCapacity::Evict, None);
    for n in 0..2 {
        admit(&registry, registry.acquire_slot().await.unwrap(), n);
    }
    registry
        .with_activity(&"s0".into(), |_, activity| activity.touch())
        .unwrap();
    drop(registry.acquire_slot().await.unwrap());
    assert!(!registry.contains(&"s0".into()), "created first: evicted");
}

#[tokio::test]
async fn a_million_requests_over_a_hundred_sessions_keep_the_queue_bounded() {
    let registry = TestRegistry::new(100);
    for n in 0..100 {
        admit(&registry, registry.acquire_slot().await.unwrap(), n);
    }
    let sessions: Vec<Arc<Activity>> = (0..100)
        .map(|n| {
            registry
                .with_activity(&format!("s{n}").into(), |_, activity| activity.clone())
                .unwrap()
        })
        .collect();
    let mut longest = 0;
    let mut previous = None;
    for request in 0..1_000_000 {
        // Requests overlap: the previous session's request ends after the
        // next one's started.
        let busy = sessions[request % 100].begin().unwrap();
        drop(previous.replace(busy));
        longest = longest.max(registry.stats().queued);
    }
    drop(previous);
    assert!(
        longest <= 2 * 100 + compaction_slack(100),
        "queue reached {longest} entries"
    );
    assert!(registry.stats().is_at_rest(), "{:?}", registry.stats());
}

#[tokio::test]
async fn eviction_at_cap_pops_exactly_one_entry() {
    // Creation at a full cap is O(1): one pop, one push, no scan.
    let registry = TestRegistry::new(10_000);
    for n in 0..10_000 {
        admit(&registry, registry.acquire_slot().await.unwrap(), n);
    }
    for n in 10_000..30_000 {
        let slot = registry.acquire_slot().await.unwrap();
        assert_eq!(registry.stats().queued, 9_999, "exactly one entry popped");
        admit(&registry, slot, n);
    }
    assert_conserved(&registry);
}

/// A session whose `left_registry` panics (a caller's bug), to check that
/// the panic costs no slot and leaves no close counted.
#[derive(Debug)]
struct PanicsOnLeave;

impl Stop for PanicsOnLeave {
    fn stop(&self, _reason: CloseReason, _generation: u64) {}
    fn left_registry(&mut self) {
        panic!("left_registry panicked");
    }
}

fn admit_panicky(registry: &Registry<PanicsOnLeave>, slot: Slot<'_>, name: &str) {
    registry
        .insert(slot, name.into(), registry.draw_generation(), PanicsOnLeave)
        .map_err(|_| "duplicate id")
        .unwrap();
}

#[tokio::test]
async fn a_panic_in_left_registry_during_a_close_frees_the_slot_and_the_close() {
    let registry = Registry::new(2);
    admit_panicky(&registry, registry.acquire_slot().await.unwrap(), "a");
    admit_panicky(&registry, registry.acquire_slot().await.unwrap(), "b");
    let closed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        registry.close(&"a".into(), None, CloseReason::Closed)
    }));
    assert!(closed.is_err(), "the panic propagates");
    assert_eq!(registry.slots.closing.load(Ordering::SeqCst), 0);
    let stats = registry.stats();
    assert!(stats.is_consistent(), "{stats:?}");
    assert_eq!((stats.session_count, stats.free_slots), (1, 1));
    // The freed slot is had at once, without waiting for the close.
    assert!(registry.try_acquire_slot().is_ok());
}

#[tokio::test]
async fn a_panic_in_left_registry_during_an_eviction_frees_the_slot() {
    let registry = Registry::new(1);
    admit_panicky(&registry, registry.acquire_slot().await.unwrap(), "a");
    let evicted = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        drop(registry.try_acquire_slot());
    }));
    assert!(evicted.is_err(), "the panic propagates");
    let stats = registry.stats();
    assert!(stats.is_consistent(), "{stats:?}");
    assert_eq!((stats.session_count, stats.free_slots), (0, 1));
    assert!(registry.try_acquire_slot().is_ok());
}

#[tokio::test]
async fn a_creation_dropped_while_waiting_for_a_close_leaves_nothing_behind() {
    use std::future::Future;
    use std::task::{Context, Waker};

    let registry = TestRegistry::new(1);
    let (id, cancel) = admit(&registry, registry.acquire_slot().await.unwrap(), 0);
    // A close is in flight at the full cap: a creator waits for its slot
    // rather than evicting.
    let close = registry.close_in_flight();
    {
        let mut waiting = std::pin::pin!(registry.acquire_slot());
        let mut cx = Context::from_waker(Waker::noop());
        assert!(waiting.as_mut().poll(&mut cx).is_pending());
        assert!(waiting.as_mut().poll(&mut cx).is_pending(), "still waiting");
        assert_eq!(registry.waiters(), 1);
    } // dropped mid-wait: the client hung up
    assert_eq!(registry.waiters(), 0, "the waiter count leaked");
    drop(close);
    assert!(!cancel.is_cancelled(), "the dropped creation evicted");
    assert!(registry.contains(&id));
    let stats = registry.stats();
    assert_eq!((stats.session_count, stats.free_slots), (1, 0));
    assert_conserved(&registry);
    // The registry still works: the next creation evicts the session.
    admit(&registry, registry.acquire_slot().await.unwrap(), 1);
    assert!(cancel.is_cancelled());
    assert_conserved(&registry);
}
