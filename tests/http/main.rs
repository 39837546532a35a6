//! The behaviour tests, in one binary: most through real HTTP on 127.0.0.1
//! (axum, rmcp's `StreamableHttpService` behind the manager's layer, a
//! hand-written client or rmcp's own), some through the manager's API
//! (stress, churn, racing restores, the fuzz models). One module per topic.
//!
//! libtest runs the tests of every module at once, one thread each. What
//! that asks of them:
//!
//! - a test that loads the machine, and one whose checks depend on timing,
//!   take a guard from [`common::load`], which keeps the two apart;
//! - lifecycle events are recorded per test thread
//!   ([`common::record_lifecycle_events`]), so a test sees its own sessions
//!   only;
//! - the counting allocator below is the binary's global allocator; it
//!   counts per thread, so a test measures its own allocations only;
//! - every server listens on a free port (127.0.0.1:0), and nothing sets an
//!   environment variable or a process-wide metrics recorder.
//!
//! The tests that need a feature (`metrics`, `redis`) are targets of their
//! own, built only with it (`required-features`).

#[path = "../common/mod.rs"]
mod common;
#[path = "../models/mod.rs"]
mod models;

mod abandoned_handshake;
mod allocations;
mod any_event_store;
mod bad_input;
mod cap;
mod churn;
mod client_keys;
mod concurrent_restore;
mod drain;
mod expiry;
mod fairness;
mod listen_streams;
mod parking;
mod parking_races;
mod properties;
mod quota_race;
mod rate_limit;
mod replay;
mod request_admission;
mod restore;
mod rmcp_client;
mod stateless_replay;
mod store_resume;
mod stress;

#[global_allocator]
static COUNTING: allocations::Counting = allocations::Counting;
