//! Loom models of `mcp-bounded-session`'s concurrent core live in `tests/`.
//!
//! Run them with the crate's loom stand-ins swapped in:
//!
//! ```text
//! RUSTFLAGS="--cfg mcp_bounded_session_loom" LOOM_MAX_PREEMPTIONS=3 \
//!     cargo test -p loom-tests --release
//! ```
//!
//! Without that cfg the models compile to nothing.
#![cfg(mcp_bounded_session_loom)]

use loom::sync::Arc;
use loom::sync::atomic::{AtomicUsize, Ordering};
use mcp_bounded_session::loom_api::{CloseReason, Registry, SessionStats, Stop};

/// A session that counts how often it was stopped.
#[derive(Debug, Clone)]
pub struct Probe {
    pub name: &'static str,
    pub stops: Arc<AtomicUsize>,
}

impl Probe {
    pub fn new(name: &'static str) -> Self {
        Self {
            name,
            stops: Arc::new(AtomicUsize::new(0)),
        }
    }

    pub fn stops(&self) -> usize {
        self.stops.load(Ordering::SeqCst)
    }
}

impl Stop for Probe {
    fn stop(&self, _reason: CloseReason) {
        self.stops.fetch_add(1, Ordering::SeqCst);
    }
}

/// Admits `probe` under its name, taking a slot: a free one, else the
/// first idle session's in the eviction order, else waiting for a close in
/// flight (the async path, driven by loom). Returns the admission number.
///
/// # Panics
///
/// Panics if nothing is evictable (every session busy): models that expect
/// a refusal use `try_create`.
pub fn create(registry: &Registry<Probe>, probe: Probe) -> u64 {
    try_create(registry, probe).expect("a slot: models call this with an idle session to evict")
}

/// [`create`], or `None` when the cap is full and no session is idle.
pub fn try_create(registry: &Registry<Probe>, probe: Probe) -> Option<u64> {
    let slot = loom::future::block_on(registry.acquire_slot())?;
    match registry.insert(slot, probe.name.into(), registry.draw_admission(), probe) {
        Ok(activity) => Some(activity.admission()),
        Err(_) => panic!("names are unique in a model"),
    }
}

/// At rest, every slot is free or owned by exactly one mapped session, and
/// the queue holds every live session plus the counted stale entries.
pub fn assert_conserved(stats: SessionStats) {
    assert!(stats.is_consistent(), "{stats:?}");
}
