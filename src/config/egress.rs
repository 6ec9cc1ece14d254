//! `[fetch] proxy` and `no_proxy`: whether upstream connections go through an HTTP proxy (an
//! egress proxy of a corporate network). Without `proxy`, the environment decides as it does for
//! Go programs such as dockerd and containerd: `HTTPS_PROXY` for https upstreams, `HTTP_PROXY`
//! for http ones (lower-case names too, `ALL_PROXY` as the fallback of both) and `NO_PROXY`,
//! with localhost and loopback addresses always reached directly. `proxy = "none"` ignores the
//! environment; a URL sends every upstream through that proxy except the hosts in `no_proxy`.
//! `http://` proxies (an HTTP CONNECT tunnel) and SOCKS5 ones (`socks5://`, `socks5h://`): the
//! connection to the proxy is plain TCP, and an https upstream's TLS runs end to end inside.

use std::net::IpAddr;

use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

use crate::secret::Secret;

/// Where upstream connections go.
#[derive(Debug, Clone, Default)]
pub struct EgressConfig {
    /// The proxy of `https://` upstreams (`None`: direct).
    pub https: Option<ProxyUrl>,
    /// The proxy of `http://` upstreams (`None`: direct).
    pub http: Option<ProxyUrl>,
    /// Hosts reached directly even when a proxy is set.
    pub no_proxy: NoProxy,
    /// Where the setting came from, for `check-config` and the start-up log.
    pub source: &'static str,
}

impl EgressConfig {
    /// The proxy a connection to `scheme://host` goes through, if any.
    pub fn proxy_for(&self, https: bool, host: &str) -> Option<&ProxyUrl> {
        let proxy = if https { &self.https } else { &self.http };
        proxy.as_ref().filter(|_| !self.no_proxy.matches(host))
    }

    /// One line for `check-config`; never a password.
    pub fn describe(&self) -> String {
        let via = |p: &Option<ProxyUrl>| p.as_ref().map_or("direct".to_string(), ProxyUrl::describe);
        match (&self.https, &self.http) {
            (None, None) => format!("direct ({})", self.source),
            _ => format!(
                "https via {}, http via {}, no_proxy [{}] ({})",
                via(&self.https),
                via(&self.http),
                self.no_proxy.0.join(", "),
                self.source
            ),
        }
    }
}

/// How the proxy is asked for a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyKind {
    /// `http://`: an HTTP CONNECT tunnel.
    Http,
    /// `socks5://` (regcache resolves the destination and sends its address) or `socks5h://`
    /// (the proxy resolves the name), RFC 1928.
    Socks5 { remote_dns: bool },
}

impl ProxyKind {
    fn scheme(self) -> &'static str {
        match self {
            ProxyKind::Http => "http",
            ProxyKind::Socks5 { remote_dns: false } => "socks5",
            ProxyKind::Socks5 { remote_dns: true } => "socks5h",
        }
    }
}

/// A `http://`, `socks5://` or `socks5h://` `[user[:password]@]host[:port]` proxy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyUrl {
    pub kind: ProxyKind,
    /// `host:port` (`[v6]:port`), what the proxy is connected to; port 80 (http) or 1080
    /// (SOCKS) when not given.
    pub authority: String,
    /// Sent as `Proxy-Authorization: Basic` on every CONNECT, or as SOCKS5's user and password.
    pub credentials: Option<(String, Secret)>,
}

impl ProxyUrl {
    /// `scheme://[user:password@]host:port`, user and password percent-encoded: for clients
    /// that take a proxy as a URL (the `[storage]` S3 client).
    pub fn url(&self) -> String {
        let scheme = self.kind.scheme();
        match &self.credentials {
            Some((user, password)) => format!(
                "{scheme}://{}:{}@{}",
                encode(user),
                encode(password.expose()),
                self.authority
            ),
            None => format!("{scheme}://{}", self.authority),
        }
    }

