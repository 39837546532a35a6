//! Eviction by activity: busy sessions are never evicted, the victim is the
//! least recently active idle session, the cap stays exact while sessions
//! move in the order, and a creator facing only busy sessions is refused at
//! once instead of waiting.
#![cfg(mcp_bounded_session_loom)]

use loom::sync::Arc;
use loom::sync::atomic::{AtomicBool, Ordering};
use loom::thread;
use loom_tests::{Probe, activity_of, assert_conserved, create, try_create};
use mcp_bounded_session::loom_api::{CloseReason, Registry};

#[test]
fn a_busy_session_is_never_evicted() {
    loom::model(|| {
        let registry = Arc::new(Registry::new(1));
        let session = Probe::new("session");
        create(&registry, session.clone());
        let activity = activity_of(&registry, "session");
        let request = {
            let session = session.clone();
            thread::spawn(move || {
                if let Ok(busy) = activity.begin() {
                    // While the request is in flight, nobody evicts.
                    thread::yield_now();
                    assert_eq!(session.stops(), 0, "evicted while busy");
                    drop(busy);
                    true
                } else {
                    false
                }
            })
        };
        let created = try_create(&registry, Probe::new("new")).is_some();
        let began = request.join().unwrap();
        // Refused only if the request was in flight when the creator looked.
        assert!(created || began, "refused with nothing busy");
        assert_eq!(session.stops(), usize::from(created));
        assert!(registry.session_count() <= 1);
        assert_conserved(registry.stats());
    });
}

#[test]
fn the_victims_are_the_least_recently_active_idle_sessions() {
    loom::model(|| {
        let registry = Arc::new(Registry::new(3));
        let (a, b, c) = (Probe::new("a"), Probe::new("b"), Probe::new("c"));
        for probe in [&a, &b, &c] {
            create(&registry, probe.clone());
        }
        // `a` was used after the others were created: it goes last.
        activity_of(&registry, "a").touch();
        let other = {
            let registry = registry.clone();
            thread::spawn(move || create(&registry, Probe::new("d")))
        };
        create(&registry, Probe::new("e"));
        other.join().unwrap();
        assert_eq!(a.stops(), 0, "the most recently active session went");
        assert_eq!((b.stops(), c.stops()), (1, 1));
        assert_eq!(registry.session_count(), 3);
        assert_conserved(registry.stats());
    });
}

#[test]
fn the_cap_stays_exact_while_sessions_move_close_and_get_evicted() {
    loom::model(|| {
        let registry = Arc::new(Registry::new(2));
        let (a, b) = (Probe::new("a"), Probe::new("b"));
        create(&registry, a.clone());
        let b_admission = create(&registry, b.clone());
        let mover = {
            let activity = activity_of(&registry, "a");
            thread::spawn(move || activity.touch())
        };
        let expiry = {
            let registry = registry.clone();
            thread::spawn(move || {
                registry.close(&"b".into(), Some(b_admission), CloseReason::IdleTimeout)
            })
        };
        let newcomer = Probe::new("new");
        create(&registry, newcomer.clone());
        assert!(registry.session_count() <= 2);
        mover.join().unwrap();
        let expired = expiry.join().unwrap();
        // Each session ended at most once; at least one made room (both,
        // when the expiry finished between the creator's look and its
        // eviction: that slot then stays free).
        assert!(a.stops() <= 1 && b.stops() <= 1);
        assert_eq!(newcomer.stops(), 0);
        let ended = a.stops() + b.stops();
        assert!(ended >= 1, "the newcomer got a slot nobody gave up");
        assert!(!expired || b.stops() == 1);
        assert_eq!(registry.session_count(), 3 - ended);
        assert_conserved(registry.stats());
    });
}

#[test]
fn no_creator_waits_when_every_session_is_busy() {
    loom::model(|| {
        let registry = Arc::new(Registry::new(1));
        let session = Probe::new("session");
        create(&registry, session.clone());
        let busy = activity_of(&registry, "session").begin().unwrap();
        let released = Arc::new(AtomicBool::new(false));
        let creator = {
            let (registry, released) = (registry.clone(), released.clone());
            thread::spawn(move || {
                // Returns (a refusal or an eviction); never blocks.
                let created = try_create(&registry, Probe::new("new")).is_some();
                assert!(!created || released.load(Ordering::SeqCst));
                created
            })
        };
        released.store(true, Ordering::SeqCst);
        drop(busy);
        let created = creator.join().unwrap();
        assert_eq!(session.stops(), usize::from(created));
        assert_conserved(registry.stats());
    });
}
