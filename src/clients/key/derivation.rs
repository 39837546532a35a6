//! How the HTTP layer derives a request's [`ClientKey`]: [`KeyDerivation`].
//!
//! # Invariant kept here
//!
//! A client cannot choose its key, short of the deployment trusting it to,
//! nor move onto a key it shares with other clients: the key is the user's
//! own function's answer, or the peer address of the connection, or the
//! address trusted proxies wrote about their own peer (see `forwarded`),
//! never an address the request merely claims. A request from a trusted
//! proxy whose chain cannot be read is refused ([`Unreadable`]) rather than
//! keyed by the proxy: such a fallback key would be shared by everything
//! the proxy sends without a readable chain (its health checks, say), and a
//! client that exhausted its own key could move onto it.
//!
//! # Finding the peer address
//!
//! `http::Extensions` is keyed by type, so the peer address can only be read
//! under a type this crate names. axum records it as
//! `axum::extract::ConnectInfo<SocketAddr>` (with
//! `into_make_service_with_connect_info::<SocketAddr>()`); hyper and tower
//! servers have no standard type and can insert a bare `SocketAddr`. Both
//! are read, and a bare `SocketAddr` wins: nothing inserts one but the
//! application's own code, and the only reason to is to name the peer where
//! the socket's address is not it (a PROXY-protocol middleware behind a TCP
//! load balancer, whose `ConnectInfo` is the balancer). axum's type is read
//! under the default-on `axum` feature, which depends on axum without its
//! default features (only its `tokio` feature, where `ConnectInfo` lives).
//! Asking axum users to copy `ConnectInfo` into a bare `SocketAddr`
//! themselves would be a silent trap (forgotten, every client is
//! anonymous); the feature costs nothing to those who serve with axum
//! anyway, and others can turn it off. It is axum 0.8's type: with another
//! major version of axum, insert a bare `SocketAddr`.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use http::request::Parts;

use super::{ClientKey, validate_ipv6_prefix};
use crate::clients::forwarded::{TrustedProxies, Unreadable};

/// The user's function from a request to a key; `None` defers to the
/// address rules.
pub(crate) type CustomKey = Arc<dyn Fn(&Parts) -> Option<ClientKey> + Send + Sync>;

/// How the HTTP layer derives a request's [`ClientKey`]:
///
/// 1. the user's function, if set and it answers `Some`;
/// 2. else the peer address (see the module docs for where it is read);
///    with trusted proxies, if the peer is one of them, the address they
///    recorded instead (`forwarded` says how), or [`Unreadable`] if their
///    chain names none;
/// 3. no peer address at all: [`ClientKey::anonymous`]. This is logged
///    once, not per request, since it means the server records no peer
///    addresses and every client shares one key.
pub(crate) struct KeyDerivation {
    ipv6_prefix: u8,
    trusted_proxies: Option<TrustedProxies>,
    custom: Option<CustomKey>,
    warned_no_peer: AtomicBool,
    warned_unreadable: AtomicBool,
}

impl KeyDerivation {
    /// IPv6 clients are grouped by /64 unless configured otherwise.
    pub(crate) const DEFAULT_IPV6_PREFIX: u8 = 64;

    /// The defaults: peer addresses, IPv6 grouped by /64, no trusted proxy,
    /// no custom function.
    pub(crate) fn new() -> Self {
        Self {
            ipv6_prefix: Self::DEFAULT_IPV6_PREFIX,
            trusted_proxies: None,
            custom: None,
            warned_no_peer: AtomicBool::new(false),
            warned_unreadable: AtomicBool::new(false),
        }
    }

    /// # Panics
    ///
    /// Panics if `prefix` is over 128.
    pub(crate) fn ipv6_prefix(mut self, prefix: u8) -> Self {
        validate_ipv6_prefix(prefix);
        self.ipv6_prefix = prefix;
        self
    }

    pub(crate) fn trusted_proxies(mut self, proxies: Option<TrustedProxies>) -> Self {
        self.trusted_proxies = proxies;
        self
    }

    /// Whether `peer` is one of the trusted proxies.
    pub(crate) fn trusts_proxy(&self, peer: IpAddr) -> bool {
        self.trusted_proxies
            .as_ref()
            .is_some_and(|proxies| proxies.trusts(peer.to_canonical()))
    }

