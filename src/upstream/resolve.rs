//! Name resolution for the upstream clients. The upstream's own client resolves as the system
//! does (`Resolver::Any`): the configured upstream and its token service may be anywhere. The
//! client that follows redirects to other hosts (`Resolver::Redirects`) checks every address a
//! name resolves to before anything connects, and hands the connector exactly the addresses it
//! checked, so a second lookup cannot swap in another one: all must be public, or, for a host
//! listed in `redirect_hosts`, anything but the addresses a redirect never reaches (see
//! `address.rs`). A refusal is a `RefusedAddress` in the connect error's source chain.

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use hyper_util::client::legacy::connect::dns::Name;

use super::address::{reach, Reach};
use crate::config::RedirectHost;

#[derive(Clone)]
pub(super) enum Resolver {
    /// Every address the system resolver returns.
    Any,
    /// Public addresses only, or non-link-local ones for the listed hosts.
    Redirects(Arc<[RedirectHost]>),
}

/// A redirect target's name resolved to an address the rule does not allow.
#[derive(Debug, thiserror::Error)]
#[error("{name} resolves to {addr}, {what}")]
pub(super) struct RefusedAddress {
    pub(super) name: String,
    addr: IpAddr,
    what: String,
}

impl Resolver {
    /// Checks one resolved address of `name`.
    fn check(&self, name: &str, addr: IpAddr) -> Result<(), RefusedAddress> {
        let Resolver::Redirects(listed) = self else {
            return Ok(());
        };
        let refused = |what: String| RefusedAddress {
            name: name.to_string(),
            addr,
            what,
        };
        match reach(addr) {
            Reach::Public => Ok(()),
            Reach::Never(what) => Err(refused(format!("{what}: never followed on a redirect"))),
            Reach::Private(what) => {
                let host = name.trim_end_matches('.');
                if listed.iter().any(|h| h.host().eq_ignore_ascii_case(host)) {
                    Ok(())
                } else {
                    Err(refused(format!("{what}: not in redirect_hosts")))
                }
            }
        }
    }

    /// Checks a destination that the egress proxy resolves, not regcache: an IP literal by its
    /// address, `localhost` (and `*.localhost`) as loopback; any other name is the proxy's.
    pub(super) fn check_unresolved(&self, host: &str) -> Result<(), RefusedAddress> {
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = bare.parse::<IpAddr>() {
            return self.check(bare, ip);
        }
        let name = bare.trim_end_matches('.').to_ascii_lowercase();
        if name == "localhost" || name.ends_with(".localhost") {
            return self.check(bare, IpAddr::V4(Ipv4Addr::LOCALHOST));
        }
        Ok(())
    }
}

type Addrs = std::vec::IntoIter<SocketAddr>;
type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl tower_service::Service<Name> for Resolver {
    type Response = Addrs;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Addrs, BoxError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let name = name.as_str();
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((name, 0)).await?.collect();
            for a in &addrs {
                this.check(name, a.ip())?;
            }
            Ok(addrs.into_iter())
        })
    }
}

/// The refusal in a client error's source chain, if that is why it failed.
pub(super) fn refusal<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a RefusedAddress> {
    let mut cur = Some(e);
    while let Some(c) = cur {
        if let Some(r) = c.downcast_ref::<RefusedAddress>() {
            return Some(r);
        }
        cur = c.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listed(hosts: &[&str]) -> Resolver {
        let text =
            format!("builtin_upstreams = false\n[[upstreams]]\nhost = \"r\"\nredirect_hosts = {hosts:?}\n");
        let c = crate::config::Config::from_toml_str(&text).unwrap();
        Resolver::Redirects(c.upstreams[0].redirect_hosts.clone().into())
    }

    #[test]
    fn checks_each_address() {
        let r = listed(&["blobs.lab.internal:9000"]);
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(r.check("cdn.example", ip("93.184.215.14")).is_ok());
        let e = r.check("cdn.example", ip("10.0.0.5")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "cdn.example resolves to 10.0.0.5, private (RFC 1918): not in redirect_hosts"
        );
        assert!(r.check("blobs.lab.internal", ip("10.0.0.5")).is_ok());
        assert!(r.check("BLOBS.lab.internal.", ip("127.0.0.1")).is_ok());
        let e = r.check("blobs.lab.internal", ip("169.254.169.254")).unwrap_err();
        assert!(e.to_string().contains("link-local: never followed"), "{e}");
        assert!(Resolver::Any.check("x", ip("169.254.169.254")).is_ok());
    }

    #[test]
    fn through_the_proxy_literals_and_localhost_are_checked() {
        let r = listed(&["[fd00::9]", "localhost"]);
        let e = r.check_unresolved("10.0.0.5").unwrap_err();
        assert!(e.to_string().ends_with("not in redirect_hosts"), "{e}");
        assert!(r.check_unresolved("[fd00::9]").is_ok());
        assert!(r.check_unresolved("[::ffff:169.254.169.254]").is_err());
        assert!(r.check_unresolved("LocalHost.").is_ok());
        let e = listed(&[]).check_unresolved("api.localhost").unwrap_err();
        assert!(
            e.to_string().starts_with("api.localhost resolves to 127.0.0.1"),
            "{e}"
        );
        // A name is the proxy's to resolve.
        assert!(listed(&[]).check_unresolved("cdn.example").is_ok());
        assert!(Resolver::Any.check_unresolved("127.0.0.1").is_ok());
    }

    #[tokio::test]
    async fn localhost_is_refused_unless_listed() {
        use tower_service::Service;
        let name: Name = "localhost".parse().unwrap();
        let e = listed(&[]).call(name.clone()).await.unwrap_err();
        assert!(e.to_string().starts_with("localhost resolves to"), "{e}");
        let addrs: Vec<_> = listed(&["localhost"]).call(name).await.unwrap().collect();
        assert!(addrs.iter().all(|a| a.ip().is_loopback()), "{addrs:?}");
    }
}
