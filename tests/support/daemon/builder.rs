//! A typed daemon configuration for tests, so a test says what it changes
//! (`DaemonBuilder::new().upstream(&fake).tag_ttl("0s").start().await`) instead of writing TOML.
//! It renders the TOML file an operator would write and starts the daemon from it through
//! `Config::from_toml_str`, the path `regcache serve` takes. Every daemon listens on
//! 127.0.0.1:0 (registry and admin), has no built-in upstreams and caches in a temp dir.

use std::path::Path;

use toml::{Table, Value};

use super::Daemon;
use crate::support::fake::Fake;
use crate::support::listeners::BlackHole;

/// What a test can name as an upstream: the fake registry, a black hole, or a URL.
pub trait UpstreamUrl {
    fn upstream_url(&self) -> String;
}

impl UpstreamUrl for str {
    fn upstream_url(&self) -> String {
        self.to_string()
    }
}

impl UpstreamUrl for String {
    fn upstream_url(&self) -> String {
        self.clone()
    }
}

impl UpstreamUrl for Fake {
    fn upstream_url(&self) -> String {
        self.url()
    }
}

impl UpstreamUrl for BlackHole {
    fn upstream_url(&self) -> String {
        self.url()
    }
}

/// One `[[upstreams]]` entry.
pub struct Upstream(Table);

impl Upstream {
    /// The upstream regcache calls `host` (what clients name in `?ns=` or a path prefix), served
    /// from `url`.
    pub fn new(host: &str, url: &(impl UpstreamUrl + ?Sized)) -> Upstream {
        let mut t = Table::new();
        t.insert("host".into(), host.into());
        t.insert("url".into(), url.upstream_url().into());
        Upstream(t)
    }

    fn set(mut self, key: &str, value: impl Into<Value>) -> Upstream {
        self.0.insert(key.into(), value.into());
        self
    }

    /// `default = true`: the upstream of names without a registry.
    pub fn default_upstream(self) -> Upstream {
        self.set("default", true)
    }

    /// `username` and `password`.
    /// `public = true`: served to anonymous clients although regcache holds credentials for it
    /// (an upstream with credentials is private by default).
    pub fn public(self) -> Upstream {
        self.set("public", true)
    }

    pub fn credentials(self, user: &str, password: &str) -> Upstream {
        self.set("username", user).set("password", password)
    }

    /// `username` and `password_file`.
    pub fn password_file(self, user: &str, file: &Path) -> Upstream {
        self.set("username", user)
            .set("password_file", file.display().to_string())
    }

    pub fn docker_config(self, file: &Path) -> Upstream {
        self.set("docker_config", file.display().to_string())
    }

    pub fn credential_helper(self, program: &Path) -> Upstream {
        self.set("credential_helper", program.display().to_string())
    }

    pub fn credential_lifetime(self, lifetime: &str) -> Upstream {
        self.set("credential_lifetime", lifetime)
    }

    pub fn max_connections(self, n: u32) -> Upstream {
        self.set("max_connections", n)
    }

    pub fn ca_file(self, file: &Path) -> Upstream {
        self.set("ca_file", file.display().to_string())
    }

    /// `redirect_hosts`: hosts a redirect may lead to although they are not public.
    pub fn redirect_hosts(self, hosts: &[String]) -> Upstream {
        self.set("redirect_hosts", hosts.to_vec())
    }

    /// `send_ns = true`: the upstream is another mirror tier.
    pub fn send_ns(self) -> Upstream {
        self.set("send_ns", true)
    }

    /// `fallback`: registries asked when this one fails.
    pub fn fallback(self, urls: &[String]) -> Upstream {
        self.set("fallback", urls.to_vec())
    }

    /// `fallback = [{ url, username, password }]`: one fallback with Basic credentials.
    pub fn fallback_with_credentials(self, url: &str, user: &str, password: &str) -> Upstream {
        let table = Table::from_iter([
            ("url".to_string(), Value::from(url)),
            ("username".to_string(), Value::from(user)),
            ("password".to_string(), Value::from(password)),
        ]);
        self.set("fallback", vec![Value::Table(table)])
    }

