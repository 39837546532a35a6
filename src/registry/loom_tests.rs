//! Admission and eviction under every interleaving loom explores.
//!
//! `LOOM_MAX_PREEMPTIONS` is set by `.ci/run` (3): bounding preemptions keeps
//! three-thread models to minutes, and known concurrency bugs need few
//! preemptions to show; models with two threads are explored exhaustively
//! within that bound.
use super::Registry;
use super::loom_support::{Gate, Probe, Signal, activity_of, assert_conserved, create, try_create};
use crate::close_reason::CloseReason;
use crate::eviction::{AtCapacity, EvictionPolicy};
use loom::sync::Arc;
use loom::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use loom::thread;

fn registry(cap: usize) -> Arc<Registry<Probe>> {
    Arc::new(Registry::new(cap))
}

/// Two creators at a full cap of 1: the live count never exceeds the cap,
/// the old session is evicted once, and every slot is accounted for.
#[test]
fn concurrent_creators_never_exceed_the_cap_and_conserve_slots() {
    loom::model(|| {
        let registry = registry(1);
        let old = Probe::new("old");
        create(&registry, old.clone());
        let (a, b) = (Probe::new("a"), Probe::new("b"));
        let creators: Vec<_> = [a.clone(), b.clone()]
            .into_iter()
            .map(|probe| {
                let registry = registry.clone();
                thread::spawn(move || {
                    let created = try_create(&registry, probe).is_some();
                    assert!(registry.session_count() <= 1);
                    created
                })
            })
            .collect();
        assert!(registry.session_count() <= 1);
        let created: usize = creators
            .into_iter()
            .map(|creator| usize::from(creator.join().unwrap()))
            .sum();
        assert_eq!(registry.session_count(), 1);
        assert_eq!(old.stops(), 1, "the old session was evicted exactly once");
        // A creator that finds the only slot held by the other's creation
        // in progress is refused (nothing is evictable); one that comes
        // after the other's admission evicts it, once.
        assert!(created >= 1);
        assert_eq!(a.stops() + b.stops(), created - 1);
        assert_conserved(registry.stats());
    });
}

/// A create then a close in one thread, watched by another: neither the
/// live counter nor the map ever shows more than the cap.
#[test]
fn live_count_observed_concurrently_never_exceeds_the_cap() {
    loom::model(|| {
        let registry = registry(1);
        create(&registry, Probe::new("old"));
        let done = Arc::new(AtomicBool::new(false));
        let observer = {
            let (registry, done) = (registry.clone(), done.clone());
            thread::spawn(move || {
                while !done.load(Ordering::SeqCst) {
                    // The counter and the map itself (whose loom stand-in
                    // counts atomically, unlike DashMap::len).
                    assert!(registry.session_count() <= 1);
                    assert!(registry.stats().mapped <= 1);
                    thread::yield_now();
                }
            })
        };
        create(&registry, Probe::new("new"));
        registry.close(&"new".into(), None, CloseReason::Closed);
        done.store(true, Ordering::SeqCst);
        observer.join().unwrap();
        assert_conserved(registry.stats());
    });
}

/// A creator at the full cap racing a DELETE of the oldest session takes
/// that session's slot (by eviction or by waiting for the close), never a
/// younger session's.
#[test]
fn eviction_takes_the_oldest_live_session() {
    loom::model(|| {
        let registry = registry(2);
        let oldest = Probe::new("oldest");
        let younger = Probe::new("younger");
        create(&registry, oldest.clone());
        create(&registry, younger.clone());
        // One creator evicts while the oldest may concurrently be closed.
        let closer = {
            let registry = registry.clone();
            thread::spawn(move || registry.close(&"oldest".into(), None, CloseReason::Closed))
        };
        create(&registry, Probe::new("new"));
        closer.join().unwrap();
        // Whether the creator evicted `oldest` or used the slot its close
        // freed, `younger` must survive: it is not the oldest.
        assert_eq!(oldest.stops(), 1);
        assert_eq!(younger.stops(), 0, "a younger session was evicted");
        assert!(registry.contains(&"younger".into()));
        assert!(registry.contains(&"new".into()));
        assert_conserved(registry.stats());
    });
}

