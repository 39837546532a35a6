//! The replay ring against a list of every event (exact replay or the right
//! error), and event ids with one spelling each. The same checks run as unit
//! tests (`cargo test --lib replay_buffer event_id`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    mcp_bounded_session::fuzz_api::replay_ring_matches_model(data);
    mcp_bounded_session::fuzz_api::event_id_has_one_spelling(data);
});
