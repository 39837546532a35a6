//! Stress through the public API on a multi-thread runtime: 64 tasks doing a
//! random mix of create / lookup / message / resume / close / drop for a
//! bounded time, while a sampler checks the cap; then the counters must
//! agree, every session worker must have ended and the queue must be small.

use crate::common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use common::{assert_conserved, eventually};
use mcp_bounded_session::{
    BoundedSessionError, BoundedSessionManager, BoundedSessionManagerBuilder, CloseReason,
    SessionConfig, SessionId,
};
use rmcp::model::ClientJsonRpcMessage;
use rmcp::transport::Transport;
use rmcp::transport::streamable_http_server::session::SessionManager;
use tokio::task::JoinHandle;

const TASKS: usize = 64;
const RUN_FOR: Duration = Duration::from_millis(1_500);
/// The crate's compaction slack plus one close in flight per task.
const STALE_SLACK: usize = 64 + TASKS;

/// xorshift64*: enough randomness for an operation mix, no dependency.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 33) as usize % n
    }
}

/// Creates a session and drives its transport the way rmcp's service task
/// does (receive until the worker ends, then drop the transport). A
/// creation finding every session busy (a request in flight in each) is
/// refused; it is retried until `deadline` (`None` then: a manager that
/// never made room fails the run's assertions instead of hanging it).
async fn create(
    manager: &BoundedSessionManager,
    deadline: tokio::time::Instant,
) -> Option<(SessionId, JoinHandle<()>)> {
    let (id, mut transport) = loop {
        match manager.create_session().await {
            Ok(created) => break created,
            Err(BoundedSessionError::AtCapacity) if tokio::time::Instant::now() < deadline => {
                tokio::task::yield_now().await
            }
            Err(BoundedSessionError::AtCapacity) => return None,
            Err(error) => panic!("creation failed: {error}"),
        }
    };
    let handler = tokio::spawn(async move { while transport.receive().await.is_some() {} });
    Some((id, handler))
}

fn initialized_notification() -> ClientJsonRpcMessage {
    serde_json::from_value(serde_json::json!({
        "jsonrpc": "2.0", "method": "notifications/initialized"
    }))
    .unwrap()
}

