//! What kind of address a redirect would connect to. `Public` addresses may be reached by any
//! https redirect; `Private` ones (loopback, RFC 1918, unique-local, CGNAT, documentation and
//! other special-purpose ranges) only when the operator lists the host in `redirect_hosts`;
//! `Never` ones (link-local, where cloud metadata services live, the known metadata addresses
//! outside it, unspecified, multicast and broadcast) are refused even when listed. IPv6
//! addresses that carry an IPv4 address (mapped, NAT64, 6to4) are judged by that address.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// How far a redirect may go towards an address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reach {
    /// Globally routable unicast.
    Public,
    /// Internal or special-purpose: only for hosts listed in `redirect_hosts`.
    Private(&'static str),
    /// Never connected to on a redirect.
    Never(&'static str),
}

/// Classifies one address.
pub(crate) fn reach(ip: IpAddr) -> Reach {
    match ip {
        IpAddr::V4(v4) => reach_v4(v4),
        IpAddr::V6(v6) => reach_v6(v6),
    }
}

/// `(first address, prefix length, what it is)`.
type Range4 = (Ipv4Addr, u8, &'static str);

const NEVER_V4: &[Range4] = &[
    (Ipv4Addr::new(169, 254, 0, 0), 16, "link-local"),
    (Ipv4Addr::new(0, 0, 0, 0), 8, "unspecified (\"this network\")"),
    (Ipv4Addr::new(224, 0, 0, 0), 4, "multicast"),
    (Ipv4Addr::new(255, 255, 255, 255), 32, "broadcast"),
    // Alibaba Cloud's metadata service sits in the CGNAT range.
    (Ipv4Addr::new(100, 100, 100, 200), 32, "a cloud metadata address"),
];

const PRIVATE_V4: &[Range4] = &[
    (Ipv4Addr::new(127, 0, 0, 0), 8, "loopback"),
    (Ipv4Addr::new(10, 0, 0, 0), 8, "private (RFC 1918)"),
    (Ipv4Addr::new(172, 16, 0, 0), 12, "private (RFC 1918)"),
    (Ipv4Addr::new(192, 168, 0, 0), 16, "private (RFC 1918)"),
    (Ipv4Addr::new(100, 64, 0, 0), 10, "shared address space (CGNAT)"),
    (Ipv4Addr::new(192, 0, 0, 0), 24, "IETF protocol assignments"),
    (Ipv4Addr::new(192, 0, 2, 0), 24, "documentation"),
    (Ipv4Addr::new(198, 51, 100, 0), 24, "documentation"),
    (Ipv4Addr::new(203, 0, 113, 0), 24, "documentation"),
    (Ipv4Addr::new(198, 18, 0, 0), 15, "benchmarking"),
    (Ipv4Addr::new(192, 88, 99, 0), 24, "6to4 relay anycast"),
    (Ipv4Addr::new(240, 0, 0, 0), 4, "reserved"),
];

fn in_v4(ip: Ipv4Addr, (net, len, _): &Range4) -> bool {
    let mask = u32::MAX.checked_shl(32 - u32::from(*len)).unwrap_or(0);
    u32::from(ip) & mask == u32::from(*net) & mask
}

fn reach_v4(ip: Ipv4Addr) -> Reach {
    if let Some((_, _, what)) = NEVER_V4.iter().find(|r| in_v4(ip, r)) {
        return Reach::Never(what);
    }
    match PRIVATE_V4.iter().find(|r| in_v4(ip, r)) {
        Some((_, _, what)) => Reach::Private(what),
        None => Reach::Public,
    }
}

type Range6 = (Ipv6Addr, u8, &'static str);

const NEVER_V6: &[Range6] = &[
    (Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0), 10, "link-local"),
    (Ipv6Addr::new(0xff00, 0, 0, 0, 0, 0, 0, 0), 8, "multicast"),
    (Ipv6Addr::UNSPECIFIED, 128, "unspecified"),
    // AWS's instance metadata service over IPv6 (inside the unique-local range).
    (
        Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254),
        128,
        "a cloud metadata address",
    ),
];

/// Inside global unicast (2000::/3), the special-purpose ranges.
const PRIVATE_V6: &[Range6] = &[
    (
        Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0),
        32,
        "documentation",
    ),
    (Ipv6Addr::new(0x3fff, 0, 0, 0, 0, 0, 0, 0), 20, "documentation"),
    (
        Ipv6Addr::new(0x2001, 0, 0, 0, 0, 0, 0, 0),
        23,
        "IETF protocol assignments",
    ),
];

fn in_v6(ip: Ipv6Addr, (net, len, _): &Range6) -> bool {
    let mask = u128::MAX.checked_shl(128 - u32::from(*len)).unwrap_or(0);
    u128::from(ip) & mask == u128::from(*net) & mask
}

