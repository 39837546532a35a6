//! Request-path lookups (`has_session`) by several tasks while one task
//! creates sessions at a full cap: this crate, rmcp 3.11's
//! `LocalSessionManager` (the bench closes the oldest session itself, so the
//! work is equal) and `mcp-session` 0.2, in one run. Criterion reports
//! lookups per second; the creations per second the creator sustained
//! meanwhile are printed at the end.
//!
//! Readers look up ids that are live: a snapshot of the live ids is taken
//! before each timed call and again by the creator every
//! `live / REPUBLISH_PARTS` creations, so at most that share of a snapshot
//! has been evicted when it is read. The share of
//! lookups that found their session is printed with the creation rates (a
//! miss is cheaper than a hit in these hash maps: it need not read the
//! stored key).
//!
//! Two groups: in `lookup_under_churn` the creator goes as fast as it can,
//! so a manager with cheaper creations also spends more of the two cores on
//! creating (and less on lookups); in `lookup_under_paced_churn` every
//! creator is held to the same `PACED_CREATES_PER_SEC`, so the lookups are
//! compared under equal creation work (a manager too slow for that pace
//! shows its lower rate).
//!
//! ```text
//! cargo bench --bench lookup_under_churn
//! ```

mod common;

use std::collections::VecDeque;
use std::hint::black_box;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use common::{LIVE, runtime};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use mcp_bounded_session::{BoundedSessionManager, SessionConfig};
use rmcp::transport::streamable_http_server::session::SessionManager;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp_v1::transport::streamable_http_server::session::SessionManager as SessionManagerV1;

const READERS: usize = 4;
const LOOKUPS_PER_READER: usize = 2_000;
/// Readers yield every this many lookups and the creator after every
/// creation, alike for every manager. Without yields, tokio's cooperative
/// scheduling lets whichever task never suspends hold one of the two
/// threads, and the numbers measure scheduling instead of the managers (a
/// creator yielding every 64 creations cut this crate's lookups fourfold).
const YIELD_EVERY: usize = 64;
/// The creation rate of the paced group: below what this crate and
/// `LocalSessionManager` sustain at every size here.
const PACED_CREATES_PER_SEC: f64 = 20_000.0;

/// The creator republishes the readers' snapshot of live ids after every
/// `live / REPUBLISH_PARTS` creations.
const REPUBLISH_PARTS: usize = 20;

/// What one manager's bench counted while it ran (warm-up included).
#[derive(Default)]
struct Counts {
    creates: u64,
    creating: Duration,
    lookups: u64,
    found: u64,
}

/// The ids readers look up: replaced by the creator, cloned (one `Arc`) by
/// each reader at every yield.
type Snapshot<Id> = Arc<RwLock<Arc<Vec<Id>>>>;

fn publish<Id: Clone, T>(snapshot: &RwLock<Arc<Vec<Id>>>, held: &VecDeque<(Id, T)>) {
    let ids = Arc::new(held.iter().map(|(id, _)| id.clone()).collect());
    // The old snapshot is released after the lock (by the last reader
    // holding it, or here).
    let old = std::mem::replace(&mut *snapshot.write().unwrap(), ids);
    drop(old);
}

