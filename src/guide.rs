//! Guides: the long explanations behind the API, one module each, rendered
//! here and kept as Markdown in the repository's `docs/guide/`. Their
//! examples are compiled and run as doc tests.
//!
//! - [`status_codes`]: what the layer answers each refusal with;
//! - [`fairness`]: eviction, who a client is, quotas and rate limits,
//!   binding, the threat model;
//! - [`protocol_2026_07_28`]: requests in flight, request rates and listen
//!   streams, for clients without sessions;
//! - [`observability`]: close reasons, the `on_close` hook, metrics;
//! - [`replay`]: `Last-Event-ID`, shadow streams, backpressure, memory;
//! - [`instances`]: several instances on Redis, `MemoryEventStore`;
//! - [`deploys`]: draining an instance before it stops;
//! - [`parking`]: evicted and idle sessions kept in a few hundred bytes,
//!   restored on their next request;
//! - [`migrating`]: from `mcp-session`, and the alternatives compared;
//! - [`internals`] and [`limits`];
//! - [`correctness`]: what checks each guarantee.

#[doc = include_str!("../docs/guide/status_codes.md")]
pub mod status_codes {}

#[doc = include_str!("../docs/guide/fairness.md")]
pub mod fairness {}

#[doc = include_str!("../docs/guide/protocol_2026_07_28.md")]
pub mod protocol_2026_07_28 {}

#[doc = include_str!("../docs/guide/observability.md")]
pub mod observability {}

#[doc = include_str!("../docs/guide/replay.md")]
pub mod replay {}

#[doc = include_str!("../docs/guide/instances.md")]
pub mod instances {}

#[doc = include_str!("../docs/guide/deploys.md")]
pub mod deploys {}

#[doc = include_str!("../docs/guide/parking.md")]
pub mod parking {}

#[doc = include_str!("../docs/guide/migrating.md")]
pub mod migrating {}

#[doc = include_str!("../docs/guide/internals.md")]
pub mod internals {}

#[doc = include_str!("../docs/guide/limits.md")]
pub mod limits {}

#[doc = include_str!("../docs/guide/correctness.md")]
pub mod correctness {}
