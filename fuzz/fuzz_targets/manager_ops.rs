//! The manager under arbitrary operation sequences, checked against a
//! sequential model (cap, oldest-first eviction, gone after close, exact
//! rate limit). The model is shared with `tests/http/properties.rs`.
#![no_main]

#[path = "../../tests/models/manager.rs"]
mod manager;

libfuzzer_sys::fuzz_target!(|data: &[u8]| manager::check(data));
