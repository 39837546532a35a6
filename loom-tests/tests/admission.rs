//! Admission and eviction under every interleaving loom explores.
//!
//! `LOOM_MAX_PREEMPTIONS` is set by `.ci/run` (3): bounding preemptions keeps
//! three-thread models to minutes, and known concurrency bugs need few
//! preemptions to show; models with two threads are explored exhaustively
//! within that bound.
#![cfg(mcp_bounded_session_loom)]

use loom::sync::Arc;
use loom::sync::atomic::{AtomicBool, Ordering};
use loom::thread;
use loom_tests::{Probe, assert_conserved, create};
use mcp_bounded_session::loom_api::{CloseReason, Registry};

fn registry(cap: usize) -> Arc<Registry<Probe>> {
    Arc::new(Registry::new(cap))
}

#[test]
fn concurrent_creators_never_exceed_the_cap_and_conserve_slots() {
    loom::model(|| {
        let registry = registry(1);
        let old = Probe::new("old");
        create(&registry, old.clone());
        let creators: Vec<_> = ["a", "b"]
            .into_iter()
            .map(|name| {
                let registry = registry.clone();
                thread::spawn(move || {
                    create(&registry, Probe::new(name));
                    assert!(registry.live() <= 1);
                })
            })
            .collect();
        assert!(registry.live() <= 1);
        for creator in creators {
            creator.join().unwrap();
        }
        assert_eq!(registry.live(), 1);
        assert_eq!(old.stops(), 1, "the old session was evicted exactly once");
        assert_conserved(registry.census());
    });
}

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
                    assert!(registry.live() <= 1);
                    assert!(registry.census().mapped <= 1);
                    thread::yield_now();
                }
            })
        };
        create(&registry, Probe::new("new"));
        registry.close(&"new".into(), None, CloseReason::Closed);
        done.store(true, Ordering::SeqCst);
        observer.join().unwrap();
        assert_conserved(registry.census());
    });
}

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
        assert_conserved(registry.census());
    });
}

#[test]
fn close_racing_eviction_racing_creation_stops_each_session_once() {
    loom::model(|| {
        let registry = registry(1);
        let victim = Probe::new("victim");
        create(&registry, victim.clone());
        let creator = {
            let registry = registry.clone();
            thread::spawn(move || create(&registry, Probe::new("a")))
        };
        let closer = {
            let registry = registry.clone();
            thread::spawn(move || registry.close(&"victim".into(), None, CloseReason::Closed))
        };
        create(&registry, Probe::new("b"));
        creator.join().unwrap();
        closer.join().unwrap();
        assert_eq!(victim.stops(), 1, "stopped once, by eviction or by close");
        assert_eq!(registry.live(), 1);
        assert_conserved(registry.census());
    });
}

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
        let expired_first = expiry.join().unwrap();
        assert_eq!(expiring.stops(), 1);
        assert!(registry.contains(&"new".into()));
        assert_eq!(registry.live(), 1);
        // Either way the slot count is exact: no slot doubled or lost.
        let _ = expired_first;
        assert_conserved(registry.census());
    });
}

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
        assert_conserved(registry.census());
    });
}
