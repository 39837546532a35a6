//! The client address behind trusted reverse proxies: [`TrustedProxies`],
//! named by network, and the one header they write (`X-Forwarded-For` or
//! RFC 7239 `Forwarded`).
//!
//! # Invariant kept here
//!
//! A client cannot choose the address read here, short of being inside a
//! trusted network. The header is read only when the connection's peer is a
//! trusted proxy, and then from the right, as each proxy appends the address
//! it received the request from: while an entry is a trusted proxy's
//! address, the next entry to its left was written by that proxy too; the
//! first entry that is not is the client, written by the outermost trusted
//! proxy (nginx's `real_ip_recursive` rule). Everything further left is the
//! client's own writing and is never looked at. This holds as long as every
//! trusted proxy appends to the configured header, which is why only that
//! one header is read: a proxy passes the other header through untouched,
//! so it is the client's to fill (with two proxies each writing a different
//! header, a rule reading both can be steered by a client writing the same
//! value into both).
//!
//! A chain whose deciding entry is not an address (`unknown`, an obfuscated
//! identifier, a quote left open) is [`Unreadable`]: the caller refuses the
//! request rather than key it by the peer, since a client able to reach that
//! case would otherwise move itself onto the proxy's key, shared with
//! everything else that arrives without a readable chain.

mod entries;
mod network;

use std::net::IpAddr;

use http::HeaderMap;
use http::header::FORWARDED;

use entries::{Entries, Syntax};
use network::Network;

const X_FORWARDED_FOR: &str = "x-forwarded-for";

/// The request's forwarding chain names no address where the client should
/// be; the request is refused (`400`), see the module docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum Unreadable {
    /// The first entry from the right that is not a trusted proxy is not an
    /// address.
    #[error(
        "the forwarding header's entry for the client is not an IP address \
         (unknown, obfuscated or malformed)"
    )]
    ClientEntry,
}

/// The reverse proxies in front of the server, and the header they append
/// the address of their own peer to.
#[derive(Clone)]
pub(crate) struct TrustedProxies {
    syntax: Syntax,
    networks: Vec<Network>,
}

impl TrustedProxies {
    /// Proxies at `networks` (`10.0.0.0/8`, `::1/128`, `192.0.2.7`)
    /// appending to `header` (`x-forwarded-for` or `forwarded`, in any
    /// case).
    ///
    /// # Panics
    ///
    /// Panics with what to write instead if the header is another one, a
    /// network is malformed, or there is none.
    #[track_caller]
    pub(crate) fn new<N: AsRef<str>>(header: &str, networks: impl IntoIterator<Item = N>) -> Self {
        let syntax = if header.eq_ignore_ascii_case(X_FORWARDED_FOR) {
            Syntax::XForwardedFor
        } else if header.eq_ignore_ascii_case(FORWARDED.as_str()) {
            Syntax::Forwarded
        } else {
            panic!(
                "trusted_proxies: the header must be \"x-forwarded-for\" or \"forwarded\" \
                 (the one your proxies append to), not {header:?}"
            );
        };
        // A loop, not a closure, so the panic points at the caller.
        let mut parsed = Vec::new();
        for text in networks {
            match Network::parse(text.as_ref()) {
                Ok(network) => parsed.push(network),
                Err(error) => panic!("trusted_proxies: {error}"),
            }
        }
        let networks = parsed;
        assert!(
            !networks.is_empty(),
            "trusted_proxies needs at least one network (such as 10.0.0.0/8); \
             leave it unset to key clients by their peer address"
        );
        Self { syntax, networks }
    }

    /// Whether `address` (in canonical form) is in one of the proxies'
    /// networks.
    pub(crate) fn trusts(&self, address: IpAddr) -> bool {
        self.networks
            .iter()
            .any(|network| network.contains(address))
    }

    /// The client of a request that arrived from `peer` with `headers`:
    /// the peer itself unless it is a trusted proxy, else the first entry
    /// from the right of the configured header that is not one (or the
    /// leftmost, if every entry is a trusted proxy; or the peer, if the
    /// header is absent: a request of the proxy's own, such as a health
    /// check). Addresses come out in canonical form (IPv4-mapped as IPv4).
    pub(crate) fn client(&self, peer: IpAddr, headers: &HeaderMap) -> Result<IpAddr, Unreadable> {
        let peer = peer.to_canonical();
        if !self.trusts(peer) {
            return Ok(peer);
        }
        let header = match self.syntax {
            Syntax::XForwardedFor => X_FORWARDED_FOR,
            Syntax::Forwarded => FORWARDED.as_str(),
        };
        let mut nearest = peer;
        for entry in Entries::new(self.syntax, headers.get_all(header).iter()) {
            let address = entry.ok_or(Unreadable::ClientEntry)?.to_canonical();
            if !self.trusts(address) {
                return Ok(address);
            }
            nearest = address;
        }
        Ok(nearest)
    }
}

