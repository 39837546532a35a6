//! Who a request comes from: [`ClientKey`], and how the HTTP layer derives
//! it from a request ([`KeyDerivation`]).
//!
//! # Invariant kept here
//!
//! A client cannot choose its key, short of the deployment trusting it to:
//! the key is the user's own function's answer, or the peer address of the
//! connection, or an address written by a configured number of trusted
//! proxies (see `forwarded`), never an address the request merely claims.
//! When in doubt the peer address is used: a misconfigured proxy count then
//! groups the clients behind a proxy under the proxy's address, which
//! throttles them together but cannot be forged.
//!
//! # Finding the peer address
//!
//! `http::Extensions` is keyed by type, so the peer address can only be read
//! under a type this crate names. axum records it as
//! `axum::extract::ConnectInfo<SocketAddr>` (with
//! `into_make_service_with_connect_info::<SocketAddr>()`); hyper and tower
//! servers have no standard type and can insert a bare `SocketAddr`. Both
//! are read: the bare one always, axum's under the default-on `axum`
//! feature, which depends on axum without its default features (only its
//! `tokio` feature, where `ConnectInfo` lives). Asking axum users to copy
//! `ConnectInfo` into a bare `SocketAddr` themselves would be a silent trap
//! (forgotten, every client is anonymous); the feature costs nothing to
//! those who serve with axum anyway, and others can turn it off. It is
//! axum 0.8's type: with another major version of axum, insert a bare
//! `SocketAddr`.

use std::fmt;
use std::hash::Hash;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use http::request::Parts;

use super::forwarded;

/// The client a session belongs to, for per-client quotas and rate limits.
///
/// A key is one of:
///
/// - **anonymous**: no key is known (the manager is used without its HTTP
///   layer, or the server does not record peer addresses);
/// - **an IP address**: IPv4 as is; IPv6 masked to a network prefix (a /64
///   by default, as one subscriber usually holds a whole /64), with an
///   IPv4-mapped IPv6 address (`::ffff:192.0.2.1`) counted as its IPv4
///   address;
/// - **named**: whatever the user's own function returned, such as an OAuth
///   subject or an API key's id.
///
/// Cloning is cheap (at most a reference count). `Display` (and `Debug`)
/// print `anonymous`, the address (`192.0.2.1`, `2001:db8:1:2::/64`), or
/// `named:#` and a 48-bit hash of a named key's value (FNV-1a, the same in
/// every process and build, so log lines can be matched up). The value is
/// not printed because it may be a secret, such as an API key; the hash
/// keeps it out of logs, but does not hide a value that can be guessed:
/// to log pseudonyms, derive the key from a keyed hash in the first place.
///
/// # Example
///
/// ```
/// use std::net::IpAddr;
/// use mcp_bounded_session::ClientKey;
///
/// let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
/// let b: IpAddr = "2001:db8:1:2:bbbb::2".parse().unwrap();
/// assert_eq!(ClientKey::from_ip(a, 64), ClientKey::from_ip(b, 64));
/// assert_eq!(ClientKey::from_ip(a, 64).to_string(), "2001:db8:1:2::/64");
///
/// let named = ClientKey::named("api-key-7f3a");
/// assert!(named.to_string().starts_with("named:#"));
/// assert!(!named.to_string().contains("7f3a"));
/// ```
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct ClientKey(Kind);

#[derive(Clone, PartialEq, Eq, Hash)]
enum Kind {
    Anonymous,
    V4(Ipv4Addr),
    /// The network (host bits zero) and its prefix length.
    V6 {
        network: Ipv6Addr,
        prefix: u8,
    },
    Named(Arc<str>),
}

impl ClientKey {
    /// The key of a client identified by the user, e.g. by an OAuth subject
    /// or an API key's id. Named keys never equal address keys, whatever
    /// their text.
    ///
    /// ```
    /// use mcp_bounded_session::ClientKey;
    ///
    /// assert_eq!(ClientKey::named("alice"), ClientKey::named(String::from("alice")));
    /// assert_ne!(ClientKey::named("alice"), ClientKey::named("bob"));
    /// ```
    pub fn named(name: impl Into<Arc<str>>) -> Self {
        Self(Kind::Named(name.into()))
    }

