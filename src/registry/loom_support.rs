//! What the loom models of the registry, the eviction order and the
//! eviction queue share: sessions that count their stops and can hold
//! their own close in flight, and the admission steps every model takes.
//!
//! The models live in a `loom_tests` module beside the module each checks
//! (`src/**/loom_tests.rs`); they and this module exist only in test
//! builds with `--cfg mcp_bounded_session_loom`. Run them as `.ci/run`
//! does:
//!
//! ```text
//! RUSTFLAGS="--cfg mcp_bounded_session_loom" LOOM_MAX_PREEMPTIONS=3 \
//!     cargo test --lib --release loom_tests::
//! ```

use std::sync::Arc as StdArc;

use super::{Registry, SessionStats, Stop};
use crate::close_reason::CloseReason;
use crate::eviction::activity::Activity;
use loom::sync::Arc;
use loom::sync::Notify;
use loom::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// A session that counts how often it was stopped, and may hold the close
/// that removes it in flight (see [`Gate`]).
#[derive(Debug, Clone)]
pub(crate) struct Probe {
    pub(crate) name: &'static str,
    pub(crate) stops: Arc<AtomicUsize>,
    gate: Option<Arc<Gate>>,
    /// Streams open, counted under a lock as the session's own lock
    /// counts its responses.
    pub(crate) streams: Arc<loom::sync::Mutex<usize>>,
}

impl Probe {
    pub(crate) fn new(name: &'static str) -> Self {
        Self {
            name,
            stops: Arc::new(AtomicUsize::new(0)),
            gate: None,
            streams: Arc::new(loom::sync::Mutex::new(0)),
        }
    }

    /// A session whose removal (close or eviction) stops at `gate` after
    /// it left the map and before its slot is free: a close held in
    /// flight, counted in `closing`, for as long as the model wants.
    pub(crate) fn gated(name: &'static str, gate: Arc<Gate>) -> Self {
        Self {
            gate: Some(gate),
            ..Self::new(name)
        }
    }

    pub(crate) fn stops(&self) -> usize {
        self.stops.load(Ordering::SeqCst)
    }
}

impl Stop for Probe {
    fn stop(&self, _reason: CloseReason, _generation: u64) {
        self.stops.fetch_add(1, Ordering::SeqCst);
    }

    fn claim_if_quiet(&self, claim: &mut dyn FnMut() -> bool) -> bool {
        let streams = self.streams.lock().unwrap();
        *streams == 0 && claim()
    }

    fn left_registry(&mut self) {
        if let Some(gate) = &self.gate {
            gate.entered.set();
            gate.released.wait();
        }
    }
}

/// Where a gated session's removal waits (see [`Probe::gated`]).
#[derive(Debug)]
pub(crate) struct Gate {
    entered: Signal,
    released: Signal,
}

impl Gate {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Self {
            entered: Signal::new(),
            released: Signal::new(),
        })
    }

    /// Waits until the removal reached the gate.
    pub(crate) fn wait_entered(&self) {
        self.entered.wait();
    }

    /// Lets the removal go on.
    pub(crate) fn release(&self) {
        self.released.set();
    }
}

/// A one-way flag one thread waits for. Blocks (loom's `Notify`, whose
/// wake-ups may be spurious, hence the flag) rather than spinning: loom
/// explores far fewer schedules.
#[derive(Debug)]
pub(crate) struct Signal {
    set: AtomicBool,
    notify: Notify,
}

impl Signal {
    pub(crate) fn new() -> Self {
        Self {
            set: AtomicBool::new(false),
            notify: Notify::new(),
        }
    }

    pub(crate) fn set(&self) {
        self.set.store(true, Ordering::SeqCst);
        self.notify.notify();
    }

    /// Returns once [`Self::set`] ran (one waiting thread at a time).
    pub(crate) fn wait(&self) {
        while !self.set.load(Ordering::SeqCst) {
            self.notify.wait();
        }
    }
}

impl Default for Signal {
    fn default() -> Self {
        Self::new()
    }
}

/// The standing of the live session `name`.
pub(crate) fn activity_of(registry: &Registry<Probe>, name: &str) -> StdArc<Activity> {
    registry
        .with_activity(&name.into(), |_, activity| activity.clone())
        .expect("live")
}

/// Admits `probe` under its name, taking a slot: a free one, else the
/// first idle session's in the eviction order, else waiting for a close in
/// flight (the async path, driven by loom). Returns the generation.
///
/// # Panics
///
/// Panics if nothing is evictable (every session busy): models that expect
/// a refusal use `try_create`.
pub(crate) fn create(registry: &Registry<Probe>, probe: Probe) -> u64 {
    try_create(registry, probe).expect("a slot: models call this with an idle session to evict")
}

/// [`create`], or `None` when the cap is full and no session is idle.
pub(crate) fn try_create(registry: &Registry<Probe>, probe: Probe) -> Option<u64> {
    let slot = loom::future::block_on(registry.acquire_slot())?;
    match registry.insert(slot, probe.name.into(), registry.draw_generation(), probe) {
        Ok(activity) => Some(activity.generation()),
        Err(_) => panic!("names are unique in a model"),
    }
}

/// At rest, every slot is free or owned by exactly one mapped session, and
/// the queue holds every live session plus the counted stale entries.
pub(crate) fn assert_conserved(stats: SessionStats) {
    assert!(stats.is_consistent(), "{stats:?}");
}
