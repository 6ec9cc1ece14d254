//! One validated `[[upstreams]]` entry: where the registry is, how regcache authenticates to it
//! (a username with a password from the file, a file or the environment; a Docker config.json;
//! or a docker credential helper), its TLS options, its connection cap and the non-public hosts
//! it may redirect to (`upstream/redirect_hosts.rs`). Secrets are wrapped in `Secret` the moment
//! they are read, and no error message repeats one.

mod credentials;
mod fallbacks;
mod redirect_hosts;
mod visibility;

use std::path::PathBuf;
use std::time::Duration;

use http::uri::{Authority, Scheme};

use super::file::FileUpstream;
use super::{duration, parse_url};
use crate::secret::Secret;
use credentials::credentials;
pub use redirect_hosts::RedirectHost;

/// How long credentials from a Docker config.json or a credential helper are used before they
/// are read again (ECR tokens live 12 h; the ECR helper caches them itself).
pub const DEFAULT_CREDENTIAL_LIFETIME: Duration = Duration::from_secs(3600);

#[derive(Debug, Clone)]
pub struct UpstreamConfig {
    /// The registry name clients use: `docker.io`, `ghcr.io`, `registry.example:5000`.
    pub host: String,
    pub scheme: Scheme,
    pub authority: Authority,
    pub default: bool,
    pub credentials: CredentialSource,
    /// How long resolved credentials (config.json, helper) are reused before being read again.
    pub credential_lifetime: Duration,
    /// At most this many requests to this upstream at once (body downloads included).
    pub max_connections: Option<usize>,
    pub ca_file: Option<PathBuf>,
    pub client_cert: Option<ClientCert>,
    /// Never contact this upstream: serve what is cached, 404 for the rest.
    pub offline: bool,
    /// Hosts a redirect may lead to although they are not public (see `upstream/redirect.rs`).
    pub redirect_hosts: Vec<RedirectHost>,
    /// Never served to anonymous clients (`private = true`; default with credentials).
    pub private: bool,
    /// `url` is another mirror (a cluster tier of regcache): every request carries
    /// `?ns=<host>`, as containerd sends it, so the next tier knows which registry is meant.
    pub send_ns: bool,
    /// Other registries serving the same content, asked in order when this one fails (see
    /// `upstream/fallback.rs`): each with its own URL and credentials, under this `host`.
    pub fallback: Vec<UpstreamConfig>,
}

/// A client certificate (PEM chain) and its private key (PEM) for mutual TLS.
#[derive(Debug, Clone)]
pub struct ClientCert {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

/// Credentials for a registry's own host (never sent to redirect targets).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credentials {
    /// Sent as HTTP Basic to the registry or its token service (`AWS:<token>` for ECR).
    Basic { username: String, password: Secret },
    /// An OAuth2 refresh token (Docker's "identity token"), exchanged at the token service.
    IdentityToken(Secret),
}

/// Where an upstream's credentials come from.
#[derive(Debug, Clone)]
pub enum CredentialSource {
    Anonymous,
    /// `username` + `password` / `password_file` / `password_env`, read once at start.
    Static(Credentials),
    /// A Docker `config.json`, read at first use and again after `credential_lifetime`.
    DockerConfig(PathBuf),
    /// `docker-credential-<name>`, or a path to the helper program.
    Helper(String),
}

impl CredentialSource {
    /// One line for `check-config`: which source, never a secret.
    pub fn describe(&self) -> String {
        match self {
            CredentialSource::Anonymous => "anonymous".into(),
            CredentialSource::Static(Credentials::Basic { username, .. }) => format!("user {username:?}"),
            CredentialSource::Static(Credentials::IdentityToken(_)) => "identity token".into(),
            CredentialSource::DockerConfig(p) => format!("docker config {}", p.display()),
            CredentialSource::Helper(h) => format!("credential helper {h:?}"),
        }
    }
}

impl UpstreamConfig {
    pub(super) fn builtin(host: &str, url: &str, default: bool) -> UpstreamConfig {
        let (scheme, authority) = parse_url(url).expect("built-in URLs are valid");
        UpstreamConfig {
            host: host.to_string(),
            scheme,
            authority,
            default,
            credentials: CredentialSource::Anonymous,
            credential_lifetime: DEFAULT_CREDENTIAL_LIFETIME,
            max_connections: None,
            ca_file: None,
            client_cert: None,
            offline: false,
            redirect_hosts: Vec::new(),
            private: false,
            send_ns: false,
            fallback: Vec::new(),
        }
    }

    /// Docker Hub names official images `library/<name>`; clients may send just `<name>`.
    pub fn adds_library_prefix(&self) -> bool {
        self.host == "docker.io"
    }

    pub fn base_url(&self) -> String {
        format!("{}://{}", self.scheme, self.authority)
    }

