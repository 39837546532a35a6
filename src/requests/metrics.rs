//! Metrics of request admission (feature `metrics`).
//!
//! | name | type | labels | value |
//! |---|---|---|---|
//! | `mcp_requests_in_flight` | gauge | none | request units in flight |
//! | `mcp_listen_streams` | gauge | none | listen streams open |
//! | `mcp_requests_refused_total` | counter | `reason` | refusals: `request_quota`, `request_rate`, `at_capacity`, `listen_quota`, `listen_at_capacity`, `draining` |

use crate::refusal::{Refusal, RequestRefusal};

const IN_FLIGHT: &str = "mcp_requests_in_flight";
const LISTENING: &str = "mcp_listen_streams";
const REFUSED: &str = "mcp_requests_refused_total";

pub(crate) fn requests(in_flight: usize) {
    ::metrics::gauge!(IN_FLIGHT).set(in_flight as f64);
}

pub(crate) fn listening(open: usize) {
    ::metrics::gauge!(LISTENING).set(open as f64);
}

pub(crate) fn refused(refused: RequestRefusal) {
    ::metrics::counter!(REFUSED, "reason" => Refusal::from(refused).label()).increment(1);
}
