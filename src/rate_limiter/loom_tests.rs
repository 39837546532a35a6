//! The rolling-window rate limiter under concurrent grants and roll-backs.
use std::time::Duration;

use super::RateLimiter;
use loom::sync::Arc;
use loom::sync::atomic::{AtomicUsize, Ordering};
use loom::thread;
use tokio::time::Instant;

/// Three concurrent creations in one window of a limit of 2: exactly two
/// grants.
#[test]
fn never_more_than_n_grants_in_a_window() {
    loom::model(|| {
        let limiter = Arc::new(RateLimiter::new(2, Duration::from_secs(10)));
        let start = Instant::now();
        let granted = Arc::new(AtomicUsize::new(0));
        let threads: Vec<_> = (0..3)
            .map(|i| {
                let (limiter, granted) = (limiter.clone(), granted.clone());
                thread::spawn(move || {
                    // All three within one window.
                    if let Ok(grant) = limiter.try_acquire_at(start + Duration::from_secs(i)) {
                        grant.commit();
                        granted.fetch_add(1, Ordering::SeqCst);
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        assert_eq!(granted.load(Ordering::SeqCst), 2);
        assert!(
            limiter
                .try_acquire_at(start + Duration::from_secs(9))
                .is_err()
        );
    });
}

/// A grant rolled back while two others race it is returned exactly once:
/// the log holds exactly the committed grants.
#[test]
fn a_rolled_back_grant_is_returned_exactly_once() {
    loom::model(|| {
        let limiter = Arc::new(RateLimiter::new(2, Duration::from_secs(10)));
        let start = Instant::now();
        limiter.try_acquire_at(start).unwrap().commit();
        let granted = Arc::new(AtomicUsize::new(0));
        // One creation fails after its grant (rolls back), two others race it.
        let failing = {
            let limiter = limiter.clone();
            thread::spawn(move || {
                let grant = limiter.try_acquire_at(start);
                drop(grant);
            })
        };
        let others: Vec<_> = (0..2)
            .map(|_| {
                let (limiter, granted) = (limiter.clone(), granted.clone());
                thread::spawn(move || {
                    if let Ok(grant) = limiter.try_acquire_at(start) {
                        grant.commit();
                        granted.fetch_add(1, Ordering::SeqCst);
                    }
                })
            })
            .collect();
        failing.join().unwrap();
        for other in others {
            other.join().unwrap();
        }
        // The limit is 2 and one is taken: exactly one more was committed,
        // whether it came before or after the roll-back, and the log holds
        // exactly the committed grants.
        let committed = granted.load(Ordering::SeqCst);
        assert!(committed <= 1, "{committed}");
        assert_eq!(limiter.granted_in_log(), 1 + committed);
        // After all threads, one creation must fit if none was committed.
        if committed == 0 {
            limiter.try_acquire_at(start).unwrap().commit();
        }
        assert!(limiter.try_acquire_at(start).is_err());
    });
}