async fn stress(cap: usize) {
    let evictions = Arc::new(AtomicUsize::new(0));
    let manager = BoundedSessionManagerBuilder::new(cap)
        .on_close({
            let evictions = evictions.clone();
            move |_, reason, _| {
                if reason == CloseReason::Evicted {
                    evictions.fetch_add(1, Ordering::Relaxed);
                }
            }
        })
        .build();
    let runtime = tokio::runtime::Handle::current();
    let tasks_before = runtime.metrics().num_alive_tasks();

    let done = Arc::new(AtomicBool::new(false));
    let sampler = std::thread::spawn({
        let (manager, done) = (manager.clone(), done.clone());
        move || {
            let (mut samples, mut max_seen) = (0u64, 0);
            while !done.load(Ordering::Relaxed) {
                // The counter: see tests/http/cap.rs for why not the map's length.
                max_seen = max_seen.max(manager.session_count());
                samples += 1;
            }
            (samples, max_seen)
        }
    });

    let deadline = tokio::time::Instant::now() + RUN_FOR;
    let workers: Vec<_> = (0..TASKS)
        .map(|task| {
            let manager = manager.clone();
            tokio::spawn(async move {
                let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ ((task as u64 + 1) * 0x1234_5677));
                let mut mine: Vec<(SessionId, JoinHandle<()>)> = Vec::new();
                let mut operations = 0u64;
                while tokio::time::Instant::now() < deadline {
                    operations += 1;
                    let pick = if mine.is_empty() {
                        0
                    } else {
                        rng.below(mine.len())
                    };
                    match rng.below(10) {
                        0..=2 => mine.extend(create(&manager, deadline).await),
                        3 | 4 if !mine.is_empty() => {
                            let _ = manager.has_session(&mine[pick].0).await.unwrap();
                        }
                        5 if !mine.is_empty() => {
                            // May fail: the session may have been evicted.
                            let _ = manager
                                .accept_message(&mine[pick].0, initialized_notification())
                                .await;
                        }
                        6 if !mine.is_empty() => {
                            let _ = manager.resume(&mine[pick].0, "0".to_owned()).await;
                        }
                        7 | 8 if !mine.is_empty() => {
                            // DELETE: the worker stops, so its handler ends.
                            let (id, handler) = mine.swap_remove(pick);
                            manager.close_session(&id).await.unwrap();
                            tokio::time::timeout(Duration::from_secs(10), handler)
                                .await
                                .expect("the handler outlived its closed session")
                                .unwrap();
                            assert!(!manager.has_session(&id).await.unwrap());
                        }
                        9 if !mine.is_empty() => {
                            // The handler goes away without a DELETE.
                            let (id, handler) = mine.swap_remove(pick);
                            handler.abort();
                            let _ = handler.await;
                            assert!(!manager.has_session(&id).await.unwrap());
                        }
                        _ => tokio::task::yield_now().await,
                    }
                }
                (operations, mine)
            })
        })
        .collect();

    let mut operations = 0;
    let mut held = Vec::new();
    for worker in workers {
        let (ops, mine) = worker.await.unwrap();
        operations += ops;
        held.extend(mine);
    }
    done.store(true, Ordering::Relaxed);
    let (samples, max_seen) = sampler.join().unwrap();
    // Tens of thousands run in 1.5 s (33,000 to 97,000 on two cores).
    assert!(
        operations > TASKS as u64 * 100,
        "only {operations} operations ran"
    );
    assert!(
        samples > 100,
        "the sampler ran throughout ({samples} samples)"
    );
    assert!(
        max_seen <= cap,
        "saw {max_seen} live sessions at a cap of {cap}"
    );
    // At the small caps the run fills the cap and evicts throughout (the
    // cap of 1,000 checks the sampling under churn below the cap).
    if cap < TASKS {
        assert_eq!(max_seen, cap, "the cap was never reached");
        let evicted = evictions.load(Ordering::Relaxed);
        assert!(evicted > 100, "only {evicted} evictions");
    }

    let stats = manager.stats();
    assert_conserved(&manager);
    assert!(stats.session_count <= cap);
    assert!(
        stats.stale <= stats.session_count + STALE_SLACK,
        "stale entries piled up: {stats:?}"
    );
    // Every session still held is live or was evicted; none is live unheld.
    let held_live = {
        let mut n = 0;
        for (id, _) in &held {
            n += usize::from(manager.has_session(id).await.unwrap());
        }
        n
    };
    assert_eq!(
        held_live, stats.session_count,
        "a live session nobody holds: {stats:?}"
    );

    for (_, handler) in &held {
        handler.abort();
    }
    for (_, handler) in held {
        let _ = handler.await;
    }
    assert_eq!(manager.session_count(), 0, "ended handlers close at once");
    assert_conserved(&manager);
    assert!(
        eventually(Duration::from_secs(10), || {
            runtime.metrics().num_alive_tasks() <= tasks_before
        })
        .await,
        "session workers outlived their sessions: {} tasks alive, {tasks_before} before",
        runtime.metrics().num_alive_tasks()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stress_at_a_cap_of_1() {
    let _heavy = common::load::heavy().await;
    stress(1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stress_at_a_cap_of_8() {
    let _heavy = common::load::heavy().await;
    stress(8).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stress_at_a_cap_of_1000() {
    let _heavy = common::load::heavy().await;
    stress(1_000).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_million_create_close_cycles_keep_memory_flat() {
    const CYCLES: usize = 1_000_000;
    const CAP: usize = 10_000;
    let manager = BoundedSessionManager::new(SessionConfig::default(), CAP);
    // Long-lived sessions at the front of the queue keep lazy deletion from
    // reclaiming anything behind them; only compaction can.
    let mut long_lived = Vec::new();
    for _ in 0..100 {
        long_lived.push(manager.create_session().await.unwrap());
    }
    let mut max_queued = 0;
    for cycle in 0..CYCLES {
        let (id, transport) = manager.create_session().await.unwrap();
        manager.close_session(&id).await.unwrap();
        drop(transport);
        if cycle % 1_000 == 0 {
            let stats = manager.stats();
            max_queued = max_queued.max(stats.queued);
            assert_eq!(stats.mapped, 100, "cycle {cycle}: {stats:?}");
        }
    }
    assert!(
        max_queued <= 2 * 100 + 64 + 1,
        "the queue grew with churn: up to {max_queued} entries for 100 live sessions"
    );
    assert_conserved(&manager);
    for (id, _) in &long_lived {
        assert!(
            manager.has_session(id).await.unwrap(),
            "compaction lost {id}"
        );
    }
}
