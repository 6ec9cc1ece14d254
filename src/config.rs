//! The validated configuration. `Config::from_toml_str` parses the raw file shape
//! (`config/file.rs`), applies defaults and the built-in upstreams, and reports every problem at
//! once, one readable line each. `regcache check-config` runs exactly this path.

mod admin;
mod auth;
mod cache;
mod connections;
pub mod docker_config;
mod egress;
mod exposure;
mod fetch;
mod file;
mod hosted;
mod keys;
pub use keys::table_keys;
mod storage;
mod tls;
mod upstream;
mod upstream_set;

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use http::uri::{Authority, Scheme};

use crate::secret::Secret;
pub use crate::units::{parse_duration, parse_size};
pub use auth::{AccessRule, Anonymous, AuthConfig, PatternPart, Reader, RepoPattern};
pub use connections::{DEFAULT_IDLE_TIMEOUT, DEFAULT_MAX_CONNECTIONS};
pub use egress::{EgressConfig, NoProxy, ProxyKind, ProxyUrl};
use file::FileConfig;
pub use hosted::HostedConfig;
pub use storage::{S3Config, StorageConfig};
pub use tls::{ClientAuth, TlsConfig};
pub use upstream::RedirectHost;
pub use upstream::{ClientCert, CredentialSource, Credentials, UpstreamConfig, DEFAULT_CREDENTIAL_LIFETIME};

/// Where a mirror started with no config file listens.
pub const DEFAULT_LISTEN: &str = "0.0.0.0:5000";
/// Where the admin endpoints listen by default: loopback only.
pub const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:5001";
/// Where a mirror started with no config file keeps its cache (relative to the working directory).
pub const DEFAULT_CACHE_DIR: &str = "regcache-data";

/// The public registries regcache knows without configuration: (client-facing host, URL).
/// The first one is the default upstream.
pub const BUILTIN_UPSTREAMS: &[(&str, &str)] = &[
    ("docker.io", "https://registry-1.docker.io"),
    ("ghcr.io", "https://ghcr.io"),
    ("quay.io", "https://quay.io"),
    ("registry.k8s.io", "https://registry.k8s.io"),
    ("gcr.io", "https://gcr.io"),
    ("public.ecr.aws", "https://public.ecr.aws"),
    ("mcr.microsoft.com", "https://mcr.microsoft.com"),
];

#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    /// `/metrics`, `/healthz`, `/readyz`.
    pub admin_listen: SocketAddr,
    /// The bearer token of state-changing admin requests, from `[admin] token_file`.
    pub admin_token: Option<Secret>,
    /// How long a stopping daemon lets open requests and downloads finish, all together.
    pub shutdown_grace: Duration,
    /// The registry listener's cap on client connections served at once.
    pub max_connections: usize,
    /// How long a client connection may stay without a request head (both listeners).
    pub idle_timeout: Duration,
    /// Cached blobs go to plain-HTTP/1.1 clients with sendfile(2) (default true).
    pub sendfile: bool,
    pub log: LogConfig,
    pub cache: CacheConfig,
    pub fetch: FetchConfig,
    /// Never empty; exactly one has `default`.
    pub upstreams: Vec<UpstreamConfig>,
    /// `[tls]`: the registry listener speaks TLS; `None`: plain HTTP.
    pub tls: Option<TlsConfig>,
    /// `[auth]` and `[[access]]`: client authentication and read rules.
    pub auth: AuthConfig,
    /// `[[hosted]]`: namespaces regcache hosts itself (pushed to, never proxied).
    pub hosted: Vec<HostedConfig>,
    /// `[storage]`: the cache directory alone, or in front of a bucket shared by replicas.
    pub storage: StorageConfig,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone)]
pub struct LogConfig {
    pub format: LogFormat,
    /// A tracing filter (`info`, `regcache=debug`); `RUST_LOG` overrides it.
    pub level: String,
}

#[derive(Debug, Clone)]
pub struct CacheConfig {
    pub dir: PathBuf,
    /// How long a tag's digest is trusted before it is revalidated upstream with a HEAD.
    pub tag_ttl: Duration,
    /// How long an upstream "manifest unknown" is remembered, so a crash-looping pod does not
    /// hammer the upstream. Zero turns it off.
    pub negative_ttl: Duration,
    /// How long a stale tag's revalidation may take before the cached tag is served anyway.
    pub revalidate_timeout: Duration,
    /// `revalidate = "background"`: a stale tag is served at once and revalidated behind it.
    pub revalidate_in_background: bool,
    /// Hard budget for blobs and manifests on disk; `None`: unlimited.
    pub max_size: Option<u64>,
    /// Fraction of `max_size` past which an insert evicts least-recently-used content...
    pub high_watermark: f64,
    /// ...until usage is under this fraction of `max_size`.
    pub low_watermark: f64,
    /// Content nobody has used for this long is evicted whatever the budget; `None`: kept.
    pub unused_ttl: Option<Duration>,
}

