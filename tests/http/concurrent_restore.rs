//! Restores of one id racing each other at a full cap, through rmcp's
//! `SessionManager` trait as a direct caller (or two services sharing one
//! manager) would call it: one restore admits the id, the other answers
//! `AlreadyPresent` without admitting anything, so a refused restore never
//! costs another session its place.

use std::sync::Barrier;

use mcp_bounded_session::{BoundedSessionManager, SessionConfig, SessionId, SessionTransport};
use rmcp::transport::streamable_http_server::session::{RestoreOutcome, SessionManager};

const ROUNDS: usize = 2_000;

/// Restores `id` on a runtime of its own once both restorers are ready.
fn restore(
    runtime: &tokio::runtime::Runtime,
    manager: &BoundedSessionManager,
    barrier: &Barrier,
    id: SessionId,
) -> Option<SessionTransport> {
    runtime.block_on(async {
        barrier.wait();
        match manager.restore_session(id).await.unwrap() {
            RestoreOutcome::Restored(transport) => Some(transport),
            RestoreOutcome::AlreadyPresent => None,
            _ => panic!("a restore is supported"),
        }
    })
}

#[test]
fn concurrent_restores_of_one_id_evict_one_session_at_most() {
    let _heavy = crate::common::load::heavy_blocking();
    let runtimes: Vec<_> = (0..2)
        .map(|_| {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
        })
        .collect();
    for round in 0..ROUNDS {
        let manager = BoundedSessionManager::new(SessionConfig::default(), 2);
        let (first, second, restored) = runtimes[0].block_on(async {
            let first = manager.create_session().await.unwrap();
            let second = manager.create_session().await.unwrap();
            (first, second, SessionId::from(format!("restored-{round}")))
        });
        let barrier = Barrier::new(2);
        // Both threads in parallel; each transport is kept to the end of
        // the round (dropping it would close its session).
        let transports: Vec<_> = std::thread::scope(|scope| {
            let racer = scope.spawn(|| restore(&runtimes[1], &manager, &barrier, restored.clone()));
            let mine = restore(&runtimes[0], &manager, &barrier, restored.clone());
            [mine, racer.join().unwrap()]
                .into_iter()
                .flatten()
                .collect()
        });
        assert_eq!(
            transports.len(),
            1,
            "round {round}: one restore admits the id"
        );
        let survivors = [&first.0, &second.0]
            .into_iter()
            .filter(|id| manager.session(id).is_some())
            .count();
        assert_eq!(survivors, 1, "round {round}: exactly one session made room");
        assert!(manager.session(&restored).is_some());
        let stats = manager.stats();
        assert_eq!(
            (stats.session_count, stats.free_slots),
            (2, 0),
            "round {round}: {stats:?}"
        );
        drop((first, second, transports));
    }
}
