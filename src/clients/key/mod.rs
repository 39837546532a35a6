//! Who a request comes from: [`ClientKey`]; `derivation` says how the HTTP
//! layer derives it from a request.
//!
//! # Invariant kept here
//!
//! A key takes bounded memory whatever it is made from, and two clients
//! share a key only when they share the network resource it names:
//!
//! - a named key's value is kept only up to [`MAX_NAME_BYTES`]; a longer one
//!   is replaced by a 128-bit keyed digest of it (SipHash under a key drawn
//!   at random once per process, which is what makes `std`'s `RandomState`
//!   resist collision attacks), so a function that keys by a client-chosen
//!   header cannot make one key hold kilobytes, nor pick a value that
//!   collides with another client's key;
//! - an IPv6 address is masked to a configured prefix, except where it
//!   embeds the IPv4 address that identifies the client: IPv4-mapped
//!   (`::ffff:a.b.c.d`), NAT64 (`64:ff9b::a.b.c.d`, RFC 6052), and 6to4
//!   (`2002:AABB:CCDD::/48`, RFC 3056) count as that IPv4 address. Masking
//!   them instead would put every IPv4 client behind a NAT64 translator
//!   under one key, and give one 6to4 host 65,536 keys (its /48 holds that
//!   many /64s). Teredo (`2001:0::/32`) is not unwrapped: its clients are
//!   keyed by /64 like other IPv6 addresses, and the /64 of a Teredo
//!   address is its Teredo server's, so every client of one Teredo server
//!   shares a key (Teredo is rare today, and the embedded client address is
//!   obfuscated behind a NAT mapping).

mod derivation;

use std::fmt;
use std::hash::{BuildHasher, Hash, RandomState};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::{Arc, OnceLock};

pub(crate) use derivation::{CustomKey, KeyDerivation};

/// Named keys up to this length are kept as they are; longer ones by a
/// digest (see the module docs).
pub(crate) const MAX_NAME_BYTES: usize = 64;

/// The client a session belongs to, for per-client quotas and rate limits.
///
/// A key is one of:
///
/// - **anonymous**: no key is known (the manager is used without its HTTP
///   layer, or the server does not record peer addresses);
/// - **an IP address**: IPv4 as is; IPv6 masked to a network prefix (a /64
///   by default, as one subscriber usually holds a whole /64). An IPv6
///   address that embeds the client's IPv4 address counts as that IPv4
///   address: IPv4-mapped (`::ffff:192.0.2.1`), NAT64 (`64:ff9b::/96`) and
///   6to4 (`2002::/16`). Teredo addresses are masked like any other, so the
///   clients of one Teredo server share its /64;
/// - **named**: whatever the user's own function returned, such as an OAuth
///   subject or an API key's id. A value longer than 64 bytes is kept as a
///   128-bit digest (keyed per process, so outsiders cannot choose
///   collisions): the key stays small whatever the function returns.
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
    /// A value of at most [`MAX_NAME_BYTES`].
    Named(Arc<str>),
    /// A longer value: its keyed digest, and its FNV-1a for `Display`.
    Digest(Arc<Digest>),
}

#[derive(PartialEq, Eq, Hash)]
struct Digest {
    keyed: [u64; 2],
    fnv: u64,
}

impl ClientKey {
    /// The key of a client identified by the user, e.g. by an OAuth subject
    /// or an API key's id. Named keys never equal address keys, whatever
    /// their text. A value longer than 64 bytes is kept as a digest (see
    /// the type's docs); equal values still give equal keys.
    ///
    /// ```
    /// use mcp_bounded_session::ClientKey;
    ///
    /// assert_eq!(ClientKey::named("alice"), ClientKey::named(String::from("alice")));
    /// assert_ne!(ClientKey::named("alice"), ClientKey::named("bob"));
    /// let long = "x".repeat(10_000);
    /// assert_eq!(ClientKey::named(long.as_str()), ClientKey::named(long));
    /// ```
    pub fn named(name: impl Into<Arc<str>>) -> Self {
        let name: Arc<str> = name.into();
        if name.len() <= MAX_NAME_BYTES {
            return Self(Kind::Named(name));
        }
        // One secret per process: keys are never compared across processes.
        static SECRET: OnceLock<RandomState> = OnceLock::new();
        let secret = SECRET.get_or_init(RandomState::new);
        Self(Kind::Digest(Arc::new(Digest {
            keyed: [
                secret.hash_one((0u8, &*name)),
                secret.hash_one((1u8, &*name)),
            ],
            fnv: fnv1a(name.as_bytes()),
        })))
    }

