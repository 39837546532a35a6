//! Two real `examples/server` processes sharing one Redis (127.0.0.1:6379, or
//! a test's private one) under a key prefix of the test's own: a session made on one instance is
//! restored on the other, its streams replay there, a DELETE on one ends
//! the copy on the other, a replay never crosses sessions, and a session's
//! standalone notifications reach its `GET` live from either instance.
//!
//! The example binary is the one `cargo test --features redis` builds
//! (`target/debug/examples/server`); every request is spoken by hand with
//! reqwest, so every header is the test's.

#[path = "../common/mod.rs"]
mod common;

mod deletes;
mod drain;
mod lost;
mod mcp;
mod processes;
mod replay;
mod restore;
mod standalone;
mod stateless;

use common::mcp::STATELESS_VERSION;
