//! Churn at the cap through the public `SessionManager` API: eviction stays
//! in creation order, the queue stays proportional to the live sessions,
//! and the counters agree. (Churn below the cap: `tests/http/stress.rs`.)

use crate::common;

use common::assert_conserved;
use mcp_bounded_session::{BoundedSessionManager, SessionConfig};
use rmcp::transport::streamable_http_server::session::SessionManager;

/// Stale entries tolerated on top of one per live session (the crate's
/// compaction slack), plus one close in flight.
const SLACK: usize = 64 + 1;

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
        assert!(stats.session_count <= CAP);
        assert!(stats.queued <= 2 * stats.session_count + SLACK, "{stats:?}");
    }
    for (id, _) in &created {
        assert!(manager.has_session(id).await.unwrap());
    }
    assert_eq!(manager.session_count(), created.len());
    assert_conserved(&manager);
}