    /// The key of a client at `address`: IPv4 as is, IPv6 masked to its
    /// first `ipv6_prefix` bits, an IPv6 address that embeds an IPv4
    /// client (IPv4-mapped, NAT64 `64:ff9b::/96`, 6to4 `2002::/16`) as that
    /// IPv4 address.
    ///
    /// # Panics
    ///
    /// Panics if `ipv6_prefix` is over 128.
    ///
    /// ```
    /// use std::net::IpAddr;
    /// use mcp_bounded_session::ClientKey;
    ///
    /// let v4: IpAddr = "192.0.2.1".parse().unwrap();
    /// for embedding in ["::ffff:192.0.2.1", "64:ff9b::192.0.2.1", "2002:c000:201:7::1"] {
    ///     let address: IpAddr = embedding.parse().unwrap();
    ///     assert_eq!(ClientKey::from_ip(address, 64), ClientKey::from_ip(v4, 64));
    /// }
    /// assert_eq!(ClientKey::from_ip(v4, 64).to_string(), "192.0.2.1");
    /// ```
    pub fn from_ip(address: IpAddr, ipv6_prefix: u8) -> Self {
        validate_ipv6_prefix(ipv6_prefix);
        match address.to_canonical() {
            IpAddr::V4(v4) => Self(Kind::V4(v4)),
            IpAddr::V6(v6) => match embedded_ipv4(v6) {
                Some(v4) => Self(Kind::V4(v4)),
                None => {
                    let mask = u128::MAX
                        .checked_shl(128 - u32::from(ipv6_prefix))
                        .unwrap_or(0);
                    Self(Kind::V6 {
                        network: Ipv6Addr::from(u128::from(v6) & mask),
                        prefix: ipv6_prefix,
                    })
                }
            },
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

/// The IPv4 address a NAT64 (`64:ff9b::/96`) or 6to4 (`2002::/16`) address
/// stands for.
fn embedded_ipv4(address: Ipv6Addr) -> Option<Ipv4Addr> {
    let bits = u128::from(address);
    if bits >> 32 == 0x0064_ff9b_0000_0000_0000_0000 {
        return Some(Ipv4Addr::from(bits as u32));
    }
    if bits >> 112 == 0x2002 {
        return Some(Ipv4Addr::from((bits >> 80) as u32));
    }
    None
}

impl fmt::Display for ClientKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Kind::Anonymous => f.write_str("anonymous"),
            Kind::V4(address) => write!(f, "{address}"),
            Kind::V6 { network, prefix } => write!(f, "{network}/{prefix}"),
            Kind::Named(name) => write!(f, "named:#{:012x}", fnv1a(name.as_bytes()) >> 16),
            Kind::Digest(digest) => write!(f, "named:#{:012x}", digest.fnv >> 16),
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
    fn nat64_clients_are_keyed_by_their_ipv4_address() {
        // Two IPv4 clients behind one translator: two keys, not one /64.
        let a = ClientKey::from_ip(ip("64:ff9b::198.51.100.1"), 64);
        let b = ClientKey::from_ip(ip("64:ff9b::198.51.100.2"), 64);
        assert_ne!(a, b);
        assert_eq!(a.to_string(), "198.51.100.1");
        assert_eq!(a, ClientKey::from_ip(ip("198.51.100.1"), 0));
        // Only the well-known /96 (RFC 6052): 64:ff9b:1::/48 is masked.
        assert_eq!(v6_key("64:ff9b:1::c633:6401", 64), "64:ff9b:1::/64");
    }

    #[test]
    fn six_to_four_is_keyed_by_its_ipv4_host_not_by_its_65536_slash_64s() {
        // 2002:c633:6401::/48 is 198.51.100.1's.
        let one = ClientKey::from_ip(ip("2002:c633:6401:1::1"), 64);
        let other = ClientKey::from_ip(ip("2002:c633:6401:ffff::2"), 64);
        assert_eq!(one, other);
        assert_eq!(one.to_string(), "198.51.100.1");
        assert_ne!(one, ClientKey::from_ip(ip("2002:c633:6402:1::1"), 64));
    }

    #[test]
    fn teredo_is_masked_like_other_ipv6() {
        // Two clients of the Teredo server 65.54.227.120 share its /64.
        let a = ClientKey::from_ip(ip("2001:0:4136:e378:8000:63bf:3fff:fdd2"), 64);
        let b = ClientKey::from_ip(ip("2001:0:4136:e378:8000:63bf:3fff:0001"), 64);
        assert_eq!(a, b);
        assert_eq!(a.to_string(), "2001:0:4136:e378::/64");
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
    fn long_names_are_kept_as_a_digest_that_still_tells_them_apart() {
        let long = "k".repeat(64 * 1024);
        let key = ClientKey::named(long.as_str());
        let Kind::Digest(digest) = &key.0 else {
            panic!("a 64 KiB name kept as is");
        };
        assert_eq!(size_of_val(&**digest), 24);
        assert_eq!(key, ClientKey::named(long.clone()));
        let mut other = long.clone();
        other.push('k');
        assert_ne!(key, ClientKey::named(other));
        // The printed tag is the value's, as for a short name.
        assert_eq!(
            key.to_string(),
            format!("named:#{:012x}", fnv1a(long.as_bytes()) >> 16)
        );
        // Up to the bound, the value itself.
        let longest = "k".repeat(MAX_NAME_BYTES);
        assert!(matches!(ClientKey::named(longest).0, Kind::Named(_)));
        let over = "k".repeat(MAX_NAME_BYTES + 1);
        assert!(matches!(ClientKey::named(over).0, Kind::Digest(_)));
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
}