/// The IPv4 address an IPv6 address stands for: IPv4-mapped (`::ffff:a.b.c.d`), the NAT64
/// well-known prefix (`64:ff9b::a.b.c.d`) and 6to4 (`2002:aabb:ccdd::`).
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = ip.segments();
    let low = Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    match s {
        [0, 0, 0, 0, 0, 0xffff, _, _] | [0x64, 0xff9b, 0, 0, 0, 0, _, _] => Some(low),
        [0x2002, a, b, ..] => Some(Ipv4Addr::new((a >> 8) as u8, a as u8, (b >> 8) as u8, b as u8)),
        _ => None,
    }
}

fn reach_v6(ip: Ipv6Addr) -> Reach {
    if let Some((_, _, what)) = NEVER_V6.iter().find(|r| in_v6(ip, r)) {
        return Reach::Never(what);
    }
    if let Some(v4) = embedded_v4(ip) {
        return reach_v4(v4);
    }
    if ip == Ipv6Addr::LOCALHOST {
        return Reach::Private("loopback");
    }
    if let Some((_, _, what)) = PRIVATE_V6.iter().find(|r| in_v6(ip, r)) {
        return Reach::Private(what);
    }
    let global = (Ipv6Addr::new(0x2000, 0, 0, 0, 0, 0, 0, 0), 3, "");
    if in_v6(ip, &global) {
        return Reach::Public;
    }
    let unique_local = (Ipv6Addr::new(0xfc00, 0, 0, 0, 0, 0, 0, 0), 7, "");
    if in_v6(ip, &unique_local) {
        Reach::Private("unique-local")
    } else {
        Reach::Private("not global unicast")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn of(s: &str) -> Reach {
        reach(s.parse().unwrap())
    }

    fn is_public(s: &str) -> bool {
        of(s) == Reach::Public
    }

    fn is_never(s: &str) -> bool {
        matches!(of(s), Reach::Never(_))
    }

    fn is_private(s: &str) -> bool {
        matches!(of(s), Reach::Private(_))
    }

    #[test]
    fn ipv4() {
        for public in [
            "1.1.1.1",
            "8.8.8.8",
            "100.63.255.255",
            "100.128.0.0",
            "172.32.0.1",
            "192.0.3.1",
        ] {
            assert!(is_public(public), "{public}");
        }
        for private in [
            "127.0.0.1",
            "127.0.0.77",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "100.64.0.1",
            "100.127.255.255",
            "192.0.2.10",
            "198.51.100.1",
            "203.0.113.5",
            "198.19.0.1",
            "240.0.0.1",
        ] {
            assert!(is_private(private), "{private}");
        }
        for never in [
            "169.254.169.254",
            "169.254.0.1",
            "0.0.0.0",
            "0.1.2.3",
            "224.0.0.1",
            "239.255.255.250",
            "255.255.255.255",
            "100.100.100.200",
        ] {
            assert!(is_never(never), "{never}");
        }
        assert_eq!(of("169.254.169.254"), Reach::Never("link-local"));
    }

    #[test]
    fn ipv6() {
        for public in [
            "2606:4700:4700::1111",
            "2a00:1450:4001::200e",
            "2001:4860:4860::8888",
        ] {
            assert!(is_public(public), "{public}");
        }
        for private in [
            "::1",
            "fc00::1",
            "fd12:3456::1",
            "2001:db8::1",
            "3fff::1",
            "fec0::1",
            "100::1",
        ] {
            assert!(is_private(private), "{private}");
        }
        for never in ["fe80::1", "febf::1", "ff02::1", "::", "fd00:ec2::254"] {
            assert!(is_never(never), "{never}");
        }
    }

    #[test]
    fn ipv6_carrying_ipv4_is_judged_by_the_ipv4_address() {
        assert!(is_never("::ffff:169.254.169.254"));
        assert!(is_never("::ffff:a9fe:a9fe"));
        assert!(is_private("::ffff:127.0.0.1"));
        assert!(is_private("::ffff:10.0.0.1"));
        assert!(is_public("::ffff:1.1.1.1"));
        assert!(is_never("64:ff9b::169.254.169.254"));
        assert!(is_private("64:ff9b::192.168.0.1"));
        assert!(is_public("64:ff9b::8.8.8.8"));
        assert!(is_never("2002:a9fe:a9fe::1"));
        assert!(is_private("2002:7f00:1::1"));
        assert!(is_public("2002:0808:0808::1"));
        // IPv4-compatible (deprecated) addresses are not global unicast.
        assert!(is_private("::127.0.0.1"));
    }
}
