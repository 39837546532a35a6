//! What every bench shares: the runtime they measure on and the sizes.
#![allow(dead_code, reason = "each bench uses its own part of it")]

/// Live-session counts each comparison is run at.
pub const LIVE: [usize; 3] = [100, 1_000, 10_000];

/// A multi-thread tokio runtime with one worker per core of the 2-core
/// machine the benchmarks are reported for.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}