    pub(crate) fn custom(mut self, key: CustomKey) -> Self {
        self.custom = Some(key);
        self
    }

    /// The key of the request with these parts (see the type's docs).
    pub(crate) fn derive(&self, parts: &Parts) -> Result<ClientKey, Unreadable> {
        if let Some(key) = self.custom.as_ref().and_then(|custom| custom(parts)) {
            return Ok(key);
        }
        let Some(peer) = peer_address(&parts.extensions) else {
            if !self.warned_no_peer.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    "a request carries no peer address, so every client shares one anonymous \
                     key for per-client limits; serve axum apps with \
                     into_make_service_with_connect_info::<SocketAddr>(), or insert the \
                     peer's SocketAddr into the request extensions"
                );
            }
            return Ok(ClientKey::anonymous());
        };
        let client = match &self.trusted_proxies {
            None => peer,
            Some(proxies) => proxies.client(peer, &parts.headers).inspect_err(|error| {
                if !self.warned_unreadable.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        %peer,
                        "refusing a request from a trusted proxy: {error}; if your proxies \
                         write such entries for real clients, key clients another way \
                         (client_key) or have them write addresses"
                    );
                }
            })?,
        };
        Ok(ClientKey::from_ip(client, self.ipv6_prefix))
    }
}

impl Default for KeyDerivation {
    fn default() -> Self {
        Self::new()
    }
}

/// A clone warns on its own once more, which is harmless.
impl Clone for KeyDerivation {
    fn clone(&self) -> Self {
        Self {
            ipv6_prefix: self.ipv6_prefix,
            trusted_proxies: self.trusted_proxies.clone(),
            custom: self.custom.clone(),
            warned_no_peer: AtomicBool::new(false),
            warned_unreadable: AtomicBool::new(false),
        }
    }
}

impl fmt::Debug for KeyDerivation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyDerivation")
            .field("ipv6_prefix", &self.ipv6_prefix)
            .field("trusted_proxies", &self.trusted_proxies)
            .field("custom", &self.custom.as_ref().map(|_| "Fn"))
            .finish()
    }
}

