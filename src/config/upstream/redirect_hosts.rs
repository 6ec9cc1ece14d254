//! `redirect_hosts`: the hosts (`name`, `name:port`, an IP literal, `[v6]:port`) an upstream may
//! redirect regcache to although they are not public, e.g. a lab registry's blob store on a
//! private address. An entry without a port matches every port of that host. Link-local,
//! unspecified, multicast and broadcast addresses are refused here: a redirect is never followed
//! to them, listed or not.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use http::uri::Authority;

/// One `redirect_hosts` entry: a lowercase host (IPv6 without brackets) and maybe a port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedirectHost {
    host: String,
    port: Option<u16>,
}

impl RedirectHost {
    /// The host, lowercase; an IPv6 literal without brackets.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// Does this entry cover `host` (as in a URL, brackets allowed) on `port`?
    pub fn matches(&self, host: &str, port: u16) -> bool {
        let host = unbracket(host);
        let same_host = match (self.host.parse::<IpAddr>(), host.parse::<IpAddr>()) {
            (Ok(a), Ok(b)) => a == b,
            _ => self.host.eq_ignore_ascii_case(host.trim_end_matches('.')),
        };
        same_host && self.port.is_none_or(|p| p == port)
    }
}

impl std::fmt::Display for RedirectHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.host.contains(':'), self.port) {
            (true, Some(p)) => write!(f, "[{}]:{p}", self.host),
            (false, Some(p)) => write!(f, "{}:{p}", self.host),
            (_, None) => f.write_str(&self.host),
        }
    }
}

fn unbracket(host: &str) -> &str {
    host.strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host)
}

/// Addresses no redirect is followed to, whatever the configuration says.
fn never(ip: IpAddr) -> bool {
    let v4 = |v: Ipv4Addr| v.is_link_local() || v.is_unspecified() || v.is_multicast() || v.is_broadcast();
    match ip {
        IpAddr::V4(v) => v4(v),
        IpAddr::V6(v) => {
            v.is_unicast_link_local()
                || v.is_unspecified()
                || v.is_multicast()
                || v.to_ipv4_mapped().is_some_and(v4)
                || v == Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254)
        }
    }
}

/// Parses every entry of `[[upstreams]] redirect_hosts`, reporting each bad one.
pub(super) fn parse_all(
    errors: &mut Vec<String>,
    at: &str,
    entries: Option<Vec<String>>,
) -> Vec<RedirectHost> {
    let parsed = entries.unwrap_or_default().into_iter().map(|e| parse(&e));
    parsed
        .filter_map(|r| {
            r.map_err(|e| errors.push(format!("{at}.redirect_hosts: {e}")))
                .ok()
        })
        .collect()
}

/// Parses one entry, or says what is wrong with it.
pub(super) fn parse(entry: &str) -> Result<RedirectHost, String> {
    let bare_v6 = entry.parse::<Ipv6Addr>().ok();
    let (host, port) = match bare_v6 {
        Some(v6) => (v6.to_string(), None),
        None => {
            let a: Authority = entry
                .parse()
                .map_err(|_| format!("{entry:?} is not a host or host:port"))?;
            let after_host = a.as_str().strip_prefix(a.host()).unwrap_or(":");
            let bad_port = !after_host.is_empty() && a.port_u16().is_none();
            let bad_v6 = a.host().starts_with('[') && unbracket(a.host()).parse::<Ipv6Addr>().is_err();
            if a.as_str().contains('@') || a.host().is_empty() || bad_port || bad_v6 {
                return Err(format!("{entry:?} is not a host or host:port"));
            }
            (unbracket(a.host()).to_ascii_lowercase(), a.port_u16())
        }
    };
    if let Ok(ip) = host.parse::<IpAddr>() {
        if never(ip) {
            return Err(format!(
                "{entry:?}: link-local, unspecified, multicast and metadata addresses are never followed"
            ));
        }
    }
    Ok(RedirectHost {
        host: host.trim_end_matches('.').to_string(),
        port,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries() {
        let e = parse("Blobs.Lab.Internal:9000").unwrap();
        assert_eq!(e.to_string(), "blobs.lab.internal:9000");
        assert!(e.matches("blobs.lab.internal", 9000));
        assert!(e.matches("BLOBS.lab.internal.", 9000));
        assert!(!e.matches("blobs.lab.internal", 443));
        let any_port = parse("127.0.0.77").unwrap();
        assert!(any_port.matches("127.0.0.77", 1234));
        assert!(!any_port.matches("127.0.0.7", 1234));
        let v6 = parse("[fd00::1]:5000").unwrap();
        assert_eq!(v6.host(), "fd00::1");
        assert!(v6.matches("[fd00:0::1]", 5000));
        assert_eq!(v6.to_string(), "[fd00::1]:5000");
        assert!(parse("::1").unwrap().matches("[::1]", 80));
    }

    #[test]
    fn refused_entries() {
        for bad in ["", "http://x", "x/y", "u@x", "x:", "x:port", "[x]:1", "a b"] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
        for never in [
            "169.254.169.254",
            "[fe80::1]:80",
            "0.0.0.0",
            "224.0.0.1",
            "::ffff:169.254.1.1",
        ] {
            let e = parse(never).unwrap_err();
            assert!(e.contains("never followed"), "{never}: {e}");
        }
    }
}