/// A close, an evicting creator and a second creator race for one session:
/// it stops once, its slot goes to one newcomer, none is lost or doubled.
#[test]
fn close_racing_eviction_racing_creation_stops_each_session_once() {
    loom::model(|| {
        let registry = registry(1);
        let victim = Probe::new("victim");
        create(&registry, victim.clone());
        let (a, b) = (Probe::new("a"), Probe::new("b"));
        let creator = {
            let (registry, a) = (registry.clone(), a.clone());
            thread::spawn(move || try_create(&registry, a).is_some())
        };
        let closer = {
            let registry = registry.clone();
            thread::spawn(move || registry.close(&"victim".into(), None, CloseReason::Closed))
        };
        let created_b = try_create(&registry, b.clone()).is_some();
        let created = usize::from(creator.join().unwrap()) + usize::from(created_b);
        closer.join().unwrap();
        assert_eq!(victim.stops(), 1, "stopped once, by eviction or by close");
        // The victim's slot went to one newcomer; the other was refused (the
        // slot was held by a creation in progress) or evicted it, once.
        assert!(created >= 1);
        assert_eq!(a.stops() + b.stops(), created - 1);
        assert_eq!(registry.session_count(), 1);
        assert_conserved(registry.stats());
    });
}

/// A session's own expiry racing its eviction frees its slot exactly once.
#[test]
fn expiry_racing_eviction_frees_one_slot_once() {
    loom::model(|| {
        let registry = registry(1);
        let expiring = Probe::new("expiring");
        let seq = create(&registry, expiring.clone());
        // The lease closes its own admission (idle timeout) while a creator
        // evicts it.
        let expiry = {
            let registry = registry.clone();
            thread::spawn(move || {
                registry.close(&"expiring".into(), Some(seq), CloseReason::IdleTimeout)
            })
        };
        create(&registry, Probe::new("new"));
        expiry.join().unwrap();
        assert_eq!(expiring.stops(), 1);
        assert!(registry.contains(&"new".into()));
        assert_eq!(registry.session_count(), 1);
        // Either way the slot count is exact: no slot doubled or lost.
        assert_conserved(registry.stats());
    });
}

/// A late close of an earlier admission never closes the session restored
/// under the same id.
#[test]
fn stale_lease_never_closes_a_restored_session() {
    loom::model(|| {
        let registry = registry(2);
        let first = create(&registry, Probe::new("same"));
        registry.close(&"same".into(), Some(first), CloseReason::Closed);
        let restored = Probe::new("same");
        let restorer = {
            let (registry, restored) = (registry.clone(), restored.clone());
            thread::spawn(move || create(&registry, restored))
        };
        // The first admission's lease fires late.
        let late = registry.close(&"same".into(), Some(first), CloseReason::HandlerEnded);
        restorer.join().unwrap();
        assert!(!late);
        assert_eq!(restored.stops(), 0);
        assert!(registry.contains(&"same".into()));
        assert_conserved(registry.stats());
    });
}

