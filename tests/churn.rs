//! Churn through the public `SessionManager` API: the eviction queue and the
//! map stay proportional to the live sessions, and the counters agree.

mod common;

use common::assert_conserved;
use mcp_bounded_session::{BoundedSessionManager, SessionConfig};
use rmcp::transport::streamable_http_server::session::SessionManager;

/// Stale entries tolerated on top of one per live session (the crate's
/// compaction slack), plus one close in flight.
const SLACK: usize = 64 + 1;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_close_churn_below_the_cap_keeps_memory_flat() {
    const CAP: usize = 10_000;
    const LONG_LIVED: usize = 1_000;
    const CYCLES: usize = 50_000;
    let manager = BoundedSessionManager::new(SessionConfig::default(), CAP);
    // Long-lived sessions at the front of the queue: lazy deletion alone
    // (skipping stale entries at the front) would never reclaim what is
    // behind them.
    let mut long_lived = Vec::new();
    for _ in 0..LONG_LIVED {
        long_lived.push(manager.create_session().await.unwrap());
    }
    let mut max_queued = 0;
    for cycle in 0..CYCLES {
        let (id, transport) = manager.create_session().await.unwrap();
        manager.close_session(&id).await.unwrap();
        drop(transport);
        if cycle % 100 == 0 {
            let stats = manager.stats();
            max_queued = max_queued.max(stats.queued);
            assert!(
                stats.queued <= 2 * stats.live + SLACK,
                "cycle {cycle}: {stats:?}"
            );
        }
    }
    let stats = manager.stats();
    assert_eq!(stats.live, LONG_LIVED);
    assert!(max_queued <= 2 * LONG_LIVED + SLACK, "{max_queued}");
    assert_conserved(&manager);
    for (id, _) in &long_lived {
        assert!(manager.has_session(id).await.unwrap());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn churn_at_the_cap_evicts_in_order_and_keeps_memory_flat() {
    const CAP: usize = 1_000;
    let manager = BoundedSessionManager::new(SessionConfig::default(), CAP);
    let mut created = std::collections::VecDeque::new();
    for cycle in 0..20_000 {
        let (id, transport) = manager.create_session().await.unwrap();
        created.push_back((id, transport));
        if created.len() > CAP {
            // The oldest was evicted to make room.
            let (oldest, _) = created.pop_front().unwrap();
            assert!(
                !manager.has_session(&oldest).await.unwrap(),
                "cycle {cycle}"
            );
        }
        // Close one in three by DELETE, leaving stale entries behind.
        if cycle % 3 == 0 {
            let (id, _) = created.pop_back().unwrap();
            manager.close_session(&id).await.unwrap();
        }
        let stats = manager.stats();
        assert!(stats.live <= CAP);
        assert!(stats.queued <= 2 * stats.live + SLACK, "{stats:?}");
    }
    for (id, _) in &created {
        assert!(manager.has_session(id).await.unwrap());
    }
    assert_eq!(manager.session_count(), created.len());
    assert_conserved(&manager);
}
