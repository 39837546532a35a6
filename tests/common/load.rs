//! Tests that load the machine, and tests whose checks depend on timing,
//! kept apart.
//!
//! libtest runs the tests of one binary at once, one thread each. A test
//! that keeps cores busy for a while (a stress loop, a flood, a sampler
//! spinning on a counter) starves whatever runs beside it; a test that
//! checks a window, a timeout of a few hundred milliseconds or that a
//! stream stays open for 300 ms can then fail, or stop seeing what it is
//! there to see. So:
//!
//! - a heavy test takes [`heavy`] first: it runs while no other guarded
//!   test does;
//! - a test that depends on timing takes [`timed`] first: it runs beside
//!   other timed tests and beside unguarded ones, never beside a heavy one.
//!
//! Tests that take neither are light and do not depend on timing beyond
//! waits of seconds. Nothing is skipped: a guard only waits.

use tokio::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

static LOAD: RwLock<()> = RwLock::const_new(());

/// Waits until no other guarded test runs; held for the whole test.
pub async fn heavy() -> RwLockWriteGuard<'static, ()> {
    LOAD.write().await
}

/// [`heavy`], for a test that runs without an async runtime.
pub fn heavy_blocking() -> RwLockWriteGuard<'static, ()> {
    LOAD.blocking_write()
}

/// Waits until no heavy test runs; held for the whole test.
pub async fn timed() -> RwLockReadGuard<'static, ()> {
    LOAD.read().await
}
