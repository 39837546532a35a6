//! Counts the bytes each thread allocates, to show that reading a
//! forwarding header allocates nothing in proportion to its length
//! (`client_keys::a_long_forwarding_header_costs_no_allocation`).
//!
//! It is this binary's global allocator (see `main.rs`), so every test runs
//! on it; the count is per thread, and libtest runs each test on a thread of
//! its own, so tests running at once never add to each other's count.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

pub struct Counting;

thread_local! {
    static ALLOCATED: Cell<usize> = const { Cell::new(0) };
}

// SAFETY: every call is passed on to `System` unchanged; the counter
// is a const-initialized thread local, which never allocates.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATED.with(|bytes| bytes.set(bytes.get() + layout.size()));
        // SAFETY: the caller's contract, passed on.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller's contract, passed on.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATED.with(|bytes| bytes.set(bytes.get() + new_size));
        // SAFETY: the caller's contract, passed on.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

/// Bytes this thread allocated so far.
pub fn allocated() -> usize {
    ALLOCATED.with(Cell::get)
}
