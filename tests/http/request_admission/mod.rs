//! Admission of requests in flight (issue 20) through real HTTP: rmcp's
//! own `StreamableHttpService` behind the manager's layer on loopback,
//! each client on its own 127.0.0.x source address (its own client key),
//! requests of protocol 2026-07-28 spoken by hand (`Mcp-Method`,
//! `Mcp-Name`, the protocol fields in `_meta`) and legacy sessions.
//!
//! The handler ([`common::admission`]) counts its running `hold` calls, so
//! a bound is checked where it matters: at the handlers.

mod python_sdk;
mod quotas;
mod rate;
mod release;
mod sessions;

use std::net::Ipv4Addr;
use std::time::Duration;

use crate::common::eventually;
use mcp_bounded_session::BoundedSessionManager;

/// Longest wait for a condition that holds at once on an idle machine.
const TIMEOUT: Duration = Duration::from_secs(20);

/// A hold long enough to outlast any test: every test releases its holds.
const LONG_MS: u64 = 60_000;

fn addr(last: u8) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 0, last)
}

/// Waits until the manager counts `units` request units in flight; panics
/// after [`TIMEOUT`].
async fn wait_in_flight(manager: &BoundedSessionManager, units: usize) {
    assert!(
        eventually(TIMEOUT, || manager.requests_in_flight() == units).await,
        "{} units in flight, never {units}",
        manager.requests_in_flight()
    );
}