/// Benchmarks one manager: `$create` makes a session at the full cap (the
/// creator holds its handle), `$retire` ends the oldest handle, `$lookup`
/// is the request-path check.
macro_rules! bench_manager {
    ($group:expr, $rt:expr, $rates:expr, $pace:expr, $name:literal, $live:expr, $manager:expr,
     create: |$cm:ident| $create:expr,
     retire: |$rm:ident, $old:ident| $retire:expr,
     lookup: |$lm:ident, $id:ident| $lookup:expr $(,)?) => {{
        let manager = Arc::new($manager);
        let held = Arc::new(Mutex::new(VecDeque::new()));
        let snapshot: Snapshot<_> = Arc::new(RwLock::new(Arc::new(Vec::new())));
        let republish_every = ($live / REPUBLISH_PARTS).max(1) as u64;
        let counts = Arc::new(Mutex::new(Counts::default()));
        $group.bench_with_input(BenchmarkId::new($name, $live), &$live, |b, _| {
            // Filled here, not before: a bench filtered out of the run costs
            // nothing (filling mcp-session to 10,000 takes seconds).
            if held.lock().unwrap().is_empty() {
                $rt.block_on(async {
                    for _ in 0..$live {
                        let $cm = &*manager;
                        let created = $create;
                        held.lock().unwrap().push_back(created);
                    }
                });
            }
            b.iter_custom(|iters| {
                // Fresh ids for this call, outside the timed part: the
                // creator's count restarts with every call.
                publish(&snapshot, &held.lock().unwrap());
                $rt.block_on(async {
                    let stop = Arc::new(AtomicBool::new(false));
                    let creator = tokio::spawn({
                        let (manager, held, snapshot, stop, counts) = (
                            manager.clone(),
                            held.clone(),
                            snapshot.clone(),
                            stop.clone(),
                            counts.clone(),
                        );
                        async move {
                            let start = Instant::now();
                            let mut creates = 0u64;
                            let pace: Option<f64> = $pace;
                            while !stop.load(Ordering::Relaxed) {
                                if let Some(per_second) = pace
                                    && creates as f64 > start.elapsed().as_secs_f64() * per_second
                                {
                                    // Ahead of the pace: give the readers the core.
                                    tokio::time::sleep(Duration::from_millis(1)).await;
                                    continue;
                                }
                                let $cm = &*manager;
                                let created = $create;
                                let $old = {
                                    let mut held = held.lock().unwrap();
                                    held.push_back(created);
                                    held.pop_front().expect("filled")
                                };
                                let $rm = &*manager;
                                $retire;
                                creates += 1;
                                if creates % republish_every == 0 {
                                    publish(&snapshot, &held.lock().unwrap());
                                }
                                tokio::task::yield_now().await;
                            }
                            let mut counts = counts.lock().unwrap();
                            counts.creates += creates;
                            counts.creating += start.elapsed();
                        }
                    });
                    let start = Instant::now();
                    let readers: Vec<_> = (0..READERS)
                        .map(|reader| {
                            let (manager, snapshot) = (manager.clone(), snapshot.clone());
                            tokio::spawn(async move {
                                let mut ids = snapshot.read().unwrap().clone();
                                let mut found = 0u64;
                                for i in 0..iters as usize * LOOKUPS_PER_READER {
                                    let $id = &ids[(i * 7 + reader) % ids.len()];
                                    let $lm = &*manager;
                                    found += u64::from($lookup);
                                    if i % YIELD_EVERY == 0 {
                                        tokio::task::yield_now().await;
                                        ids = snapshot.read().unwrap().clone();
                                    }
                                }
                                found
                            })
                        })
                        .collect();
                    let mut found = 0;
                    for reader in readers {
                        found += black_box(reader.await.unwrap());
                    }
                    let elapsed = start.elapsed();
                    stop.store(true, Ordering::Relaxed);
                    creator.await.unwrap();
                    let mut counts = counts.lock().unwrap();
                    counts.found += found;
                    counts.lookups += iters * (READERS * LOOKUPS_PER_READER) as u64;
                    elapsed
                })
            });
        });
        let counts = counts.lock().unwrap();
        $rates.push((
            format!("{}/{}", $name, $live),
            counts.creates as f64 / counts.creating.as_secs_f64().max(1e-9),
            counts.found as f64 / counts.lookups.max(1) as f64,
        ));
    }};
}

fn lookup_under_churn(c: &mut Criterion) {
    run_group(c, "lookup_under_churn", None);
}

fn lookup_under_paced_churn(c: &mut Criterion) {
    run_group(c, "lookup_under_paced_churn", Some(PACED_CREATES_PER_SEC));
}

fn run_group(c: &mut Criterion, name: &str, pace: Option<f64>) {
    let rt = runtime();
    let mut group = c.benchmark_group(name);
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3))
        .throughput(Throughput::Elements((READERS * LOOKUPS_PER_READER) as u64));
    let mut rates: Vec<(String, f64, f64)> = Vec::new();
    for live in LIVE {
        bench_manager!(
            group, rt, rates, pace, "bounded", live,
            BoundedSessionManager::new(SessionConfig::default(), live),
            create: |m| m.create_session().await.unwrap(),
            // The creation evicted the oldest; its handle is just dropped.
            retire: |_m, oldest| drop(oldest),
            lookup: |m, id| m.has_session(id).await.unwrap(),
        );
        bench_manager!(
            group, rt, rates, pace, "rmcp_local", live,
            LocalSessionManager::default(),
            create: |m| m.create_session().await.unwrap(),
            retire: |m, oldest| m.close_session(&oldest.0).await.unwrap(),
            lookup: |m, id| m.has_session(id).await.unwrap(),
        );
        bench_manager!(
            group, rt, rates, pace, "mcp_session", live,
            mcp_session::BoundedSessionManager::new(mcp_session::SessionConfig::default(), live),
            create: |m| m.create_session().await.unwrap(),
            retire: |_m, oldest| drop(oldest),
            lookup: |m, id| m.has_session(id).await.unwrap(),
        );
    }
    group.finish();
    for (manager, per_second, found) in rates {
        if per_second == 0.0 {
            continue; // filtered out of this run
        }
        println!(
            "{name}/{manager}: creator sustained {per_second:.0} creates/s; {:.1} % of lookups found their session",
            found * 100.0
        );
    }
}

criterion_group!(benches, lookup_under_churn, lookup_under_paced_churn);
criterion_main!(benches);
