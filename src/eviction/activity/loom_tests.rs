//! Eviction by activity: busy sessions are never evicted, the victim is the
//! least recently active idle session, the cap stays exact while sessions
//! move in the order, and a creator facing only busy sessions is refused at
//! once instead of waiting.
use crate::close_reason::CloseReason;
use crate::eviction::{AtCapacity, EvictionPolicy};
use crate::registry::Registry;
use crate::registry::loom_support::{Probe, activity_of, assert_conserved, create, try_create};
use loom::sync::Arc;
use loom::sync::atomic::{AtomicBool, Ordering};
use loom::thread;

/// A session with a request in flight is never evicted; a creator is
/// refused only if the request was in flight when it looked.
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

/// Two concurrent evictions take the two least recently active sessions,
/// never the one used after them.
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

/// Activity, expiry and eviction at once: the cap holds, each session ends
/// at most once, and the newcomer's slot was given up by someone.
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

/// A creator facing only busy sessions returns at once (refused, or
/// evicting one that went idle): it never waits for a session to go idle.
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

/// With `EvictionPolicy::OldestCreated`, the victim is the idle session
/// created first, whatever the activity: one used after the others keeps
/// its place, and a request racing the eviction in a younger session
/// moves nothing.
#[test]
fn oldest_created_evicts_by_creation_whatever_the_activity() {
    loom::model(|| {
        let registry = Arc::new(Registry::with_policy(
            2,
            EvictionPolicy::OldestCreated,
            AtCapacity::Evict,
            None,
        ));
        let (a, b) = (Probe::new("a"), Probe::new("b"));
        create(&registry, a.clone());
        create(&registry, b.clone());
        // Least recently active would now take `b`.
        activity_of(&registry, "a").touch();
        let request = {
            let activity = activity_of(&registry, "b");
            thread::spawn(move || activity.touch())
        };
        create(&registry, Probe::new("new"));
        request.join().unwrap();
        assert_eq!((a.stops(), b.stops()), (1, 0), "not the oldest created");
        // `b`, created before `new`, goes next, its request notwithstanding.
        create(&registry, Probe::new("last"));
        assert_eq!(
            b.stops(),
            1,
            "b's request moved it behind a younger session"
        );
        assert!(registry.contains(&"new".into()));
        assert_conserved(registry.stats());
    });
}

/// A session holding a standalone (GET) stream is evicted only after every
/// session holding none, even a more recently active one, also while its
/// stream ends concurrently (it then moves to the tail of the quiet tier).
#[test]
fn a_listening_session_goes_after_every_quiet_one() {
    loom::model(|| {
        let registry = Arc::new(Registry::new(2));
        let (a, b) = (Probe::new("a"), Probe::new("b"));
        create(&registry, a.clone());
        create(&registry, b.clone());
        let stream = activity_of(&registry, "a")
            .begin()
            .unwrap()
            .into_listening();
        // `b` is more recently active than `a`, but holds no stream.
        activity_of(&registry, "b").touch();
        let stream_end = thread::spawn(move || drop(stream));
        create(&registry, Probe::new("new"));
        stream_end.join().unwrap();
        assert_eq!(
            (a.stops(), b.stops()),
            (0, 1),
            "the listening tier went first"
        );
        assert_eq!(registry.session_count(), 2);
        assert_conserved(registry.stats());
    });
}

/// At a cap of 8 a session whose entry is among the newest eighth of the
/// queue (within `max_sessions / 8` pushes of the tail) is not moved by a
/// request: the production tolerance. Its kept entry stays current, also
/// while a request ends (without moving it) concurrently with an evictor
/// that pops that entry: the session is evicted once or re-queued once,
/// never lost from the queue nor queued twice.
#[test]
fn a_session_near_the_tail_keeps_its_entry_at_a_cap_of_8() {
    loom::model(|| {
        let registry = Arc::new(Registry::new(8));
        let (a, b) = (Probe::new("a"), Probe::new("b"));
        create(&registry, a.clone());
        create(&registry, b.clone());
        // Six slots held elsewhere: the cap is full with `a` and `b`.
        let held: Vec<_> = (0..6)
            .map(|_| registry.try_acquire_slot().unwrap())
            .collect();
        // `b`'s entry is the newest: a request in it moves nothing.
        activity_of(&registry, "b").touch();
        assert_eq!(registry.stats().queue_pushes, 2, "moved within near_tail");
        // `a` is busy: the evictor skips it and reaches `b`'s entry.
        let a_busy = activity_of(&registry, "a").begin().unwrap();
        let request = {
            let activity = activity_of(&registry, "b");
            thread::spawn(move || activity.begin().map(drop).is_ok())
        };
        let created = try_create(&registry, Probe::new("new")).is_some();
        let served = request.join().unwrap();
        // `b` is evicted unless its request was in flight when the evictor
        // looked (then the creation is refused).
        assert_eq!(b.stops(), usize::from(created));
        assert!(created || served);
        drop(a_busy);
        drop(held);
        let stats = registry.stats();
        assert!(stats.is_at_rest(), "{stats:?}");
    });
}
