//! An exactly bounded session manager for rmcp's Streamable HTTP server, with
//! no global lock on the request path.
//!
//! [`BoundedSessionManager`] implements rmcp's `SessionManager`: it keeps
//! every client's session in memory, never more than a configured cap (when
//! full, the least recently active idle session is evicted, never one with
//! a request in flight, under any concurrency), optionally
//! rate-limits session creation over an exact rolling window, and frees a
//! session's slot the moment it ends (DELETE, eviction, idle or init
//! timeout, maximum lifetime, handler exit).
//!
//! It is source-compatible with `mcp-session` 0.2: migrating is renaming
//! `mcp_session` to `mcp_bounded_session` in `use` lines.
//!
//! With the `redis` feature, `RedisStores` lets several instances share
//! sessions and replays (rmcp's `SessionStore` and `EventStore` on Redis);
//! [`MemoryEventStore`] makes stateless streams (protocol 2026-07-28)
//! resumable on one instance. With the layer ([`BoundedSessionManager::layer`]),
//! requests in flight, request rates and listen streams are bounded per
//! client for every request, with sessions or without (protocol
//! 2026-07-28).
//!
//! The [`guide`] explains each of these at length: status codes, fairness
//! and the threat model, protocol 2026-07-28, observability, replay,
//! several instances, migrating, internals, limits, and what checks each
//! guarantee.
//!
//! # Example
//!
//! ```no_run
//! use std::time::Duration;
//! use mcp_bounded_session::BoundedSessionManagerBuilder;
//!
//! let manager = BoundedSessionManagerBuilder::new(1_000)
//!     .idle_timeout(Duration::from_secs(15 * 60))
//!     .max_lifetime(Duration::from_secs(24 * 60 * 60))
//!     .rate_limit(100, Duration::from_secs(60))
//!     .build();
//! // Pass `manager` to rmcp's `StreamableHttpService::new(factory, manager, config)`.
//! # drop(manager);
//! ```
//!
//! # Where each guarantee is kept
//!
//! | guarantee | module |
//! |---|---|
//! | exact cap, slot hand-over, refusal when nothing is evictable | `registry` |
//! | eviction order: least recently active first, two tiers, policies | `eviction` |
//! | a busy session is never evicted; each idle session queued once | `eviction::activity` |
//! | bounded stale queue entries | `eviction::queue` |
//! | exact rolling-window rate limit | `rate_limiter` |
//! | client keys that clients cannot forge; per-client quotas and rate limits in bounded memory | `clients` |
//! | an ended session leaves at once; init, idle and lifetime deadlines; rmcp's late close ignored | `session` (`live`, `transport`) |
//! | message routing per stream, replay after a reconnection, bounded memory per session, no lock held across an await | `session` (`shared`, `routing`, `event_stream`, `standalone`, `connection`) |
//! | a fixed ring per stream: exactly the kept events after an index, or why not | `replay_buffer` |
//! | event ids: rmcp's format, one spelling per id | `event_id` |
//! | the `SessionManager` wiring | `manager` |
//! | the `on_close` hook cannot break a close; one 90 % warning per crossing; metrics | `observe` |
//! | loom-visible stand-ins for the primitives (model checking) | `sync` |
//! | 429 / 404 / 503 instead of rmcp's 500 for refusals: one reason gives the status, `Retry-After`, the answer, the metric label and the error | `refusal` (recorded by `http`) |
//! | requests in flight and listen streams: exact global and per-client bounds, per-client request rates, for every request (2026-07-28 and sessions) | `requests` (`table`, `budget`, `body`) |
//! | stored event ids: one spelling, stream and generation in the id | `store::stored_id` |
//! | a bounded in-memory event store: total and per-stream bounds, TTL | `store::memory` |
//! | a stateless resumption never replays a session's events | `store::stateless` |
//! | Redis: keys with TTLs, exact trimming, DELETEs reaching every instance, outages survived | `store::redis` (`events`, `sessions`, `deletions`, `upkeep`) |
//!
//! # Words used throughout
//!
//! - **session**: a client's MCP session of a protocol before 2026-07-28,
//!   from `initialize` to its end; a **generation** tells one life of a
//!   session id from another (an id restored after it ended is a new one).
//! - **client key**: who a request comes from ([`ClientKey`]): its address
//!   (an IPv6 client by its network), a trusted proxy's word for it, or
//!   your own function's answer. Quotas and rates are per client key.
//! - **slot**: one place under the session cap; a live session holds one.
//! - **lease**: what rmcp holds of a live session while it runs its
//!   handler; a lease that ends after its session was replaced leaves a
//!   late-close marker, so that rmcp's late close cannot end the newer one.
//! - **stream**: one sequence of server-to-client messages (a request's
//!   answer, a session's standalone stream, a stateless call's); an
//!   **event** is one message of it, with an id a client can resume from.
//! - **store**: where events (rmcp's `EventStore`) or sessions (its
//!   `SessionStore`) are kept beyond one connection or instance.
//! - **admission**: letting something in under the limits, or refusing
//!   it with an answer the client can act on (`refusal`): a new
//!   session (its slot, its client's quota unit and rate grants, taken
//!   together in `manager::admission`) or a request or listen stream
//!   (its units, in `requests`).
//! - **unit**: one request's share of the request bounds (a request costs
//!   one unit unless a cost function says more); the server's units form
//!   the request **budget**.

#![warn(missing_docs)]
// Internal items are `pub(crate)`: `pub` marks the API alone.
#![warn(unreachable_pub)]
// On docs.rs (which builds with `--cfg docsrs`), mark what a feature adds.
#![cfg_attr(docsrs, feature(doc_cfg))]

mod clients;
mod close_reason;
mod config;
mod drain;
mod error;
mod event_id;
mod eviction;
pub mod guide;
mod http;
mod manager;
// Until the manager reports to it; the expectation then fails, as a reminder
// to remove this line.
mod observe;
mod rate_limiter;
mod refusal;
mod registry;
mod replay_buffer;
mod requests;
mod session;
mod store;
mod sync;

pub use clients::ClientKey;
pub use close_reason::CloseReason;
pub use config::{BoundedSessionManagerBuilder, SessionConfig};
pub use drain::DrainSummary;
pub use error::{BoundedSessionError, TransportError};
pub use event_id::EventIdError;
pub use eviction::{AtCapacity, EvictionPolicy};
pub use http::{BoundedSessionLayer, BoundedSessionService};
pub use manager::BoundedSessionManager;
pub use registry::SessionStats;
pub use replay_buffer::ReplayError;
pub use requests::{ListenAtQuota, RequestInfo};
pub use rmcp::transport::streamable_http_server::session::SessionId;
pub use session::{SessionHandle, SessionTransport};
pub use store::{
    MemoryEventStore, MemoryEventStoreBuilder, MemorySessionStore, MemorySessionStoreBuilder,
    StoreError,
};
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub use store::{RedisEventStore, RedisSessionStore, RedisStores, RedisStoresBuilder};

/// Checks of internal pieces against simple models, for the fuzz targets in
/// `fuzz/` (cargo-fuzz builds with `--cfg fuzzing`). Not part of the API.
#[cfg(fuzzing)]
#[doc(hidden)]
pub mod fuzz_api {
    /// See `replay_buffer::check_against_model`.
    pub fn replay_ring_matches_model(data: &[u8]) {
        crate::replay_buffer::check_against_model(data);
    }
    /// See `event_id::check_one_spelling`.
    pub fn event_id_has_one_spelling(data: &[u8]) {
        crate::event_id::check_one_spelling(data);
    }
}

/// Compiles the README's Rust snippets as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
