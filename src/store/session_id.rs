//! Which session ids a store accepts: only ids this crate could have
//! issued.
//!
//! # Invariant kept here
//!
//! No client-supplied session id reaches a store (a Redis key, a pending
//! DELETE kept in memory, a local mark) unless it has the one shape rmcp's
//! `session_id()` gives every session: a UUID, 36 bytes, lowercase
//! hexadecimal in groups of 8-4-4-4-12. rmcp hands the session store any
//! `Mcp-Session-Id` a client sends (up to 10 KB), with no session behind it;
//! refusing other shapes up front bounds what such an id can cost (a key,
//! a queued DELETE during an outage) to 36 bytes, and they name no session
//! anyway. Every path by which a client's id reaches a store calls
//! [`is_session_id`]: the session store's `load`, `store` and `delete`, and
//! the manager's restore.

/// The length of a hyphenated UUID.
const LEN: usize = 36;

/// Whether `id` has the shape of a session id this crate issues (rmcp's
/// `session_id()`: a lowercase hyphenated UUID).
pub(crate) fn is_session_id(id: &str) -> bool {
    id.len() == LEN
        && id.bytes().enumerate().all(|(at, byte)| match at {
            8 | 13 | 18 | 23 => byte == b'-',
            _ => byte.is_ascii_digit() || (b'a'..=b'f').contains(&byte),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_shape_rmcp_issues_is_a_session_id() {
        for _ in 0..100 {
            let issued = rmcp::transport::common::server_side_http::session_id();
            assert!(is_session_id(&issued), "{issued}");
        }
        let good = "0b7e1c2a-5f7e-4c1b-9d7e-1c2a5f7e4c1b";
        assert!(is_session_id(good));
        for bad in [
            "",
            "sess-1",
            "0B7E1C2A-5F7E-4C1B-9D7E-1C2A5F7E4C1B",
            "0b7e1c2a5f7e4c1b9d7e1c2a5f7e4c1b",
            "0b7e1c2a-5f7e-4c1b-9d7e-1c2a5f7e4c1b0",
            "0b7e1c2a-5f7e-4c1b-9d7e-1c2a5f7e4c1",
            "0b7e1c2a-5f7e-4c1b-9d7e-1c2a5f7e4c1g",
            "0b7e1c2a_5f7e-4c1b-9d7e-1c2a5f7e4c1b",
            "0b7e1c2a-5f7e-4c1b-9d7e:1c2a5f7e4c1b",
            "0b7e1c2a-5f7e-4c1b-9d7é-1c2a5f7e4c1",
        ] {
            assert!(!is_session_id(bad), "{bad:?}");
        }
        assert!(!is_session_id(&"a".repeat(10 * 1024)));
    }
}
