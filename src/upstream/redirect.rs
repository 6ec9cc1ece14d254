//! Redirect rules: resolving a `Location`, which targets may be followed, and which repository
//! a redirected registry URL is about, so its host's token is asked for the right scope.
//!
//! The rule (`decide`): a redirect to the upstream's own origin (scheme, host and port of its
//! configured URL) is followed like the first request, whatever that address is. A redirect to
//! any other host is followed only
//! - over https to a host whose addresses are all public (an IP literal is judged here, a name
//!   by the redirect client's resolver on the addresses it is about to connect to), or
//! - to a host listed in the upstream's `redirect_hosts` (over plain http only when the upstream
//!   itself is plain http), private addresses included,
//!
//! and never to a link-local (169.254.0.0/16, fe80::/10), metadata, unspecified, multicast or
//! broadcast address, listed or not. A refused redirect connects nowhere.

use std::net::IpAddr;

use http::uri::Scheme;
use http::Uri;

use super::address::{reach, Reach};
use crate::config::UpstreamConfig;

/// How a redirect that may be followed is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Hop {
    /// The upstream's own origin: its own client, as for the first request.
    SameOrigin,
    /// Another host: the redirect client, whose resolver checks every address of a name.
    Elsewhere,
}

/// `scheme://host:port` of a URL, for messages: never its path or query (signed URLs carry
/// credentials there).
pub(super) fn origin_of(uri: &Uri) -> String {
    let authority = uri.authority().map(|a| a.as_str()).unwrap_or("?");
    format!("{}://{authority}", uri.scheme_str().unwrap_or("?"))
}

fn port_of(scheme: &Scheme, port: Option<u16>) -> u16 {
    port.unwrap_or(if *scheme == Scheme::HTTPS { 443 } else { 80 })
}

/// May a request to the upstream `config` follow a redirect to `next`? `Err` says why not.
pub(super) fn decide(config: &UpstreamConfig, next: &Uri) -> Result<Hop, String> {
    let scheme = match next.scheme_str() {
        Some("https") => Scheme::HTTPS,
        Some("http") => Scheme::HTTP,
        _ => return Err("only http and https redirects are followed".into()),
    };
    let Some(host) = next.host().filter(|h| !h.is_empty()) else {
        return Err("the redirect names no host".into());
    };
    let port = port_of(&scheme, next.port_u16());
    let own_port = port_of(&config.scheme, config.authority.port_u16());
    if scheme == config.scheme && host.eq_ignore_ascii_case(config.authority.host()) && port == own_port {
        return Ok(Hop::SameOrigin);
    }
    let ip = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host)
        .parse::<IpAddr>()
        .ok();
    let class = ip.map(reach);
    if let Some(Reach::Never(what)) = class {
        return Err(format!("{host} is {what}: never followed on a redirect"));
    }
    let listed = config.redirect_hosts.iter().any(|h| h.matches(host, port));
    if scheme == Scheme::HTTP && config.scheme == Scheme::HTTPS {
        return Err("an https upstream is only followed to https".into());
    }
    if listed {
        return Ok(Hop::Elsewhere);
    }
    if scheme == Scheme::HTTP {
        return Err("plain http to another host is followed only to hosts in redirect_hosts".into());
    }
    match class {
        Some(Reach::Private(what)) => Err(format!("{host} is {what}, and not in redirect_hosts")),
        _ => Ok(Hop::Elsewhere),
    }
}

/// Resolves a `Location` against the URL that answered with it.
pub(super) fn resolve(base: &Uri, location: &str) -> Option<Uri> {
    let loc: Uri = location.parse().ok()?;
    if loc.scheme().is_some() {
        return Some(loc);
    }
    let path = loc.path_and_query()?.as_str();
    if !path.starts_with('/') {
        return None;
    }
    Uri::builder()
        .scheme(base.scheme()?.clone())
        .authority(base.authority()?.clone())
        .path_and_query(path)
        .build()
        .ok()
}

