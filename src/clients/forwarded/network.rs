//! A network of trusted proxies, written `10.0.0.0/8`, `::1/128` or as a
//! bare address (one host).
//!
//! # Invariant kept here
//!
//! A network holds exactly the addresses its text names: the host bits of
//! its address are zero (`10.0.0.1/8` is refused rather than read as
//! `10.0.0.0/8`, since it is as likely a typo for `10.0.0.1/32`: trusting a
//! whole /8 by mistake would let everyone in it choose their key), and an
//! IPv4 network written in IPv4-mapped IPv6 form (`::ffff:10.0.0.0/104`) is
//! the IPv4 network, because addresses are compared in canonical form (a
//! dual-stack listener reports IPv4 peers as `::ffff:a.b.c.d`).

use std::fmt;
use std::net::{IpAddr, Ipv6Addr};

/// Why a trusted-proxy network was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum NetworkError {
    /// The text before the `/` (or the whole text) is not an IP address.
    #[error("`{text}` is not an IP address or a network such as 10.0.0.0/8 or ::1/128")]
    Address {
        /// The text as given.
        text: String,
    },
    /// The prefix length is not a number, or longer than the address.
    #[error("`{text}`: the prefix length must be 0 to {max} for this address")]
    Prefix {
        /// The text as given.
        text: String,
        /// 32 for IPv4, 128 for IPv6.
        max: u8,
    },
    /// Bits are set past the prefix.
    #[error(
        "`{text}` has bits set past its /{prefix}: write {network}/{prefix} for the network, \
         or the address alone for one host"
    )]
    HostBits {
        /// The text as given.
        text: String,
        /// The network the prefix names.
        network: IpAddr,
        /// The prefix length given.
        prefix: u8,
    },
}

/// An IP network: an address whose bits past `prefix` are zero.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) struct Network {
    address: IpAddr,
    prefix: u8,
}

impl Network {
    /// Parses `a.b.c.d/n`, `x:y::z/n` or a bare address (all its bits).
    pub(crate) fn parse(text: &str) -> Result<Self, NetworkError> {
        let trimmed = text.trim();
        let (address, prefix) = match trimmed.split_once('/') {
            Some((address, prefix)) => (address, Some(prefix)),
            None => (trimmed, None),
        };
        let address: IpAddr = address.parse().map_err(|_| NetworkError::Address {
            text: text.to_owned(),
        })?;
        let max = bits(address);
        let prefix = match prefix {
            None => max,
            Some(prefix) => prefix
                .parse::<u8>()
                .ok()
                .filter(|&prefix| prefix <= max)
                .ok_or(NetworkError::Prefix {
                    text: text.to_owned(),
                    max,
                })?,
        };
        let network = mask(address, prefix);
        if network != address {
            return Err(NetworkError::HostBits {
                text: text.to_owned(),
                network,
                prefix,
            });
        }
        Ok(Self::canonical(address, prefix))
    }

    /// An IPv4-mapped network (`::ffff:0:0/96` and longer) as IPv4.
    fn canonical(address: IpAddr, prefix: u8) -> Self {
        if let IpAddr::V6(v6) = address
            && prefix >= 96
            && let Some(v4) = v6.to_ipv4_mapped()
        {
            return Self {
                address: IpAddr::V4(v4),
                prefix: prefix - 96,
            };
        }
        Self { address, prefix }
    }

    /// Whether `address` (in canonical form) is in this network.
    pub(crate) fn contains(&self, address: IpAddr) -> bool {
        match (self.address, address) {
            (IpAddr::V4(_), IpAddr::V4(_)) | (IpAddr::V6(_), IpAddr::V6(_)) => {
                mask(address, self.prefix) == self.address
            }
            _ => false,
        }
    }
}

impl fmt::Debug for Network {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.address, self.prefix)
    }
}

fn bits(address: IpAddr) -> u8 {
    match address {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    }
}

/// `address` with the bits past `prefix` cleared; `prefix <= bits(address)`.
fn mask(address: IpAddr, prefix: u8) -> IpAddr {
    match address {
        IpAddr::V4(v4) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V4((u32::from(v4) & mask).into())
        }
        IpAddr::V6(v6) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V6(Ipv6Addr::from(u128::from(v6) & mask))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn networks_contain_exactly_their_addresses() {
        let ten = Network::parse("10.0.0.0/8").unwrap();
        assert!(ten.contains(ip("10.255.1.2")));
        assert!(!ten.contains(ip("11.0.0.0")));
        assert!(
            !ten.contains(ip("::a00:1")),
            "IPv6 is never in an IPv4 network"
        );
        let one = Network::parse("192.0.2.7").unwrap();
        assert!(one.contains(ip("192.0.2.7")));
        assert!(!one.contains(ip("192.0.2.8")));
        let loopback = Network::parse(" ::1/128 ").unwrap();
        assert!(loopback.contains(ip("::1")));
        assert!(!loopback.contains(ip("::2")));
        let everything = Network::parse("0.0.0.0/0").unwrap();
        assert!(everything.contains(ip("203.0.113.1")));
        let v6 = Network::parse("2001:db8::/32").unwrap();
        assert!(v6.contains(ip("2001:db8:ffff::1")));
        assert!(!v6.contains(ip("2001:db9::1")));
    }

    #[test]
    fn an_ipv4_mapped_network_is_its_ipv4_network() {
        let mapped = Network::parse("::ffff:10.0.0.0/104").unwrap();
        assert_eq!(mapped, Network::parse("10.0.0.0/8").unwrap());
        assert!(mapped.contains(ip("10.1.2.3")));
    }

    #[test]
    fn malformed_networks_are_refused_with_the_reason() {
        assert!(matches!(
            Network::parse("ten/8"),
            Err(NetworkError::Address { .. })
        ));
        assert!(matches!(
            Network::parse("10.0.0.0/33"),
            Err(NetworkError::Prefix { max: 32, .. })
        ));
        assert!(matches!(
            Network::parse("::/129"),
            Err(NetworkError::Prefix { max: 128, .. })
        ));
        assert!(matches!(
            Network::parse("10.0.0.0/"),
            Err(NetworkError::Prefix { .. })
        ));
        let error = Network::parse("10.0.0.1/8").unwrap_err();
        assert_eq!(
            error.to_string(),
            "`10.0.0.1/8` has bits set past its /8: write 10.0.0.0/8 for the network, \
             or the address alone for one host"
        );
    }
}