    fn describe(&self) -> String {
        let scheme = self.kind.scheme();
        match &self.credentials {
            Some((user, _)) => format!("{scheme}://{}@{} (password set)", user, self.authority),
            None => format!("{scheme}://{}", self.authority),
        }
    }

    fn parse(text: &str) -> Result<ProxyUrl, String> {
        let text = text.trim();
        let (kind, rest) = match text.split_once("://") {
            Some((scheme, rest)) => match scheme.to_ascii_lowercase().as_str() {
                "http" => (ProxyKind::Http, rest),
                "socks5" => (ProxyKind::Socks5 { remote_dns: false }, rest),
                "socks5h" => (ProxyKind::Socks5 { remote_dns: true }, rest),
                "https" => return Err("https:// proxies (TLS to the proxy) are not supported; give the proxy's http:// address (https upstreams stay end-to-end TLS through its CONNECT tunnel)".into()),
                _ => return Err(format!("{scheme}:// proxies are not supported, only http://, socks5:// and socks5h://")),
            },
            None => (ProxyKind::Http, text),
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.contains(['/', '?', '#']) {
            return Err("a proxy URL has no path or query".into());
        }
        let (userinfo, hostport) = match rest.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, rest),
        };
        let authority: http::uri::Authority = hostport
            .parse()
            .map_err(|_| format!("{hostport:?} is not a host[:port]"))?;
        if authority.host().is_empty() {
            return Err("the proxy URL names no host".into());
        }
        let credentials = userinfo.map(|u| {
            let (user, pass) = u.split_once(':').unwrap_or((u, ""));
            (decode(user), Secret::new(decode(pass)))
        });
        let port = match kind {
            ProxyKind::Http => 80,
            ProxyKind::Socks5 { .. } => 1080,
        };
        Ok(ProxyUrl {
            kind,
            authority: format!("{}:{}", authority.host(), authority.port_u16().unwrap_or(port)),
            credentials,
        })
    }
}

/// Percent-encoding of a URL's user or password: everything but RFC 3986's unreserved characters.
fn encode(s: &str) -> String {
    const UNRESERVED: &AsciiSet = &NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'.')
        .remove(b'_')
        .remove(b'~');
    utf8_percent_encode(s, UNRESERVED).to_string()
}

/// Percent-decoding of a URL's user or password (`%40` for `@`); malformed escapes stay as typed.
fn decode(s: &str) -> String {
    percent_decode_str(s).decode_utf8_lossy().into_owned()
}

/// `NO_PROXY` as curl and Go read it: `*` (everything), an IP address, a CIDR network, or a
/// domain that matches itself and its subdomains (a leading `.` changes nothing).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NoProxy(Vec<String>);

impl NoProxy {
    /// The entries, as NO_PROXY lists them.
    pub fn entries(&self) -> &[String] {
        &self.0
    }