    /// The names a Docker config.json may file this registry under, the first being what a
    /// credential helper is asked for (Docker's own choice: the v1 URL for Docker Hub).
    pub fn credential_names(&self) -> Vec<String> {
        let mut names = if self.host == "docker.io" {
            vec![
                "https://index.docker.io/v1/".to_string(),
                "index.docker.io".to_string(),
                "docker.io".to_string(),
                "registry-1.docker.io".to_string(),
            ]
        } else {
            vec![self.host.clone()]
        };
        let authority = self.authority.to_string();
        if !names.contains(&authority) {
            names.push(authority);
        }
        names
    }
}

fn readable(errors: &mut Vec<String>, key: &str, value: Option<String>) -> Option<PathBuf> {
    let f = PathBuf::from(value?);
    if !f.is_file() {
        errors.push(format!("{key}: {} is not a readable file", f.display()));
    }
    Some(f)
}

pub(super) fn validate(errors: &mut Vec<String>, i: usize, u: FileUpstream) -> Option<UpstreamConfig> {
    validate_at(errors, &format!("upstreams[{i}]"), u)
}

/// Validates one upstream table (or a fallback's, `fallbacks.rs`), `at` naming it in errors.
fn validate_at(errors: &mut Vec<String>, at: &str, mut u: FileUpstream) -> Option<UpstreamConfig> {
    let at = at.to_string();
    let before = errors.len();
    let host = u.host.take().unwrap_or_else(|| {
        errors.push(format!(
            "{at}: host is required (the registry name clients use, e.g. \"docker.io\")"
        ));
        String::new()
    });
    if !host.is_empty() && (host.parse::<Authority>().is_err() || host.contains('/') || host.contains('@')) {
        errors.push(format!("{at}.host: {host:?} is not a registry host name"));
    }
    let url = u.url.take().unwrap_or_else(|| format!("https://{host}"));
    let parsed = parse_url(&url)
        .map_err(|e| errors.push(format!("{at}.url: {e}")))
        .ok();
    let credentials = credentials(errors, &at, &mut u);
    let credential_lifetime = duration(
        errors,
        &format!("{at}.credential_lifetime"),
        u.credential_lifetime.as_deref(),
        DEFAULT_CREDENTIAL_LIFETIME,
    );
    let max_connections = match u.max_connections {
        Some(0) => {
            errors.push(format!(
                "{at}.max_connections: must be at least 1 (leave it out for no cap)"
            ));
            None
        }
        n => n.map(|n| n as usize),
    };
    let ca_file = readable(errors, &format!("{at}.ca_file"), u.ca_file.take());
    let cert_file = readable(
        errors,
        &format!("{at}.client_cert_file"),
        u.client_cert_file.take(),
    );
    let key_file = readable(errors, &format!("{at}.client_key_file"), u.client_key_file.take());
    let client_cert = match (cert_file, key_file) {
        (Some(cert_file), Some(key_file)) => Some(ClientCert { cert_file, key_file }),
        (None, None) => None,
        _ => {
            errors.push(format!("{at}: client_cert_file and client_key_file go together"));
            None
        }
    };
    let redirect_hosts = redirect_hosts::parse_all(errors, &at, u.redirect_hosts.take());
    let fallback = fallbacks::parse_all(errors, &at, &host, u.fallback.take());
    let private = visibility::private(errors, &at, &u, &credentials, &fallback);
    let (scheme, authority) = parsed?;
    (errors.len() == before).then_some(UpstreamConfig {
        host,
        scheme,
        authority,
        default: u.default.unwrap_or(false),
        credentials,
        credential_lifetime,
        max_connections,
        ca_file,
        client_cert,
        offline: u.offline.unwrap_or(false),
        redirect_hosts,
        private,
        send_ns: u.send_ns.unwrap_or(false),
        fallback,
    })
}

#[cfg(test)]
mod tests {
    use super::super::Config;
    use super::*;

    fn one(toml: &str) -> Result<UpstreamConfig, String> {
        let text = format!("builtin_upstreams = false\n[[upstreams]]\nhost = \"reg.example\"\n{toml}");
        Config::from_toml_str(&text)
            .map(|c| c.upstreams[0].clone())
            .map_err(|e| e.to_string())
    }

    #[test]
    fn password_sources() {
        let u = one("username = \"u\"\npassword = \"p\"\nmax_connections = 4\n").unwrap();
        assert!(matches!(
            u.credentials,
            CredentialSource::Static(Credentials::Basic { ref username, ref password })
                if username == "u" && password.expose() == "p"
        ));
        assert_eq!(u.max_connections, Some(4));
        assert_eq!(u.credential_lifetime, DEFAULT_CREDENTIAL_LIFETIME);
        // PATH is set in every test environment; it stands in for a secret variable.
        let path = std::env::var("PATH").unwrap();
        let u = one("username = \"u\"\npassword_env = \"PATH\"\n").unwrap();
        assert!(matches!(
            u.credentials,
            CredentialSource::Static(Credentials::Basic { ref password, .. }) if password.expose() == path
        ));
        let e = one("username = \"u\"\npassword_env = \"REGCACHE_SURELY_UNSET_VARIABLE\"\n").unwrap_err();
        assert!(e.contains("REGCACHE_SURELY_UNSET_VARIABLE is not set"), "{e}");
        assert!(!e.contains("without password"), "one problem, one line: {e}");
        let e = one("username = \"u\"\npassword = \"hunter2\"\npassword_env = \"PATH\"\n").unwrap_err();
        assert!(e.contains("one of password"), "{e}");
        assert!(!e.contains("hunter2"), "{e}");
    }

