//! Per-client fairness: who a request comes from, and what each client may
//! create.
//!
//! - `key`: [`ClientKey`], bounded in size whatever it is made from, and
//!   (`key::derivation`) the rules that derive it from a request (the
//!   user's function, the peer address, trusted proxies' header);
//! - `forwarded`: trusted proxies by network, and reading the one header
//!   they write (`X-Forwarded-For` or `Forwarded`) from the right so that a
//!   client cannot choose the address read;
//! - `keyed`: per-key state in memory bounded by the keys in use plus a
//!   fixed number of remembered idle keys, for both tables;
//! - `table`: per-client session quotas and exact rate limits;
//!   `limits` holds its configuration and its refusals (the per-client
//!   bounds on requests and listen streams are in [`crate::requests`]).
//!
//! Each states its invariant in its own docs. The global cap and rate limit
//! stay the outer bounds; these only share them out fairly.

pub(crate) mod forwarded;
pub(crate) mod key;
pub(crate) mod keyed;
pub(crate) mod limits;
pub(crate) mod table;

pub use key::ClientKey;