    /// `client_cert_file` and `client_key_file`.
    pub fn client_cert(self, cert: &Path, key: &Path) -> Upstream {
        self.set("client_cert_file", cert.display().to_string())
            .set("client_key_file", key.display().to_string())
    }
}

/// The configuration of an in-process daemon, then `start` it.
pub struct DaemonBuilder {
    dir: Option<tempfile::TempDir>,
    offline: bool,
    admin: Table,
    cache: Table,
    fetch: Table,
    tls: Table,
    extra: Table,
    upstreams: Vec<Upstream>,
}

impl DaemonBuilder {
    pub fn new() -> DaemonBuilder {
        DaemonBuilder {
            dir: None,
            offline: false,
            admin: Table::new(),
            cache: Table::new(),
            fetch: Table::new(),
            tls: Table::new(),
            extra: Table::new(),
            upstreams: Vec::new(),
        }
    }

    /// `url` as `docker.io`, the default upstream: what most tests need.
    pub fn upstream(self, url: &(impl UpstreamUrl + ?Sized)) -> DaemonBuilder {
        self.with_upstream(Upstream::new("docker.io", url).default_upstream())
    }

    /// Another `[[upstreams]]` entry, in order.
    pub fn with_upstream(mut self, upstream: Upstream) -> DaemonBuilder {
        self.upstreams.push(upstream);
        self
    }

    /// Caches in `dir` (a restart on the cache a stopped daemon left) instead of a new temp dir.
    pub fn in_dir(mut self, dir: tempfile::TempDir) -> DaemonBuilder {
        self.dir = Some(dir);
        self
    }

    /// `offline = true`: no upstream is ever contacted.
    pub fn offline(mut self) -> DaemonBuilder {
        self.offline = true;
        self
    }

    /// `[admin] listen` instead of `127.0.0.1:0` (`0.0.0.0:0`: a listener other machines reach).
    pub fn admin_listen(mut self, addr: &str) -> DaemonBuilder {
        self.admin.insert("listen".into(), addr.into());
        self
    }

    /// `[admin] token_file`.
    pub fn admin_token_file(mut self, file: &Path) -> DaemonBuilder {
        self.admin
            .insert("token_file".into(), file.display().to_string().into());
        self
    }

    pub fn tag_ttl(self, ttl: &str) -> DaemonBuilder {
        self.cache("tag_ttl", ttl)
    }

    pub fn negative_ttl(self, ttl: &str) -> DaemonBuilder {
        self.cache("negative_ttl", ttl)
    }

    pub fn revalidate_timeout(self, timeout: &str) -> DaemonBuilder {
        self.cache("revalidate_timeout", timeout)
    }

    /// `[cache] revalidate`: `"wait"` or `"background"`.
    pub fn revalidate(self, mode: &str) -> DaemonBuilder {
        self.cache("revalidate", mode)
    }

    /// `[cache] max_size`: bytes (`1_000_000`) or a size with a unit (`"12MB"`).
    pub fn max_size(self, size: impl Into<Value>) -> DaemonBuilder {
        self.cache("max_size", size)
    }

    /// `[cache] unused_ttl`: content unused for this long is swept.
    pub fn unused_ttl(self, ttl: &str) -> DaemonBuilder {
        self.cache("unused_ttl", ttl)
    }

    pub fn finish_abandoned(self, on: bool) -> DaemonBuilder {
        self.fetch("finish_abandoned", on)
    }

    pub fn read_timeout(self, timeout: &str) -> DaemonBuilder {
        self.fetch("read_timeout", timeout)
    }

    pub fn header_timeout(self, timeout: &str) -> DaemonBuilder {
        self.fetch("header_timeout", timeout)
    }

    pub fn connect_timeout(self, timeout: &str) -> DaemonBuilder {
        self.fetch("connect_timeout", timeout)
    }

    /// `breaker_threshold` and `breaker_probe_interval`.
    pub fn breaker(self, threshold: u32, probe_interval: &str) -> DaemonBuilder {
        self.fetch("breaker_threshold", threshold)
            .fetch("breaker_probe_interval", probe_interval)
    }

    /// `[fetch] proxy`: upstream connections go through this egress proxy.
    pub fn egress_proxy(self, url: &str) -> DaemonBuilder {
        self.fetch("proxy", url)
    }