/// `repository:<name>:pull` for a registry API path (`/v2/<name>/manifests/<ref>`, `/blobs/`,
/// `/tags/list`, `/referrers/`), `None` for anything else (storage and CDN URLs).
pub(super) fn scope_of(path: &str) -> Option<String> {
    let rest = path.strip_prefix("/v2/")?;
    let segments: Vec<&str> = rest.split('/').collect();
    if segments.len() < 3 {
        return None;
    }
    let kind = segments[segments.len() - 2];
    if !matches!(kind, "manifests" | "blobs" | "tags" | "referrers") {
        return None;
    }
    let name = segments[..segments.len() - 2].join("/");
    (!name.is_empty()).then(|| format!("repository:{name}:pull"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_redirects() {
        let base: Uri = "https://reg.example/v2/a/blobs/x".parse().unwrap();
        assert_eq!(
            resolve(&base, "https://cdn.example/b?sig=1").unwrap().to_string(),
            "https://cdn.example/b?sig=1"
        );
        assert_eq!(
            resolve(&base, "/other?x=1").unwrap().to_string(),
            "https://reg.example/other?x=1"
        );
        assert!(resolve(&base, "relative").is_none());
    }

    fn upstream(url: &str, redirect_hosts: &[&str]) -> UpstreamConfig {
        let text = format!(
            "builtin_upstreams = false\n[[upstreams]]\nhost = \"reg.example\"\nurl = \"{url}\"\nredirect_hosts = {redirect_hosts:?}\n"
        );
        crate::config::Config::from_toml_str(&text).unwrap().upstreams[0].clone()
    }

    fn to(config: &UpstreamConfig, url: &str) -> Result<Hop, String> {
        decide(config, &url.parse().unwrap())
    }

    #[test]
    fn the_upstreams_own_origin_is_followed_wherever_it_is() {
        let lab = upstream("http://127.0.0.1:5000", &[]);
        assert_eq!(to(&lab, "http://127.0.0.1:5000/v2/x"), Ok(Hop::SameOrigin));
        // Another port or scheme is another origin.
        assert!(to(&lab, "http://127.0.0.1:5001/x").is_err());
        assert!(to(&lab, "https://127.0.0.1:5000/x").is_err());
        let hub = upstream("https://Registry.Example", &[]);
        assert_eq!(to(&hub, "https://registry.example:443/v2/x"), Ok(Hop::SameOrigin));
    }

    #[test]
    fn other_hosts_need_https_and_public_addresses() {
        let hub = upstream("https://registry.example", &[]);
        // Names are judged again on the addresses they resolve to, by the redirect client.
        assert_eq!(
            to(&hub, "https://production.cloudflare.docker.com/x?sig=1"),
            Ok(Hop::Elsewhere)
        );
        assert_eq!(to(&hub, "https://93.184.215.14/x"), Ok(Hop::Elsewhere));
        assert_eq!(to(&hub, "https://[2606:4700::1]/x"), Ok(Hop::Elsewhere));
        let e = to(&hub, "http://cdn.example/x").unwrap_err();
        assert_eq!(e, "an https upstream is only followed to https");
        let e = to(&hub, "https://10.1.2.3/x").unwrap_err();
        assert_eq!(e, "10.1.2.3 is private (RFC 1918), and not in redirect_hosts");
        assert!(to(&hub, "https://127.0.0.77/x").is_err());
        assert!(to(&hub, "https://[::ffff:127.0.0.1]/x").is_err());
        assert!(to(&hub, "ftp://cdn.example/x").is_err());
        let lab = upstream("http://127.0.0.1:5000", &[]);
        let e = to(&lab, "http://cdn.example/x").unwrap_err();
        assert!(e.contains("only to hosts in redirect_hosts"), "{e}");
    }

    #[test]
    fn listed_hosts_may_be_private_but_never_link_local() {
        let lab = upstream(
            "http://127.0.0.1:5000",
            &["blobs.lab.internal:9000", "127.0.0.77"],
        );
        assert_eq!(to(&lab, "http://blobs.lab.internal:9000/b"), Ok(Hop::Elsewhere));
        assert!(to(&lab, "http://blobs.lab.internal:9001/b").is_err());
        assert_eq!(to(&lab, "http://127.0.0.77:1234/b"), Ok(Hop::Elsewhere));
        assert_eq!(to(&lab, "https://127.0.0.77/b"), Ok(Hop::Elsewhere));
        for metadata in [
            "http://169.254.169.254/latest/meta-data/",
            "https://169.254.169.254/",
            "http://[fe80::1]/",
            "http://[::ffff:169.254.169.254]/",
            "http://[fd00:ec2::254]/",
            "http://0.0.0.0:5000/",
        ] {
            let e = to(&lab, metadata).unwrap_err();
            assert!(e.contains("never followed"), "{metadata}: {e}");
        }
        // From an https upstream, listed hosts are still reached over https only.
        let tls = upstream("https://reg.lab", &["blobs.lab.internal"]);
        assert!(to(&tls, "http://blobs.lab.internal/b").is_err());
        assert_eq!(to(&tls, "https://blobs.lab.internal/b"), Ok(Hop::Elsewhere));
    }

    #[test]
    fn scopes_of_registry_paths() {
        assert_eq!(
            scope_of("/v2/k8s-artifacts-prod/images/pause/manifests/3.9").as_deref(),
            Some("repository:k8s-artifacts-prod/images/pause:pull")
        );
        assert_eq!(
            scope_of("/v2/a/blobs/sha256:00").as_deref(),
            Some("repository:a:pull")
        );
        assert_eq!(
            scope_of("/v2/org/app/tags/list").as_deref(),
            Some("repository:org/app:pull")
        );
        assert_eq!(scope_of("/v2/"), None);
        assert_eq!(scope_of("/registry-v2/docker/blobs/sha256/fa/data"), None);
        assert_eq!(scope_of("/v2/manifests/x"), None);
    }
}