    #[test]
    fn docker_config_and_helpers() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("config.json");
        std::fs::write(&good, r#"{"auths":{"reg.example":{"auth":"dTpw"}}}"#).unwrap();
        let u = one(&format!(
            "docker_config = \"{}\"\ncredential_lifetime = \"10m\"\n",
            good.display()
        ))
        .unwrap();
        assert!(matches!(u.credentials, CredentialSource::DockerConfig(_)));
        assert_eq!(u.credential_lifetime, Duration::from_secs(600));
        let bad = dir.path().join("bad.json");
        std::fs::write(&bad, r#"{"auths": "hunter2"#).unwrap();
        let e = one(&format!("docker_config = \"{}\"\n", bad.display())).unwrap_err();
        assert!(e.contains("not a Docker config.json"), "{e}");
        assert!(!e.contains("hunter2"), "{e}");
        let u = one("credential_helper = \"ecr-login\"\n").unwrap();
        assert_eq!(u.credentials.describe(), "credential helper \"ecr-login\"");
        let e = one("credential_helper = \"ecr login\"\n").unwrap_err();
        assert!(e.contains("credential_helper"), "{e}");
        let e = one("credential_helper = \"/nonexistent/docker-credential-x\"\n").unwrap_err();
        assert!(e.contains("is not a file"), "{e}");
        let e = one("credential_helper = \"ecr-login\"\nusername = \"u\"\npassword = \"p\"\n").unwrap_err();
        assert!(e.contains("set one of username"), "{e}");
    }

    #[test]
    fn tls_and_limits() {
        let e = one("client_cert_file = \"/nonexistent/cert.pem\"\nmax_connections = 0\n").unwrap_err();
        assert!(
            e.contains("client_cert_file: /nonexistent/cert.pem is not a readable file"),
            "{e}"
        );
        assert!(e.contains("go together"), "{e}");
        assert!(e.contains("max_connections"), "{e}");
    }

    #[test]
    fn toml_errors_do_not_quote_the_file() {
        let e = Config::from_toml_str("[[upstreams]]\nhost = \"x\"\npassword = \"hunter2\n").unwrap_err();
        assert!(!e.to_string().contains("hunter2"), "{e}");
        assert!(e.to_string().contains("line 3"), "{e}");
    }

    #[test]
    fn fallbacks_are_urls_or_tables_with_credentials() {
        let u = one(
            "fallback = [\"https://mirror.gcr.io\", { url = \"http://127.0.0.1:5000\", username = \"robot\", password = \"pw\" }]\n",
        )
        .unwrap();
        let shown: Vec<String> = u.fallback.iter().map(|f| f.base_url()).collect();
        assert_eq!(shown, ["https://mirror.gcr.io", "http://127.0.0.1:5000"]);
        assert!(matches!(u.fallback[0].credentials, CredentialSource::Anonymous));
        assert_eq!(u.fallback[1].credentials.describe(), "user \"robot\"");
        // Looked up under the registry it stands in for.
        assert_eq!(u.fallback[1].host, "reg.example");
        assert!(u.private, "a fallback's credentials make the upstream private");
        let public = one("public = true\nfallback = [{ url = \"https://x.example\", username = \"u\", password = \"p\" }]\n");
        assert!(!public.unwrap().private);

        let e = one("fallback = [\"https://mirror.gcr.io\", \"mirror.gcr.io/v2\"]\n").unwrap_err();
        assert!(e.contains("upstreams[0].fallback[1].url: "), "{e}");
        let e = one("fallback = [{ url = \"https://x.example\", usrname = \"u\" }]\n").unwrap_err();
        assert!(
            e.contains("upstreams[0].fallback[0]: unknown field `usrname`"),
            "{e}"
        );
        let e = one("fallback = [{ username = \"u\", password = \"p\" }, 7]\n").unwrap_err();
        assert!(e.contains("upstreams[0].fallback[0]: url is required"), "{e}");
        assert!(e.contains("upstreams[0].fallback[1]: a URL, or a table"), "{e}");
        let e = one("fallback = [{ url = \"https://x.example\", password = \"p\" }]\n").unwrap_err();
        assert!(e.contains("upstreams[0].fallback[0]"), "{e}");
    }

    #[test]
    fn credential_names() {
        let c = Config::default();
        let hub = c.upstreams.iter().find(|u| u.host == "docker.io").unwrap();
        assert_eq!(hub.credential_names()[0], "https://index.docker.io/v1/");
        let u = one("url = \"http://127.0.0.1:5000\"\n").unwrap();
        assert_eq!(u.credential_names(), vec!["reg.example", "127.0.0.1:5000"]);
    }
}