#[derive(Debug, Clone)]
pub struct FetchConfig {
    pub connect_timeout: Duration,
    /// Longest wait for the next body bytes from an upstream.
    pub read_timeout: Duration,
    /// Longest wait for an upstream's response headers once connected (a black-holed upstream
    /// fails within `connect_timeout` + this).
    pub header_timeout: Duration,
    pub max_manifest_size: u64,
    /// Finish a blob download even when every client that wanted it has gone, so the next pull
    /// is a hit.
    pub finish_abandoned: bool,
    /// Consecutive failures (connect errors, timeouts, 5xx) that mark an upstream down.
    pub breaker_threshold: u32,
    /// How often a downed upstream is probed in the background.
    pub breaker_probe_interval: Duration,
    /// `proxy`/`no_proxy` or the environment: which upstream connections go through a proxy.
    pub egress: EgressConfig,
}

/// Every problem found in a configuration, one line each.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<String>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "config error: {e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

impl Default for Config {
    fn default() -> Self {
        match Config::from_toml_str("") {
            Ok(c) => c,
            Err(e) => unreachable!("built-in defaults are valid: {e}"),
        }
    }
}

impl Config {
    pub fn from_toml_str(text: &str) -> Result<Config, ConfigErrors> {
        let mut table: toml::Table =
            toml::from_str(text).map_err(|e| ConfigErrors(vec![toml_error(text, &e)]))?;
        let mut errors = Vec::new();
        keys::remove_unknown(&mut errors, &mut table);
        let raw: FileConfig = match table.try_into() {
            Ok(raw) => raw,
            Err(e) => {
                errors.push(toml_error(text, &e));
                return Err(ConfigErrors(errors));
            }
        };
        match validate(raw) {
            Ok(config) if errors.is_empty() => Ok(config),
            Ok(_) => Err(ConfigErrors(errors)),
            Err(ConfigErrors(more)) => {
                errors.extend(more);
                Err(ConfigErrors(errors))
            }
        }
    }

    /// Valid but risky choices, one line each, for `check-config` and the start-up log.
    pub fn warnings(&self) -> Vec<String> {
        let mut all = admin::warnings(self.admin_listen, self.admin_token.as_ref());
        all.extend(exposure::warnings(self));
        all.extend(storage::warnings(&self.storage));
        all
    }

    pub fn from_file(path: &std::path::Path) -> Result<Config, ConfigErrors> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigErrors(vec![format!("cannot read {}: {e}", path.display())]))?;
        Config::from_toml_str(&text).map_err(|ConfigErrors(v)| {
            ConfigErrors(
                v.into_iter()
                    .map(|e| format!("{}: {e}", path.display()))
                    .collect(),
            )
        })
    }

    pub fn default_upstream(&self) -> &UpstreamConfig {
        self.upstreams
            .iter()
            .find(|u| u.default)
            .unwrap_or(&self.upstreams[0])
    }
}

/// A TOML error without toml's source excerpt, which could quote a password.
fn toml_error(text: &str, e: &toml::de::Error) -> String {
    let message = e.message().trim_end();
    match e.span() {
        Some(span) => {
            let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
            format!("line {line}: {message}")
        }
        None => message.to_string(),
    }
}

fn duration(errors: &mut Vec<String>, key: &str, value: Option<&str>, default: Duration) -> Duration {
    match value.map(parse_duration) {
        None => default,
        Some(Ok(d)) => d,
        Some(Err(e)) => {
            errors.push(format!("{key}: {e}"));
            default
        }
    }
}

fn address(
    errors: &mut Vec<String>,
    key: &str,
    text: &str,
    example: &str,
    fallback: SocketAddr,
) -> SocketAddr {
    text.parse().unwrap_or_else(|_| {
        errors.push(format!("{key}: {text:?} is not an address like \"{example}\""));
        fallback
    })
}

