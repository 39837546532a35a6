//! Session creation at a full cap, and exactness of the cap under a burst of
//! concurrent creators: this crate against rmcp 3.11's `LocalSessionManager`
//! (oldest session closed by the bench, so the work is equal) and
//! `mcp-session` 0.2, in one run on one multi-thread runtime.
//!
//! ```text
//! cargo bench --bench create_at_cap
//! ```

mod common;

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{LIVE, runtime};
use criterion::{Bencher, BenchmarkId, Criterion, criterion_group, criterion_main};
use mcp_bounded_session::{BoundedSessionManager, SessionConfig};
use rmcp::transport::streamable_http_server::session::SessionManager;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp_v1::transport::streamable_http_server::session::SessionManager as SessionManagerV1;

/// Fills a manager with `live` sessions, then measures one creation at the
/// full cap plus `retire` of the oldest session's handle. Returns the handles
/// still held, so the caller decides when the sessions end.
fn measure_create_at_cap<S>(
    b: &mut Bencher<'_>,
    rt: &tokio::runtime::Runtime,
    live: usize,
    create: impl AsyncFn() -> S,
    retire: impl AsyncFn(S),
) -> VecDeque<S> {
    let mut held = VecDeque::with_capacity(live + 1);
    rt.block_on(async {
        for _ in 0..live {
            held.push_back(create().await);
        }
    });
    b.iter_custom(|iters| {
        rt.block_on(async {
            let start = Instant::now();
            for _ in 0..iters {
                held.push_back(create().await);
                retire(held.pop_front().expect("filled")).await;
            }
            start.elapsed()
        })
    });
    held
}

fn create_at_cap(c: &mut Criterion) {
    let rt = runtime();
    let mut group = c.benchmark_group("create_at_cap");
    group
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    for live in LIVE {
        group.bench_with_input(BenchmarkId::new("bounded", live), &live, |b, &live| {
            let manager = BoundedSessionManager::new(SessionConfig::default(), live);
            // The creation evicts the oldest session and takes its slot;
            // dropping the evicted transport is all that is left to do.
            let held = measure_create_at_cap(
                b,
                &rt,
                live,
                async || manager.create_session().await.unwrap(),
                async |oldest| drop(oldest),
            );
            assert_eq!(manager.session_count(), live);
            drop(held);
        });
        group.bench_with_input(BenchmarkId::new("rmcp_local", live), &live, |b, &live| {
            let manager = LocalSessionManager::default();
            // The same eviction, by hand: close the oldest.
            measure_create_at_cap(
                b,
                &rt,
                live,
                async || manager.create_session().await.unwrap(),
                async |(oldest, transport)| {
                    manager.close_session(&oldest).await.unwrap();
                    drop(transport);
                },
            );
        });
        group.bench_with_input(BenchmarkId::new("mcp_session", live), &live, |b, &live| {
            let manager = mcp_session::BoundedSessionManager::new(
                mcp_session::SessionConfig::default(),
                live,
            );
            measure_create_at_cap(
                b,
                &rt,
                live,
                async || manager.create_session().await.unwrap(),
                async |oldest| drop(oldest),
            );
        });
    }
    group.finish();
}

/// Runs `tasks` concurrent creators, each creating `per_task` sessions, while
/// a sampler records the largest live count; returns that maximum and the
/// final count.
async fn burst<M, F, Fut>(
    manager: Arc<M>,
    tasks: usize,
    per_task: usize,
    count: F,
    create: impl Fn(Arc<M>) -> Fut + Clone + Send + 'static,
) -> (usize, usize)
where
    M: Send + Sync + 'static,
    F: Fn(&M) -> usize + Send + Sync + 'static,
    Fut: Future<Output = Box<dyn Send>> + Send,
{
    let count = Arc::new(count);
    let done = Arc::new(AtomicBool::new(false));
    let max_seen = Arc::new(AtomicUsize::new(0));
    let sampler = std::thread::spawn({
        let (manager, count, done, max_seen) = (
            manager.clone(),
            count.clone(),
            done.clone(),
            max_seen.clone(),
        );
        move || {
            while !done.load(Ordering::Relaxed) {
                max_seen.fetch_max(count(&manager), Ordering::Relaxed);
            }
        }
    });
    let creators: Vec<_> = (0..tasks)
        .map(|_| {
            let (manager, create) = (manager.clone(), create.clone());
            tokio::spawn(async move {
                let mut held = Vec::with_capacity(per_task);
                for _ in 0..per_task {
                    held.push(create(manager.clone()).await);
                }
                held
            })
        })
        .collect();
    let mut all_held = Vec::new();
    for creator in creators {
        all_held.push(creator.await.unwrap());
    }
    done.store(true, Ordering::Relaxed);
    sampler.join().unwrap();
    let final_count = count(&manager);
    max_seen.fetch_max(final_count, Ordering::Relaxed);
    (max_seen.load(Ordering::Relaxed), final_count)
}

fn concurrent_create_exactness(c: &mut Criterion) {
    const CAP: usize = 100;
    const TASKS: usize = 64;
    const PER_TASK: usize = 10;
    let rt = runtime();
    let mut group = c.benchmark_group("concurrent_create_exactness");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(200))
        .measurement_time(Duration::from_secs(3));

    let bounded_max = Arc::new(AtomicUsize::new(0));
    group.bench_function(BenchmarkId::new("bounded", CAP), |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let mut elapsed = Duration::ZERO;
                for _ in 0..iters {
                    let manager =
                        Arc::new(BoundedSessionManager::new(SessionConfig::default(), CAP));
                    let start = Instant::now();
                    let (max_seen, _) = burst(
                        manager,
                        TASKS,
                        PER_TASK,
                        |m: &BoundedSessionManager| m.session_count(),
                        |m: Arc<BoundedSessionManager>| async move {
                            Box::new(m.create_session().await.unwrap()) as Box<dyn Send>
                        },
                    )
                    .await;
                    elapsed += start.elapsed();
                    bounded_max.fetch_max(max_seen, Ordering::Relaxed);
                }
                elapsed
            })
        });
    });

    let mcp_session_max = Arc::new(AtomicUsize::new(0));
    group.bench_function(BenchmarkId::new("mcp_session", CAP), |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let mut elapsed = Duration::ZERO;
                for _ in 0..iters {
                    let manager = Arc::new(mcp_session::BoundedSessionManager::new(
                        mcp_session::SessionConfig::default(),
                        CAP,
                    ));
                    let start = Instant::now();
                    let (max_seen, _) = burst(
                        manager.clone(),
                        TASKS,
                        PER_TASK,
                        // Its live count is behind a tokio lock; sample it the
                        // way its own API reports it.
                        move |m: &mcp_session::BoundedSessionManager| {
                            futures::executor::block_on(m.active_session_count())
                        },
                        |m: Arc<mcp_session::BoundedSessionManager>| async move {
                            Box::new(m.create_session().await.unwrap()) as Box<dyn Send>
                        },
                    )
                    .await;
                    elapsed += start.elapsed();
                    mcp_session_max.fetch_max(max_seen, Ordering::Relaxed);
                }
                elapsed
            })
        });
    });
    group.finish();
    println!(
        "concurrent_create_exactness: {TASKS} tasks x {PER_TASK} creates at a cap of {CAP}: \
         largest live count seen: bounded {}, mcp_session {}",
        bounded_max.load(Ordering::Relaxed),
        mcp_session_max.load(Ordering::Relaxed)
    );
}

criterion_group!(benches, create_at_cap, concurrent_create_exactness);
criterion_main!(benches);