    fn entry(errors: &mut Vec<String>, key: &str, entry: &str) -> Option<String> {
        let e = entry.trim().to_ascii_lowercase();
        if e.is_empty() {
            return None;
        }
        if e == "*" || cidr(&e).is_some() || e.parse::<IpAddr>().is_ok() {
            return Some(e);
        }
        // "[v6]", "[v6]:port" and "host:port" name the host; the port is not matched.
        let host = match e.strip_prefix('[') {
            Some(rest) => rest.split(']').next().unwrap_or_default(),
            None => e.rsplit_once(':').map_or(e.as_str(), |(h, _)| h),
        };
        // Go reads "*.corp.example" as ".corp.example".
        let host = host.strip_prefix('*').unwrap_or(host);
        let name = host.trim_start_matches('.');
        let valid = !name.is_empty()
            && (name.parse::<IpAddr>().is_ok()
                || name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_')));
        if !valid {
            errors.push(format!(
                "{key}: {entry:?} is not a host, domain, IP address or CIDR network"
            ));
            return None;
        }
        Some(host.to_string())
    }

    /// Whether `host` (a name or IP literal, IPv6 with or without brackets) is reached directly.
    pub fn matches(&self, host: &str) -> bool {
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        let ip = host.parse::<IpAddr>().ok();
        self.0.iter().any(|e| {
            if e == "*" {
                return true;
            }
            if let Some(ip) = ip {
                return match cidr(e) {
                    Some((net, len)) => in_network(ip, net, len),
                    None => e.parse::<IpAddr>() == Ok(ip),
                };
            }
            let domain = e.trim_start_matches('.');
            host == domain || host.strip_suffix(domain).is_some_and(|p| p.ends_with('.'))
        })
    }
}

fn cidr(e: &str) -> Option<(IpAddr, u32)> {
    let (addr, len) = e.split_once('/')?;
    let addr: IpAddr = addr.parse().ok()?;
    let len: u32 = len.parse().ok()?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    (len <= max).then_some((addr, len))
}

fn in_network(ip: IpAddr, net: IpAddr, len: u32) -> bool {
    let bits = |a: IpAddr| match a {
        IpAddr::V4(v4) => (u128::from(u32::from(v4)) << 96, true),
        IpAddr::V6(v6) => (u128::from(v6), false),
    };
    let ((ip, ip4), (net, net4)) = (bits(ip), bits(net));
    if ip4 != net4 {
        return false;
    }
    // An IPv4 address sits in the top 32 bits, so its prefix length counts from the top too.
    let mask = if len == 0 { 0 } else { u128::MAX << (128 - len) };
    ip & mask == net & mask
}

/// Always direct when the proxy comes from the environment, as Go programs do.
const LOOPBACK: [&str; 3] = ["localhost", "127.0.0.0/8", "::1"];

/// Validates `[fetch] proxy` and `no_proxy`; `env` looks up an environment variable.
pub(super) fn validate(
    errors: &mut Vec<String>,
    proxy: Option<&str>,
    no_proxy: &[String],
    env: impl Fn(&str) -> Option<String>,
) -> EgressConfig {
    let mut entries: Vec<String> = no_proxy
        .iter()
        .filter_map(|e| NoProxy::entry(errors, "fetch.no_proxy", e))
        .collect();
    let mut url = |key: &str, text: &str| match ProxyUrl::parse(text) {
        Ok(u) => Some(u),
        Err(e) => {
            errors.push(format!("{key}: {e}"));
            None
        }
    };
    match proxy.map(str::trim) {
        Some("none") => EgressConfig {
            source: "fetch.proxy = \"none\"",
            ..EgressConfig::default()
        },
        Some(text) if text != "env" => {
            let proxy = url("fetch.proxy", text);
            EgressConfig {
                https: proxy.clone(),
                http: proxy,
                no_proxy: NoProxy(entries),
                source: "fetch.proxy",
            }
        }
        _ => {
            fn first(
                env: &impl Fn(&str) -> Option<String>,
                names: &[&'static str],
            ) -> Option<(&'static str, String)> {
                names
                    .iter()
                    .find_map(|n| env(n).filter(|v| !v.trim().is_empty()).map(|v| (*n, v)))
            }
            let first = |names: &[&'static str]| first(&env, names);
            let all = ["ALL_PROXY", "all_proxy"];
            let mut from = |names: [&'static str; 2]| {
                let (name, value) = first(&names).or_else(|| first(&all))?;
                url(name, &value)
            };
            let https = from(["HTTPS_PROXY", "https_proxy"]);
            let http = from(["HTTP_PROXY", "http_proxy"]);
            if let Some((name, list)) = first(&["NO_PROXY", "no_proxy"]) {
                entries.extend(list.split(',').filter_map(|e| NoProxy::entry(errors, name, e)));
            }
            entries.extend(LOOPBACK.map(String::from));
            EgressConfig {
                https,
                http,
                no_proxy: NoProxy(entries),
                source: "environment",
            }
        }
    }
}

#[cfg(test)]
mod tests;
