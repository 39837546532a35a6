//! Per-client fairness: who a request comes from, and what each client may
//! create.
//!
//! - `key`: [`ClientKey`] and the rules that derive it from a request (the
//!   user's function, the peer address, trusted proxies' headers);
//! - `forwarded`: reading `X-Forwarded-For` and `Forwarded` so that a client
//!   cannot choose the address read.
//!
//! Each states its invariant in its own docs. The global cap and rate limit
//! stay the outer bounds; these only share them out fairly.

mod forwarded;
// Until the manager uses it: the HTTP layer derives keys.
#[allow(dead_code)]
pub(crate) mod key;

pub use key::ClientKey;
