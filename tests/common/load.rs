//! Tests that load the machine, and tests whose checks depend on timing,
//! kept apart.
//!
//! libtest runs the tests of one binary at once, one thread each (as many
//! as the machine has cores). A test that keeps more than one core busy (a
//! sampler spinning on a counter beside a multi-thread runtime, threads or
//! tasks racing each other) starves whatever runs beside it, and needs the
//! cores to itself for its threads to meet at all; a test that checks a
//! window, a timeout of a few hundred milliseconds or that a stream stays
//! open for 300 ms can fail beside it, or stop seeing what it is there to
//! see. So:
//!
//! - a heavy test takes [`heavy`] first: it runs while no other guarded
//!   test does;
//! - a test that depends on timing takes [`timed`] first: it runs beside
//!   other timed tests and beside unguarded ones, never beside a heavy one.
//!
//! Tests that take neither do not depend on timing beyond waits of seconds
//! and keep at most one core busy (a long single-threaded loop such as the
//! million create/close cycles, or the request soak, which mostly waits on
//! its clients' timeouts). Nothing is skipped: a guard only waits.

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