fn validate_log(errors: &mut Vec<String>, raw: file::FileLog) -> LogConfig {
    let format = match raw.format.as_deref() {
        None | Some("text") => LogFormat::Text,
        Some("json") => LogFormat::Json,
        Some(other) => {
            errors.push(format!("log.format: {other:?} is not \"text\" or \"json\""));
            LogFormat::Text
        }
    };
    let level = raw.level.unwrap_or_else(|| "info".to_string());
    if tracing_subscriber::EnvFilter::try_new(&level).is_err() {
        errors.push(format!(
            "log.level: {level:?} is not a log filter like \"info\" or \"regcache=debug\""
        ));
    }
    LogConfig { format, level }
}

fn validate(raw: FileConfig) -> Result<Config, ConfigErrors> {
    let mut errors = Vec::new();
    let listen = address(
        &mut errors,
        "listen",
        raw.listen.as_deref().unwrap_or(DEFAULT_LISTEN),
        "0.0.0.0:5000",
        SocketAddr::from(([0, 0, 0, 0], 5000)),
    );
    let admin = admin::validate(&mut errors, raw.admin, listen);
    let shutdown_grace = duration(
        &mut errors,
        "shutdown_grace",
        raw.shutdown_grace.as_deref(),
        Duration::from_secs(30),
    );
    let connections = connections::validate(&mut errors, raw.max_connections, raw.idle_timeout.as_deref());
    let log = validate_log(&mut errors, raw.log);
    let cache = cache::validate(&mut errors, raw.cache);
    let fetch = fetch::validate(&mut errors, raw.fetch);
    let upstreams = upstream_set::validate(
        &mut errors,
        raw.builtin_upstreams.unwrap_or(true),
        raw.offline.unwrap_or(false),
        raw.upstreams,
    );
    let tls = tls::validate(&mut errors, raw.tls);
    let auth = auth::validate(&mut errors, raw.auth, raw.access);
    let hosted = hosted::validate(&mut errors, raw.hosted, &upstreams);
    let storage = storage::validate(&mut errors, raw.storage, &fetch.egress);
    if !errors.is_empty() {
        return Err(ConfigErrors(errors));
    }
    Ok(Config {
        listen,
        admin_listen: admin.listen,
        admin_token: admin.token,
        shutdown_grace,
        max_connections: connections.max_connections,
        idle_timeout: connections.idle_timeout,
        sendfile: raw.sendfile.unwrap_or(true),
        log,
        cache,
        fetch,
        upstreams,
        tls,
        auth,
        hosted,
        storage,
    })
}

fn parse_url(url: &str) -> Result<(Scheme, Authority), String> {
    let uri: http::Uri = url.parse().map_err(|e| format!("{url:?} is not a URL: {e}"))?;
    let scheme = uri
        .scheme()
        .cloned()
        .ok_or(format!("{url:?} needs http:// or https://"))?;
    if scheme != Scheme::HTTP && scheme != Scheme::HTTPS {
        return Err(format!("{url:?}: only http:// and https:// are supported"));
    }
    let authority = uri.authority().cloned().ok_or(format!("{url:?} has no host"))?;
    if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
        return Err(format!("{url:?}: give the registry root, without a path"));
    }
    Ok((scheme, authority))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_useful() {
        let c = Config::default();
        assert_eq!(c.listen.to_string(), DEFAULT_LISTEN);
        assert_eq!(c.default_upstream().host, "docker.io");
        assert_eq!(c.default_upstream().base_url(), "https://registry-1.docker.io");
        assert_eq!(c.upstreams.len(), BUILTIN_UPSTREAMS.len());
    }

    #[test]
    fn file_replaces_and_adds_upstreams() {
        let c = Config::from_toml_str(
            r#"
            [[upstreams]]
            host = "docker.io"
            url = "http://127.0.0.1:1"
            [[upstreams]]
            host = "lab.example:5000"
            url = "http://127.0.0.1:2"
            default = true
            "#,
        )
        .unwrap();
        assert_eq!(c.default_upstream().host, "lab.example:5000");
        let hub = c.upstreams.iter().find(|u| u.host == "docker.io").unwrap();
        assert_eq!(hub.base_url(), "http://127.0.0.1:1");
        assert_eq!(c.upstreams.iter().filter(|u| u.default).count(), 1);
    }

    #[test]
    fn reports_every_problem() {
        let e = Config::from_toml_str(
            r#"
            listen = "nowhere"
            [cache]
            tag_ttl = "soon"
            [[upstreams]]
            url = "ftp://x"
            username = "u"
            "#,
        )
        .unwrap_err();
        assert_eq!(e.0.len(), 5, "{e}");
        let unknown = Config::from_toml_str("[cache]\nsize = 1\n").unwrap_err();
        assert!(unknown.to_string().contains("unknown field"), "{unknown}");
    }
}
