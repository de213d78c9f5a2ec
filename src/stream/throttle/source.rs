//! Who an attempt comes from, as the throttle counts it.

use std::fmt;
use std::net::{IpAddr, Ipv6Addr};

/// An IPv4 address, or an IPv6 /64.
///
/// One IPv6 host is routinely given a whole /64 (SLAAC, RFC 4291 §2.5.1), so counting single
/// IPv6 addresses would give an attacker 2^64 fresh budgets; a /64 is what one IPv4 address
/// is. IPv4-mapped IPv6 addresses (a dual-stack listener) count as the IPv4 address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Source(IpAddr);

impl Source {
    pub fn of(ip: IpAddr) -> Source {
        match ip {
            IpAddr::V4(v4) => Source(IpAddr::V4(v4)),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Source(IpAddr::V4(v4)),
                None => {
                    let prefix = u128::from(v6) & !u128::from(u64::MAX);
                    Source(IpAddr::V6(Ipv6Addr::from(prefix)))
                }
            },
        }
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            IpAddr::V4(v4) => v4.fmt(f),
            IpAddr::V6(v6) => write!(f, "{v6}/64"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v6(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn an_ipv6_64_is_one_source() {
        assert_eq!(
            Source::of(v6("2001:db8:1:2::1")),
            Source::of(v6("2001:db8:1:2:ffff:ffff:ffff:ffff"))
        );
        assert_ne!(
            Source::of(v6("2001:db8:1:2::1")),
            Source::of(v6("2001:db8:1:3::1"))
        );
        assert_eq!(
            Source::of(v6("2001:db8:1:2::1")).to_string(),
            "2001:db8:1:2::/64"
        );
    }

    #[test]
    fn ipv4_counts_per_address_mapped_or_not() {
        let v4: IpAddr = [192, 0, 2, 7].into();
        assert_eq!(Source::of(v6("::ffff:192.0.2.7")), Source::of(v4));
        assert_ne!(Source::of(v4), Source::of([192, 0, 2, 8].into()));
        assert_eq!(Source::of(v4).to_string(), "192.0.2.7");
    }
}