/// A DELETE, the session's own lease and a creator race for one session:
/// it stops once, one slot is freed, and once either close returned the
/// session is gone to lookups (the `ending` mark of a close that lost).
#[test]
fn delete_and_lease_closing_one_session_against_a_creator_free_one_slot() {
    loom::model(|| {
        let registry = registry(1);
        let session = Probe::new("session");
        let seq = create(&registry, session.clone());
        // Once a close returned, whichever close (or eviction) won, no
        // lookup finds the session: a close that lost the race marks it
        // as ending for the winner to remove.
        let delete = {
            let registry = registry.clone();
            thread::spawn(move || {
                let closed = registry.close(&"session".into(), None, CloseReason::Closed);
                assert!(!registry.contains(&"session".into()), "found after DELETE");
                closed
            })
        };
        let lease = {
            let registry = registry.clone();
            thread::spawn(move || {
                let closed =
                    registry.close(&"session".into(), Some(seq), CloseReason::HandlerEnded);
                assert!(!registry.contains(&"session".into()), "found after expiry");
                closed
            })
        };
        let newcomer = Probe::new("newcomer");
        create(&registry, newcomer.clone());
        let closed = [delete.join().unwrap(), lease.join().unwrap()];
        assert_eq!(session.stops(), 1);
        // At most one of the two closes removed it (none, if evicted first).
        assert!(closed.iter().filter(|&&c| c).count() <= 1);
        assert_eq!(newcomer.stops(), 0);
        assert_eq!(registry.session_count(), 1);
        assert_conserved(registry.stats());
    });
}

/// A creation that waits for a close in flight and is dropped mid-wait (a
/// client hung up) leaves no waiter counted and no slot taken.
#[test]
fn a_dropped_waiter_leaves_nothing_behind() {
    use std::future::Future;
    use std::task::{Context, Waker};

    loom::model(|| {
        let registry = registry(1);
        let gate = Gate::new();
        create(&registry, Probe::gated("session", gate.clone()));
        let closer = {
            let registry = registry.clone();
            thread::spawn(move || registry.close(&"session".into(), None, CloseReason::Closed))
        };
        // The close is in flight: the session left the map, its slot is
        // not free yet, so a creation must wait for it.
        gate.wait_entered();
        {
            let mut waiting = std::pin::pin!(registry.acquire_slot());
            let mut cx = Context::from_waker(Waker::noop());
            assert!(waiting.as_mut().poll(&mut cx).is_pending(), "did not wait");
            assert_eq!(registry.waiters(), 1);
        }
        assert_eq!(registry.waiters(), 0, "the dropped waiter is still counted");
        gate.release();
        assert!(closer.join().unwrap());
        let stats = registry.stats();
        assert_eq!((stats.session_count, stats.free_slots), (0, 1), "{stats:?}");
        assert_conserved(stats);
        create(&registry, Probe::new("next"));
    });
}

/// The live counter, read by a third thread while a close and a creation
/// race in two others, never exceeds the cap: the close takes its session
/// off the counter before its slot can reach the creator (the hand-over the
/// `Relaxed` counter relies on).
#[test]
fn live_count_seen_by_a_third_thread_across_a_close_and_a_create_never_exceeds_the_cap() {
    loom::model(|| {
        let registry = registry(1);
        create(&registry, Probe::new("old"));
        let done = Arc::new(AtomicUsize::new(0));
        let closer = {
            let (registry, done) = (registry.clone(), done.clone());
            thread::spawn(move || {
                registry.close(&"old".into(), None, CloseReason::Closed);
                done.fetch_add(1, Ordering::SeqCst);
            })
        };
        let creator = {
            let (registry, done) = (registry.clone(), done.clone());
            thread::spawn(move || {
                create(&registry, Probe::new("new"));
                done.fetch_add(1, Ordering::SeqCst);
            })
        };
        while done.load(Ordering::SeqCst) < 2 {
            assert!(registry.session_count() <= 1, "more live than the cap");
            thread::yield_now();
        }
        closer.join().unwrap();
        creator.join().unwrap();
        assert_eq!(registry.session_count(), 1);
        assert_conserved(registry.stats());
    });
}