/// The connection's peer address: a bare `SocketAddr` extension, else
/// axum's `ConnectInfo<SocketAddr>` (see the module docs for why).
fn peer_address(extensions: &http::Extensions) -> Option<IpAddr> {
    if let Some(address) = extensions.get::<SocketAddr>() {
        return Some(address.ip());
    }
    #[cfg(feature = "axum")]
    if let Some(axum::extract::ConnectInfo(address)) =
        extensions.get::<axum::extract::ConnectInfo<SocketAddr>>()
    {
        return Some(address.ip());
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(peer: Option<&str>, headers: &[(&'static str, &str)]) -> Parts {
        let mut request = http::Request::builder();
        for &(name, value) in headers {
            request = request.header(name, value);
        }
        let (mut parts, ()) = request.body(()).unwrap().into_parts();
        if let Some(peer) = peer {
            parts.extensions.insert(peer.parse::<SocketAddr>().unwrap());
        }
        parts
    }

    fn key(derivation: &KeyDerivation, request: &Parts) -> String {
        derivation.derive(request).unwrap().to_string()
    }

    fn behind(networks: &[&str]) -> KeyDerivation {
        KeyDerivation::new().trusted_proxies(Some(TrustedProxies::new("x-forwarded-for", networks)))
    }

    #[test]
    fn the_peer_address_without_trusted_proxies() {
        let derivation = KeyDerivation::new();
        let request = parts(Some("192.0.2.1:5000"), &[("x-forwarded-for", "6.6.6.6")]);
        assert_eq!(key(&derivation, &request), "192.0.2.1");
        let v6 = parts(Some("[2001:db8:1:2::7]:5000"), &[]);
        assert_eq!(key(&derivation, &v6), "2001:db8:1:2::/64");
        assert_eq!(
            key(&KeyDerivation::new().ipv6_prefix(48), &v6),
            "2001:db8:1::/48"
        );
    }

    #[test]
    fn a_trusted_peers_header_names_the_client_and_an_untrusted_peers_does_not() {
        let derivation = behind(&["10.0.0.0/8"]);
        let chain = [("x-forwarded-for", "6.6.6.6, 203.0.113.7, 10.0.0.2")];
        let via_proxy = parts(Some("10.0.0.1:5000"), &chain);
        assert_eq!(key(&derivation, &via_proxy), "203.0.113.7");
        let direct = parts(Some("198.51.100.1:5000"), &chain);
        assert_eq!(key(&derivation, &direct), "198.51.100.1");
        // The key of a forwarded NAT64 address is its IPv4 address.
        let nat64 = [("x-forwarded-for", "64:ff9b::203.0.113.8")];
        let request = parts(Some("10.0.0.1:5000"), &nat64);
        assert_eq!(key(&derivation, &request), "203.0.113.8");
    }

    #[test]
    fn an_unreadable_chain_is_an_error_not_the_proxys_key() {
        let derivation = behind(&["10.0.0.0/8"]);
        let request = parts(Some("10.0.0.1:5000"), &[("x-forwarded-for", "unknown")]);
        assert_eq!(derivation.derive(&request), Err(Unreadable::ClientEntry));
        // Twice: the warning is logged once, the refusal stays.
        assert_eq!(derivation.derive(&request), Err(Unreadable::ClientEntry));
    }

    #[test]
    fn a_bare_socket_addr_wins_over_axums_connect_info() {
        let mut request = parts(Some("192.0.2.9:1"), &[]);
        #[cfg(feature = "axum")]
        {
            let socket: SocketAddr = "10.0.0.1:80".parse().unwrap();
            request
                .extensions
                .insert(axum::extract::ConnectInfo(socket));
        }
        assert_eq!(key(&KeyDerivation::new(), &request), "192.0.2.9");
        request.extensions.remove::<SocketAddr>();
        let expected = if cfg!(feature = "axum") {
            "10.0.0.1"
        } else {
            "anonymous"
        };
        assert_eq!(key(&KeyDerivation::new(), &request), expected);
    }

    #[cfg(feature = "axum")]
    #[test]
    fn axum_connect_info_is_the_peer_address() {
        let mut request = parts(None, &[]);
        let peer: SocketAddr = "[::ffff:192.0.2.1]:80".parse().unwrap();
        request.extensions.insert(axum::extract::ConnectInfo(peer));
        assert_eq!(key(&KeyDerivation::new(), &request), "192.0.2.1");
    }

    #[test]
    fn no_peer_address_is_anonymous_even_with_forwarding_headers() {
        let request = parts(None, &[("x-forwarded-for", "192.0.2.1")]);
        let derivation = behind(&["0.0.0.0/0"]);
        assert!(derivation.derive(&request).unwrap().is_anonymous());
        // Also with nothing trusted: the header is never read without a peer.
        assert!(
            KeyDerivation::new()
                .derive(&request)
                .unwrap()
                .is_anonymous()
        );
    }

    #[test]
    fn the_custom_function_takes_precedence_unless_it_defers() {
        let derivation = behind(&["10.0.0.0/8"]).custom(Arc::new(|parts: &Parts| {
            let key = parts.headers.get("x-api-key-id")?.to_str().ok()?;
            Some(ClientKey::named(key))
        }));
        let with_key = parts(Some("192.0.2.1:5000"), &[("x-api-key-id", "k1")]);
        assert_eq!(derivation.derive(&with_key), Ok(ClientKey::named("k1")));
        let without = parts(Some("192.0.2.1:5000"), &[]);
        assert_eq!(key(&derivation, &without), "192.0.2.1");
        // It answers even when the server records no peer address, and
        // before any chain is read.
        let no_peer = parts(None, &[("x-api-key-id", "k1")]);
        assert_eq!(derivation.derive(&no_peer), Ok(ClientKey::named("k1")));
        let unreadable = parts(
            Some("10.0.0.1:5000"),
            &[("x-api-key-id", "k1"), ("x-forwarded-for", "unknown")],
        );
        assert_eq!(derivation.derive(&unreadable), Ok(ClientKey::named("k1")));
    }

    #[test]
    #[should_panic(expected = "at most 128")]
    fn a_configured_prefix_over_128_panics() {
        let _ = KeyDerivation::new().ipv6_prefix(200);
    }
}