    /// The key of a client at `address`: IPv4 as is, IPv6 masked to its
    /// first `ipv6_prefix` bits, an IPv4-mapped IPv6 address as its IPv4
    /// address.
    ///
    /// # Panics
    ///
    /// Panics if `ipv6_prefix` is over 128.
    ///
    /// ```
    /// use std::net::IpAddr;
    /// use mcp_bounded_session::ClientKey;
    ///
    /// let mapped: IpAddr = "::ffff:192.0.2.1".parse().unwrap();
    /// let v4: IpAddr = "192.0.2.1".parse().unwrap();
    /// assert_eq!(ClientKey::from_ip(mapped, 64), ClientKey::from_ip(v4, 64));
    /// assert_eq!(ClientKey::from_ip(mapped, 64).to_string(), "192.0.2.1");
    /// ```
    pub fn from_ip(address: IpAddr, ipv6_prefix: u8) -> Self {
        validate_ipv6_prefix(ipv6_prefix);
        match address.to_canonical() {
            IpAddr::V4(v4) => Self(Kind::V4(v4)),
            IpAddr::V6(v6) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(ipv6_prefix))
                    .unwrap_or(0);
                Self(Kind::V6 {
                    network: Ipv6Addr::from(u128::from(v6) & mask),
                    prefix: ipv6_prefix,
                })
            }
        }
    }

    /// The key used when no key is known.
    ///
    /// ```
    /// use mcp_bounded_session::ClientKey;
    ///
    /// assert!(ClientKey::anonymous().is_anonymous());
    /// assert_eq!(ClientKey::anonymous().to_string(), "anonymous");
    /// ```
    pub fn anonymous() -> Self {
        Self(Kind::Anonymous)
    }

    /// Whether this is [`ClientKey::anonymous`]. All anonymous requests
    /// share this one key, so per-client limits applied to it would apply
    /// to all of them together.
    ///
    /// ```
    /// use mcp_bounded_session::ClientKey;
    ///
    /// assert!(!ClientKey::named("alice").is_anonymous());
    /// ```
    pub fn is_anonymous(&self) -> bool {
        matches!(self.0, Kind::Anonymous)
    }
}

impl fmt::Display for ClientKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Kind::Anonymous => f.write_str("anonymous"),
            Kind::V4(address) => write!(f, "{address}"),
            Kind::V6 { network, prefix } => write!(f, "{network}/{prefix}"),
            Kind::Named(name) => write!(f, "named:#{:012x}", fnv1a(name.as_bytes()) >> 16),
        }
    }
}

/// Like `Display`: a derived `Debug` would print a named key's value.
impl fmt::Debug for ClientKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ClientKey({self})")
    }
}

/// 64-bit FNV-1a: tiny and fully specified, so a tag means the same in
/// every build (std's `DefaultHasher` may change between Rust releases).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// Panics with an actionable message unless `prefix` is a valid IPv6
/// prefix length.
pub(crate) fn validate_ipv6_prefix(prefix: u8) {
    assert!(
        prefix <= 128,
        "an IPv6 prefix length is at most 128 (got {prefix}); 64 groups each subscriber's /64"
    );
}

/// The user's function from a request to a key; `None` defers to the
/// address rules.
pub(crate) type CustomKey = Arc<dyn Fn(&Parts) -> Option<ClientKey> + Send + Sync>;

/// How the HTTP layer derives a request's [`ClientKey`]:
///
/// 1. the user's function, if set and it answers `Some`;
/// 2. else the peer address (see the module docs for where it is read);
///    with `trusted_proxies = n > 0` the peer is the nearest of `n` trusted
///    proxies, and the client is the address the outermost of them wrote:
///    the `n`-th entry from the right of the forwarding headers, or the
///    peer itself if that entry is missing or not an address (`forwarded`
///    says how the headers are read);
/// 3. no peer address at all: [`ClientKey::anonymous`]. This is logged
///    once, not per request, since it means the server records no peer
///    addresses and every client shares one key.
pub(crate) struct KeyDerivation {
    ipv6_prefix: u8,
    trusted_proxies: usize,
    custom: Option<CustomKey>,
    warned_no_peer: AtomicBool,
}

impl KeyDerivation {
    /// IPv6 clients are grouped by /64 unless configured otherwise.
    pub(crate) const DEFAULT_IPV6_PREFIX: u8 = 64;

