//! Per-client fairness: who a request comes from, and what each client may
//! create.
//!
//! - `key`: [`ClientKey`], bounded in size whatever it is made from, and
//!   (`key::derivation`) the rules that derive it from a request (the
//!   user's function, the peer address, trusted proxies' header);
//! - `forwarded`: trusted proxies by network, and reading the one header
//!   they write (`X-Forwarded-For` or `Forwarded`) from the right so that a
//!   client cannot choose the address read;
//! - `table`: per-client session quotas and exact rate limits, in memory
//!   bounded by the live sessions plus a fixed number of remembered keys;
//!   `limits` holds its configuration and its refusals.
//!
//! Each states its invariant in its own docs. The global cap and rate limit
//! stay the outer bounds; these only share them out fairly.

pub(crate) mod forwarded;
pub(crate) mod key;
pub(crate) mod limits;
pub(crate) mod table;

pub use key::ClientKey;
