//! Arbitrary `Last-Event-ID` values against a live, initialized session:
//! a replay stream or an error, never a panic or a hang. The check is
//! shared with `tests/http/properties.rs`.
#![no_main]

#[path = "../../tests/models/last_event_id.rs"]
mod last_event_id;

libfuzzer_sys::fuzz_target!(|data: &[u8]| last_event_id::check(data));