    /// The defaults: peer addresses, IPv6 grouped by /64, no trusted proxy,
    /// no custom function.
    pub(crate) fn new() -> Self {
        Self {
            ipv6_prefix: Self::DEFAULT_IPV6_PREFIX,
            trusted_proxies: 0,
            custom: None,
            warned_no_peer: AtomicBool::new(false),
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

    pub(crate) fn trusted_proxies(mut self, proxies: usize) -> Self {
        self.trusted_proxies = proxies;
        self
    }

    pub(crate) fn custom(mut self, key: CustomKey) -> Self {
        self.custom = Some(key);
        self
    }

    /// The key of the request with these parts (see the type's docs).
    pub(crate) fn derive(&self, parts: &Parts) -> ClientKey {
        if let Some(key) = self.custom.as_ref().and_then(|custom| custom(parts)) {
            return key;
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
            return ClientKey::anonymous();
        };
        let client = match self.trusted_proxies {
            0 => peer,
            hops => forwarded::client_address(&parts.headers, hops).unwrap_or(peer),
        };
        ClientKey::from_ip(client, self.ipv6_prefix)
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
            trusted_proxies: self.trusted_proxies,
            custom: self.custom.clone(),
            warned_no_peer: AtomicBool::new(false),
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

/// The connection's peer address: axum's `ConnectInfo<SocketAddr>` or a
/// bare `SocketAddr` extension.
fn peer_address(extensions: &http::Extensions) -> Option<IpAddr> {
    #[cfg(feature = "axum")]
    if let Some(axum::extract::ConnectInfo(address)) =
        extensions.get::<axum::extract::ConnectInfo<SocketAddr>>()
    {
        return Some(address.ip());
    }
    extensions.get::<SocketAddr>().map(SocketAddr::ip)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    fn v6_key(text: &str, prefix: u8) -> String {
        ClientKey::from_ip(ip(text), prefix).to_string()
    }

    #[test]
    fn ipv6_is_masked_to_its_prefix() {
        let address = "2001:db8:aaaa:bbbb:cccc:dddd:eeee:ffff";
        assert_eq!(v6_key(address, 64), "2001:db8:aaaa:bbbb::/64");
        assert_eq!(v6_key(address, 56), "2001:db8:aaaa:bb00::/56");
        assert_eq!(v6_key(address, 128), format!("{address}/128"));
        assert_eq!(v6_key(address, 0), "::/0");
        assert_eq!(
            ClientKey::from_ip(ip("2001:db8:1:2::1"), 64),
            ClientKey::from_ip(ip("2001:db8:1:2:ffff::9"), 64)
        );
        assert_ne!(
            ClientKey::from_ip(ip("2001:db8:1:2::1"), 64),
            ClientKey::from_ip(ip("2001:db8:1:3::1"), 64)
        );
    }

    #[test]
    fn ipv4_mapped_counts_as_ipv4_and_ipv4_is_not_masked() {
        let mapped = ClientKey::from_ip(ip("::ffff:192.0.2.1"), 0);
        assert_eq!(mapped, ClientKey::from_ip(ip("192.0.2.1"), 64));
        assert_ne!(mapped, ClientKey::from_ip(ip("192.0.2.2"), 0));
    }

    #[test]
    #[should_panic(expected = "at most 128")]
    fn a_prefix_over_128_panics() {
        let _ = ClientKey::from_ip(ip("2001:db8::1"), 129);
    }

    #[test]
    fn named_keys_print_a_stable_tag_not_their_value() {
        let key = ClientKey::named("sk-live-0123456789");
        let shown = key.to_string();
        assert!(!shown.contains("0123456789"), "{shown}");
        assert_eq!(shown.len(), "named:#".len() + 12);
        assert_eq!(shown, ClientKey::named("sk-live-0123456789").to_string());
        assert_ne!(shown, ClientKey::named("sk-live-0123456788").to_string());
        assert_eq!(format!("{key:?}"), format!("ClientKey({shown})"));
        // FNV-1a's published test vector: the tag means the same everywhere.
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
    }

    #[test]
    fn named_keys_never_equal_address_keys() {
        assert_ne!(
            ClientKey::named("192.0.2.1"),
            ClientKey::from_ip(ip("192.0.2.1"), 64)
        );
    }

    #[test]
    fn client_key_is_cheap_shareable_and_small() {
        fn shareable<T: Send + Sync + Clone + Eq + Hash + fmt::Debug + fmt::Display>() {}
        shareable::<ClientKey>();
        assert!(size_of::<ClientKey>() <= 24);
    }

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

    #[test]
    fn the_peer_address_without_trusted_proxies() {
        let derivation = KeyDerivation::new();
        let request = parts(Some("192.0.2.1:5000"), &[("x-forwarded-for", "6.6.6.6")]);
        assert_eq!(derivation.derive(&request).to_string(), "192.0.2.1");
        let v6 = parts(Some("[2001:db8:1:2::7]:5000"), &[]);
        assert_eq!(derivation.derive(&v6).to_string(), "2001:db8:1:2::/64");
        let v6 = KeyDerivation::new().ipv6_prefix(48).derive(&v6);
        assert_eq!(v6.to_string(), "2001:db8:1::/48");
    }

    #[cfg(feature = "axum")]
    #[test]
    fn axum_connect_info_is_the_peer_address() {
        let mut request = parts(None, &[]);
        let peer: SocketAddr = "[::ffff:192.0.2.1]:80".parse().unwrap();
        request.extensions.insert(axum::extract::ConnectInfo(peer));
        let key = KeyDerivation::new().derive(&request);
        assert_eq!(key.to_string(), "192.0.2.1");
    }

    #[test]
    fn trusted_proxies_pick_the_entry_that_many_hops_from_the_right() {
        let chain = [("x-forwarded-for", "6.6.6.6, 203.0.113.7, 198.51.100.1")];
        let request = parts(Some("10.0.0.1:5000"), &chain);
        let key = |proxies| {
            let derivation = KeyDerivation::new().trusted_proxies(proxies);
            derivation.derive(&request).to_string()
        };
        assert_eq!(key(0), "10.0.0.1");
        assert_eq!(key(1), "198.51.100.1");
        assert_eq!(key(2), "203.0.113.7");
        // Longer than the chain: the peer, never the spoofable leftmost.
        assert_eq!(key(4), "10.0.0.1");
    }

    #[test]
    fn untrustworthy_forwarding_falls_back_to_the_peer() {
        let derivation = KeyDerivation::new().trusted_proxies(1);
        for headers in [
            &[][..],
            &[("x-forwarded-for", "192.0.2.1, garbage")],
            &[("forwarded", "for=unknown")],
            &[("forwarded", "for=_hidden")],
            &[
                ("forwarded", "for=192.0.2.1"),
                ("x-forwarded-for", "192.0.2.2"),
            ],
        ] {
            let request = parts(Some("10.0.0.1:5000"), headers);
            assert_eq!(
                derivation.derive(&request).to_string(),
                "10.0.0.1",
                "{headers:?}"
            );
        }
        let quoted = parts(
            Some("10.0.0.1:5000"),
            &[("forwarded", r#"for="[2001:db8:1:2::9]:4711""#)],
        );
        assert_eq!(derivation.derive(&quoted).to_string(), "2001:db8:1:2::/64");
    }

    #[test]
    fn no_peer_address_is_anonymous_even_with_forwarding_headers() {
        let request = parts(None, &[("x-forwarded-for", "192.0.2.1")]);
        let derivation = KeyDerivation::new().trusted_proxies(1);
        assert!(derivation.derive(&request).is_anonymous());
        assert!(derivation.derive(&request).is_anonymous());
    }

    #[test]
    fn the_custom_function_takes_precedence_unless_it_defers() {
        let derivation = KeyDerivation::new().custom(Arc::new(|parts: &Parts| {
            let key = parts.headers.get("x-api-key-id")?.to_str().ok()?;
            Some(ClientKey::named(key))
        }));
        let with_key = parts(Some("192.0.2.1:5000"), &[("x-api-key-id", "k1")]);
        assert_eq!(derivation.derive(&with_key), ClientKey::named("k1"));
        let without = parts(Some("192.0.2.1:5000"), &[]);
        assert_eq!(derivation.derive(&without).to_string(), "192.0.2.1");
        // It answers even when the server records no peer address.
        let no_peer = parts(None, &[("x-api-key-id", "k1")]);
        assert_eq!(derivation.derive(&no_peer), ClientKey::named("k1"));
    }

    #[test]
    #[should_panic(expected = "at most 128")]
    fn a_configured_prefix_over_128_panics() {
        let _ = KeyDerivation::new().ipv6_prefix(200);
    }
}