/// A creator that found every session busy while a DELETE of one of them
/// got under way waits for the slot that DELETE frees instead of being
/// refused: the close counts itself right after the creator's last pop
/// found the queue empty (the re-check of `closing` on `Popped::Empty`).
#[test]
fn a_creator_that_found_only_busy_sessions_waits_for_a_close_in_flight() {
    loom::model(|| {
        let registry = registry(1);
        let gate = Gate::new();
        let session = Probe::gated("session", gate.clone());
        create(&registry, session.clone());
        // A request is in flight in the session: not evictable.
        let busy = activity_of(&registry, "session").begin().unwrap();
        let start_close = Arc::new(Signal::new());
        // In the creator, once its pops found nothing evictable: the close
        // starts and is counted before the creator decides.
        registry.on_next_empty_pop({
            let (start_close, gate) = (start_close.clone(), gate.clone());
            move || {
                start_close.set();
                gate.wait_entered();
                gate.release();
            }
        });
        let closer = {
            let registry = registry.clone();
            thread::spawn(move || {
                start_close.wait();
                registry.close(&"session".into(), None, CloseReason::Closed)
            })
        };
        let created = try_create(&registry, Probe::new("new")).is_some();
        assert!(created, "refused while a close was in flight");
        assert!(closer.join().unwrap());
        drop(busy);
        assert_eq!(session.stops(), 1);
        assert!(registry.contains(&"new".into()));
        assert_conserved(registry.stats());
    });
}

/// With `AtCapacity::Refuse`, a creator at the full cap waits for a close
/// in flight rather than being refused, and never evicts: the close
/// removes its session itself, and a further creation is refused.
#[test]
fn refuse_at_capacity_waits_for_a_close_in_flight_and_never_evicts() {
    loom::model(|| {
        let registry = Arc::new(Registry::with_policy(
            1,
            EvictionPolicy::LeastRecentlyActive,
            AtCapacity::Refuse,
            None,
        ));
        let gate = Gate::new();
        let session = Probe::gated("session", gate.clone());
        create(&registry, session.clone());
        let closer = {
            let registry = registry.clone();
            thread::spawn(move || registry.close(&"session".into(), None, CloseReason::Closed))
        };
        // The close is in flight (counted, its slot not yet free) when the
        // creator starts; it ends before or while the creator looks.
        gate.wait_entered();
        gate.release();
        assert!(
            try_create(&registry, Probe::new("new")).is_some(),
            "refused while a close was in flight"
        );
        assert!(
            closer.join().unwrap(),
            "the session was evicted, not closed"
        );
        assert_eq!(session.stops(), 1);
        assert!(try_create(&registry, Probe::new("refused")).is_none());
        assert!(registry.contains(&"new".into()), "evicted under Refuse");
        assert_conserved(registry.stats());
    });
}

/// `park_after` racing a request that begins, and a GET that starts
/// listening: the session is parked only if neither got in first, and a
/// request or stream that began never sees its session parked under it
/// (its `begin` fails instead, and it restores the session).
#[test]
fn park_never_takes_a_session_with_a_request_or_stream() {
    loom::model(|| {
        let registry = registry(2);
        let session = Probe::new("session");
        let generation = create(&registry, session.clone());
        let activity = activity_of(&registry, "session");
        let request = {
            let activity = activity.clone();
            thread::spawn(move || activity.begin().ok())
        };
        // A GET: busy, its response opened under the session's lock, then
        // listening.
        let listener = {
            let (activity, streams) = (activity.clone(), session.streams.clone());
            thread::spawn(move || {
                activity.begin().ok().map(|busy| {
                    *streams.lock().unwrap() += 1;
                    busy.into_listening()
                })
            })
        };
        let parked = registry.park(&"session".into(), generation);
        let request = request.join().unwrap();
        let listener = listener.join().unwrap();
        if parked {
            assert!(
                request.is_none() && listener.is_none(),
                "parked under a request"
            );
            assert_eq!(session.stops(), 1);
            assert!(!registry.contains(&"session".into()));
        } else {
            assert!(
                request.is_some() || listener.is_some(),
                "refused for nothing"
            );
            assert_eq!(session.stops(), 0);
            assert!(registry.contains(&"session".into()));
        }
        drop((request, listener));
        assert_conserved(registry.stats());
    });
}