impl std::fmt::Debug for TrustedProxies {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrustedProxies")
            .field("syntax", &self.syntax)
            .field("networks", &self.networks)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(lines: &[(&'static str, &str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for &(name, value) in lines {
            headers.append(name, HeaderValue::from_str(value).unwrap());
        }
        headers
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    fn xff_proxies(networks: &[&str]) -> TrustedProxies {
        TrustedProxies::new("X-Forwarded-For", networks)
    }

    fn client(proxies: &TrustedProxies, peer: &str, lines: &[(&'static str, &str)]) -> String {
        match proxies.client(ip(peer), &headers(lines)) {
            Ok(address) => address.to_string(),
            Err(error) => format!("unreadable: {error}"),
        }
    }

    #[test]
    fn a_peer_that_is_no_trusted_proxy_is_the_client_whatever_its_headers() {
        let proxies = xff_proxies(&["10.0.0.0/8"]);
        let spoof = [(X_FORWARDED_FOR, "6.6.6.6"), ("forwarded", "for=6.6.6.6")];
        assert_eq!(client(&proxies, "192.0.2.1", &spoof), "192.0.2.1");
        // Not even unreadable: the header is not looked at.
        let garbage = [(X_FORWARDED_FOR, "garbage")];
        assert_eq!(client(&proxies, "192.0.2.1", &garbage), "192.0.2.1");
    }

    #[test]
    fn the_chain_is_walked_from_the_right_while_entries_are_trusted() {
        let proxies = xff_proxies(&["10.0.0.0/8", "192.0.2.7"]);
        let chain = [(X_FORWARDED_FOR, "6.6.6.6, 203.0.113.7, 192.0.2.7, 10.1.1.1")];
        assert_eq!(client(&proxies, "10.0.0.1", &chain), "203.0.113.7");
        // A sender's entries further left are never read, garbage or not.
        let garbage = [(X_FORWARDED_FOR, "garbage, 10.9.9.9, 203.0.113.7")];
        assert_eq!(client(&proxies, "10.0.0.1", &garbage), "203.0.113.7");
    }

    #[test]
    fn all_trusted_is_the_leftmost_and_no_header_is_the_peer() {
        let proxies = xff_proxies(&["10.0.0.0/8"]);
        let internal = [(X_FORWARDED_FOR, "10.0.0.9, 10.0.0.8")];
        assert_eq!(client(&proxies, "10.0.0.1", &internal), "10.0.0.9");
        assert_eq!(client(&proxies, "10.0.0.1", &[]), "10.0.0.1");
        assert_eq!(
            client(&proxies, "10.0.0.1", &[(X_FORWARDED_FOR, " ,")]),
            "10.0.0.1"
        );
    }

    #[test]
    fn only_the_configured_header_is_read() {
        // The mixed chain of the review: the outer proxy (198.51.100.2)
        // writes only Forwarded, the inner (10.0.0.1) only X-Forwarded-For;
        // the client wrote 6.6.6.6 into both.
        let request = [
            ("forwarded", "for=6.6.6.6, for=203.0.113.9"),
            (X_FORWARDED_FOR, "6.6.6.6, 198.51.100.2"),
        ];
        // Trusting the X-Forwarded-For writer: the outer proxy is the
        // client (it does not write this header, so it cannot be trusted).
        let xff = xff_proxies(&["10.0.0.1"]);
        assert_eq!(client(&xff, "10.0.0.1", &request), "198.51.100.2");
        // Trusting the Forwarded writer: the real client. (The inner proxy
        // may be listed although it passes Forwarded through, as only the
        // listed outer proxy reaches it.)
        let forwarded = TrustedProxies::new("forwarded", ["10.0.0.1", "198.51.100.2"]);
        assert_eq!(client(&forwarded, "10.0.0.1", &request), "203.0.113.9");
        // A contradicting other header changes nothing.
        let contradicted = [
            (X_FORWARDED_FOR, "203.0.113.9"),
            ("forwarded", "for=1.1.1.1"),
        ];
        assert_eq!(client(&xff, "10.0.0.1", &contradicted), "203.0.113.9");
    }

    #[test]
    fn an_unreadable_client_entry_is_refused_not_keyed_by_the_peer() {
        let proxies = xff_proxies(&["10.0.0.0/8"]);
        for value in ["unknown", "192.0.2.1, garbage", "garbage, 10.0.0.5"] {
            let request = [(X_FORWARDED_FOR, value)];
            assert_eq!(
                proxies.client(ip("10.0.0.1"), &headers(&request)),
                Err(Unreadable::ClientEntry),
                "{value}"
            );
        }
        let forwarded = TrustedProxies::new("Forwarded", ["10.0.0.0/8"]);
        for value in ["for=_hidden", "proto=https", r#"for="6.6.6.6"#] {
            let request = [("forwarded", value)];
            assert_eq!(
                forwarded.client(ip("10.0.0.1"), &headers(&request)),
                Err(Unreadable::ClientEntry),
                "{value}"
            );
        }
    }

    #[test]
    fn addresses_are_compared_in_canonical_form() {
        let proxies = xff_proxies(&["10.0.0.0/8"]);
        let request = [(X_FORWARDED_FOR, "::ffff:203.0.113.7, ::ffff:10.0.0.2")];
        assert_eq!(client(&proxies, "::ffff:10.0.0.1", &request), "203.0.113.7");
    }

    #[test]
    #[should_panic(expected = "must be \"x-forwarded-for\" or \"forwarded\"")]
    fn another_header_panics() {
        let _ = TrustedProxies::new("x-real-ip", ["10.0.0.0/8"]);
    }

    #[test]
    #[should_panic(expected = "trusted_proxies: `10.0.0.1/8` has bits set past its /8")]
    fn a_malformed_network_panics_with_the_reason() {
        let _ = TrustedProxies::new("forwarded", ["10.0.0.1/8"]);
    }

    #[test]
    #[should_panic(expected = "at least one network")]
    fn no_network_panics() {
        let _ = TrustedProxies::new("forwarded", Vec::<String>::new());
    }
}
