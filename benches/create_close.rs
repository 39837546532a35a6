//! Session creation then close, below the cap (no eviction): this crate
//! against rmcp 3.11's `LocalSessionManager` and `mcp-session` 0.2, with 100,
//! 1,000 and 10,000 other sessions live, in one run.
//!
//! ```text
//! cargo bench --bench create_close
//! ```

mod common;

use std::time::{Duration, Instant};

use common::{LIVE, runtime};
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use mcp_bounded_session::{BoundedSessionManager, SessionConfig};
use rmcp::transport::streamable_http_server::session::SessionManager;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp_v1::transport::streamable_http_server::session::SessionManager as SessionManagerV1;

/// `$live` sessions are created and held; each iteration creates one more,
/// closes it by id (what a DELETE does) and drops its transport.
macro_rules! bench_create_close {
    ($group:expr, $rt:expr, $name:literal, $live:expr, $manager:expr) => {{
        let manager = $manager;
        $group.bench_with_input(BenchmarkId::new($name, $live), &$live, |b, &live| {
            let held: Vec<_> = $rt.block_on(async {
                let mut held = Vec::with_capacity(live);
                for _ in 0..live {
                    held.push(manager.create_session().await.unwrap());
                }
                held
            });
            b.iter_custom(|iters| {
                $rt.block_on(async {
                    let start = Instant::now();
                    for _ in 0..iters {
                        let (id, transport) = manager.create_session().await.unwrap();
                        manager.close_session(&id).await.unwrap();
                        drop(transport);
                    }
                    start.elapsed()
                })
            });
            drop(held);
        });
    }};
}

fn create_close(c: &mut Criterion) {
    let rt = runtime();
    let mut group = c.benchmark_group("create_close");
    group
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    for live in LIVE {
        // Room for one more than `live`: the creation never evicts.
        bench_create_close!(
            group,
            rt,
            "bounded",
            live,
            BoundedSessionManager::new(SessionConfig::default(), live + 1)
        );
        bench_create_close!(
            group,
            rt,
            "rmcp_local",
            live,
            LocalSessionManager::default()
        );
        bench_create_close!(
            group,
            rt,
            "mcp_session",
            live,
            mcp_session::BoundedSessionManager::new(
                mcp_session::SessionConfig::default(),
                live + 1
            )
        );
    }
    group.finish();
}

criterion_group!(benches, create_close);
criterion_main!(benches);
