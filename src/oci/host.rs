//! Registry hosts with an explicit port (`registry.internal:5000`, `127.0.0.1:5000`,
//! `[::1]:5000`): the first path segment of a mirror path for a registry on a non-default port
//! (`/v2/registry.internal:5000/team/app/...`). A `:` never occurs in a repository name, so such
//! a segment can only be a host: it is parsed here, apart from the name, and whether it is a
//! configured upstream is the registry layer's question. The host is
//! a DNS name or IPv4 address (dot-separated labels of letters, digits and inner dashes, kept in
//! lower case because host names are case-insensitive) or a bracketed IPv6 address; the port is
//! a decimal `u16`. Nothing else parses, so a value of this type is safe to log and to compare.

use std::fmt;
use std::net::Ipv6Addr;
use std::str::FromStr;

/// Longest host accepted: a DNS name is at most 253 characters.
const MAX_HOST_LEN: usize = 253;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HostPortError {
    #[error("{0:?} has no port")]
    NoPort(String),
    #[error("{0:?} is not a registry host name")]
    BadHost(String),
    #[error("{0:?} is not a port number")]
    BadPort(String),
}

/// A registry host and its port, as `host:port` (`[addr]:port` for IPv6).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct HostPort(String);

impl HostPort {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// One DNS label: letters and digits, with dashes only inside (RFC 1123).
fn valid_label(label: &str) -> bool {
    let b = label.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

fn valid_host(host: &str) -> bool {
    if let Some(addr) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        // Only the plain textual form: no zone id (`%eth0`), which names a local interface.
        return addr.parse::<Ipv6Addr>().is_ok();
    }
    host.len() <= MAX_HOST_LEN && host.split('.').all(valid_label)
}

impl FromStr for HostPort {
    type Err = HostPortError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (host, port) = s
            .rsplit_once(':')
            .ok_or_else(|| HostPortError::NoPort(s.to_string()))?;
        // `[::1]` alone splits inside the brackets; its port would have followed `]`.
        if host.starts_with('[') && !host.ends_with(']') {
            return Err(HostPortError::NoPort(s.to_string()));
        }
        if !valid_host(host) {
            return Err(HostPortError::BadHost(host.to_string()));
        }
        // Digits only: `u16::from_str` alone would take a leading `+`.
        if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) || port.parse::<u16>().is_err() {
            return Err(HostPortError::BadPort(port.to_string()));
        }
        Ok(HostPort(s.to_ascii_lowercase()))
    }
}

impl fmt::Display for HostPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for HostPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grammar() {
        for ok in [
            "registry.internal:5000",
            "127.0.0.1:18913",
            "localhost:5000",
            "[::1]:5000",
            "[fe80::1]:443",
            "a-b.c:1",
            "host:0",
            "host:65535",
        ] {
            assert_eq!(ok.parse::<HostPort>().map(|h| h.to_string()), Ok(ok.to_string()));
        }
        assert_eq!(
            "Registry.Internal:5000".parse::<HostPort>().unwrap().as_str(),
            "registry.internal:5000"
        );
        for bad in [
            "localhost",
            "registry.internal",
            "[::1]",
            "host:",
            ":5000",
            "host:65536",
            "host:+80",
            "host:-1",
            "host:5000:1",
            "-host:5000",
            "host-:5000",
            "a..b:5000",
            "a_b:5000",
            "[::1:5000",
            "[zz::1]:5000",
            "[fe80::1%eth0]:5000",
            "::1:5000",
            "user@host:5000",
            "host:50 00",
        ] {
            assert!(bad.parse::<HostPort>().is_err(), "{bad}");
        }
        assert!(format!("{}.x:1", "a".repeat(253)).parse::<HostPort>().is_err());
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(256))]

            #[test]
            fn accepted_hosts_are_plain(s in "\\PC{0,40}|[a-zA-Z0-9.:\\[\\]-]{1,40}") {
                if let Ok(h) = s.parse::<HostPort>() {
                    prop_assert!(h.as_str().bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b".-:[]".contains(&b)));
                    prop_assert!(!h.as_str().contains('/'));
                    prop_assert_eq!(h.as_str().parse::<HostPort>(), Ok(h.clone()));
                }
            }

            #[test]
            fn dns_hosts_round_trip(labels in prop::collection::vec("[a-z0-9]([a-z0-9-]{0,8}[a-z0-9])?", 1..4), port: u16) {
                let s = format!("{}:{port}", labels.join("."));
                prop_assert_eq!(s.parse::<HostPort>().map(|h| h.to_string()), Ok(s));
            }
        }
    }
}
