//! The lazy eviction queue and its compaction (which, under loom, triggers
//! as soon as stale entries outnumber live ones).
#![cfg(mcp_bounded_session_loom)]

use loom::sync::Arc;
use loom::thread;
use loom_tests::{Probe, assert_conserved, create};
use mcp_bounded_session::loom_api::{CloseReason, Registry};

#[test]
fn compaction_racing_creation_loses_no_live_session_and_keeps_order() {
    loom::model(|| {
        let registry = Arc::new(Registry::new(3));
        let keeper = Probe::new("keeper");
        create(&registry, keeper.clone());
        create(&registry, Probe::new("gone"));
        // Closing `gone` leaves a stale entry; stale > live - slack makes the
        // closing thread compact while another thread admits.
        let closer = {
            let registry = registry.clone();
            thread::spawn(move || registry.close(&"gone".into(), None, CloseReason::Closed))
        };
        create(&registry, Probe::new("later"));
        closer.join().unwrap();
        assert_conserved(registry.census());
        // Fill the cap, then one more creation must evict `keeper`, the
        // oldest, whatever compaction did to the queue.
        create(&registry, Probe::new("filler"));
        create(&registry, Probe::new("evicts-keeper"));
        assert_eq!(
            keeper.stops(),
            1,
            "the oldest live session was lost or reordered"
        );
        assert!(registry.contains(&"later".into()));
        assert_conserved(registry.census());
    });
}

#[test]
fn concurrent_closes_keep_stale_entries_bounded() {
    loom::model(|| {
        let registry = Arc::new(Registry::new(3));
        for name in ["a", "b", "c"] {
            create(&registry, Probe::new(name));
        }
        let closers: Vec<_> = ["a", "b"]
            .into_iter()
            .map(|name| {
                let registry = registry.clone();
                thread::spawn(move || registry.close(&name.into(), None, CloseReason::Closed))
            })
            .collect();
        for closer in closers {
            assert!(closer.join().unwrap());
        }
        let stats = registry.census();
        assert_conserved(stats);
        // At most `live + slack` stale entries (slack is 0 under loom), plus
        // one per close whose compaction lost the race to another.
        assert!(stats.stale <= stats.live + 1, "{stats:?}");
    });
}