    /// `[fetch] no_proxy`: hosts reached directly although a proxy is set.
    pub fn no_proxy(self, hosts: &[&str]) -> DaemonBuilder {
        self.fetch("no_proxy", hosts.to_vec())
    }

    /// `[tls] cert_file` and `key_file`: the registry listener speaks TLS.
    pub fn tls(self, cert: &Path, key: &Path) -> DaemonBuilder {
        self.tls_key("cert_file", cert.display().to_string())
            .tls_key("key_file", key.display().to_string())
    }

    /// `[tls] client_ca_file`, and `client_auth` when given (`"required"`, `"optional"`).
    pub fn client_ca(self, ca: &Path, auth: Option<&str>) -> DaemonBuilder {
        let b = self.tls_key("client_ca_file", ca.display().to_string());
        match auth {
            Some(a) => b.tls_key("client_auth", a),
            None => b,
        }
    }

    /// `shutdown_grace`: how long a stopping daemon lets requests and downloads finish.
    pub fn shutdown_grace(self, grace: &str) -> DaemonBuilder {
        self.toml_entry("shutdown_grace", grace)
    }

    /// `max_connections`: client connections the registry listener serves at once.
    pub fn max_connections(self, n: u32) -> DaemonBuilder {
        self.toml_entry("max_connections", n)
    }

    /// `idle_timeout`: both listeners' request-head deadline and HTTP/2 ping interval.
    pub fn idle_timeout(self, timeout: &str) -> DaemonBuilder {
        self.toml_entry("idle_timeout", timeout)
    }

    /// A top-level key or table written as given (`auth`, `access`).
    pub fn toml_entry(mut self, key: &str, value: impl Into<Value>) -> DaemonBuilder {
        self.extra.insert(key.into(), value.into());
        self
    }

    fn tls_key(mut self, key: &str, value: impl Into<Value>) -> DaemonBuilder {
        self.tls.insert(key.into(), value.into());
        self
    }

    fn cache(mut self, key: &str, value: impl Into<Value>) -> DaemonBuilder {
        self.cache.insert(key.into(), value.into());
        self
    }

    fn fetch(mut self, key: &str, value: impl Into<Value>) -> DaemonBuilder {
        self.fetch.insert(key.into(), value.into());
        self
    }

    /// The configuration file, with the cache in `dir`.
    fn toml(&self, dir: &Path) -> String {
        let listen = || Value::from("127.0.0.1:0");
        let mut file = Table::new();
        file.insert("listen".into(), listen());
        file.insert("builtin_upstreams".into(), false.into());
        if self.offline {
            file.insert("offline".into(), true.into());
        }
        let mut admin = Table::from_iter([("listen".into(), listen())]);
        admin.extend(self.admin.clone());
        file.insert("admin".into(), admin.into());
        let mut cache = self.cache.clone();
        cache.insert("dir".into(), dir.display().to_string().into());
        file.insert("cache".into(), cache.into());
        if !self.fetch.is_empty() {
            file.insert("fetch".into(), self.fetch.clone().into());
        }
        if !self.tls.is_empty() {
            file.insert("tls".into(), self.tls.clone().into());
        }
        file.extend(self.extra.clone());
        let upstreams: Vec<Value> = self.upstreams.iter().map(|u| u.0.clone().into()).collect();
        file.insert("upstreams".into(), upstreams.into());
        file.to_string()
    }

    /// Starts the daemon (panics with the TOML if the configuration is refused).
    pub async fn start(self) -> Daemon {
        self.start_with(None).await
    }

    /// Starts the daemon with `shared` as the store behind its cache directory.
    pub async fn start_sharing(self, shared: std::sync::Arc<dyn regcache::cache::shared::Shared>) -> Daemon {
        self.start_with(Some(shared)).await
    }

    async fn start_with(
        mut self,
        shared: Option<std::sync::Arc<dyn regcache::cache::shared::Shared>>,
    ) -> Daemon {
        let dir = match self.dir.take() {
            Some(dir) => dir,
            None => tempfile::tempdir().unwrap(),
        };
        let text = self.toml(dir.path());
        Daemon::start_from(dir, &text, shared).await
    }
}
