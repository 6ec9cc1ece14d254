//! The HTTP clients regcache uses towards upstream registries: hyper-util's pooled client over
//! rustls (webpki and system roots, or an upstream's own `ca_file`; a client certificate for
//! mutual TLS when configured), HTTP/1.1 and HTTP/2 via ALPN, with a connect timeout (its connector
//! tells `deadline.rs` when a request connected). Each
//! upstream has two with the same TLS setup: one for the upstream itself and its token service,
//! and one for redirects to other hosts, whose resolver checks every address (`resolve.rs`).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::RootCertStore;

use super::deadline::Marked;
use super::egress::Egress;
use super::resolve::Resolver;
use crate::config::{EgressConfig, UpstreamConfig};

/// Request bodies are empty except for OAuth2 token POSTs.
pub(super) type HttpClient = Client<Marked<HttpsConnector<Egress>>, Full<Bytes>>;

/// An upstream's two clients.
pub(super) struct Clients {
    /// For the configured upstream URL and the token services it names.
    pub(super) upstream: HttpClient,
    /// For redirects away from the upstream's origin.
    pub(super) redirects: HttpClient,
}

#[derive(Debug, thiserror::Error)]
pub enum ClientBuildError {
    #[error("cannot read {what} {path}: {source}")]
    Read {
        what: &'static str,
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("CA file {0} holds no usable certificate")]
    NoCerts(String),
    #[error("client certificate file {0} holds no certificate")]
    NoClientCert(String),
    #[error("client key file {0} holds no private key")]
    NoClientKey(String),
    // The PEM error is left out: it can quote a line of the key file.
    #[error("client key file {0} is not valid PEM")]
    BadClientKey(String),
    #[error("TLS setup: {0}")]
    Tls(#[from] rustls::Error),
}

fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, ClientBuildError> {
    std::fs::read(path).map_err(|source| ClientBuildError::Read {
        what,
        path: path.display().to_string(),
        source,
    })
}

/// Builds clients that trust the public web PKI and the system store, plus `ca_file` if given,
/// and present the upstream's client certificate if one is configured; they connect through the
/// egress proxy where `egress` says so.
pub(super) fn build(
    config: &UpstreamConfig,
    connect_timeout: Duration,
    egress: &EgressConfig,
) -> Result<Clients, ClientBuildError> {
    let tls = tls_config(config)?;
    let over = |resolver| {
        client_over(
            tls.clone(),
            resolver,
            egress,
            connect_timeout,
            config.max_connections,
        )
    };
    Ok(Clients {
        upstream: over(Resolver::Any),
        redirects: over(Resolver::Redirects(config.redirect_hosts.clone().into())),
    })
}

fn tls_config(config: &UpstreamConfig) -> Result<rustls::ClientConfig, ClientBuildError> {
    let mut roots = RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    for cert in rustls_native_certs::load_native_certs().certs {
        let _ = roots.add(cert);
    }
    if let Some(path) = &config.ca_file {
        let pem = read("CA file", path)?;
        let mut added = 0;
        // Sections that do not decode are skipped, like certificates webpki rejects; only a file
        // with nothing usable is an error.
        for cert in CertificateDer::pem_slice_iter(&pem).flatten() {
            if roots.add(cert).is_ok() {
                added += 1;
            }
        }
        if added == 0 {
            return Err(ClientBuildError::NoCerts(path.display().to_string()));
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots);
    let tls = match &config.client_cert {
        None => builder.with_no_client_auth(),
        Some(c) => {
            let pem = read("client certificate file", &c.cert_file)?;
            let chain: Vec<_> = CertificateDer::pem_slice_iter(&pem).flatten().collect();
            if chain.is_empty() {
                return Err(ClientBuildError::NoClientCert(c.cert_file.display().to_string()));
            }
            let pem = read("client key file", &c.key_file)?;
            let key = PrivateKeyDer::from_pem_slice(&pem).map_err(|e| {
                let path = c.key_file.display().to_string();
                match e {
                    pem::Error::NoItemsFound => ClientBuildError::NoClientKey(path),
                    _ => ClientBuildError::BadClientKey(path),
                }
            })?;
            builder.with_client_auth_cert(chain, key)?
        }
    };
    Ok(tls)
}

fn client_over(
    tls: rustls::ClientConfig,
    resolver: Resolver,
    egress: &EgressConfig,
    connect_timeout: Duration,
    max_connections: Option<usize>,
) -> HttpClient {
    let mut http = HttpConnector::new_with_resolver(resolver.clone());
    http.enforce_http(false);
    http.set_connect_timeout(Some(connect_timeout));
    http.set_nodelay(true);
    let http = Egress::new(http, resolver, egress, connect_timeout);
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .enable_http2()
        .wrap_connector(http);
    let mut client = Client::builder(TokioExecutor::new());
    client.pool_idle_timeout(Duration::from_secs(90));
    if let Some(n) = max_connections {
        // Requests are capped at `n` (see permits.rs); keep no more idle connections than that.
        client.pool_max_idle_per_host(n);
    }
    client.build(Marked(https))
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use http::uri::{Authority, Scheme};

    use super::*;
    use crate::config::{ClientCert, CredentialSource, DEFAULT_CREDENTIAL_LIFETIME};

    fn config(ca_file: Option<PathBuf>, client_cert: Option<ClientCert>) -> UpstreamConfig {
        UpstreamConfig {
            host: "reg.example".into(),
            scheme: Scheme::HTTPS,
            authority: Authority::from_static("reg.example"),
            default: false,
            credentials: CredentialSource::Anonymous,
            credential_lifetime: DEFAULT_CREDENTIAL_LIFETIME,
            max_connections: None,
            ca_file,
            client_cert,
            offline: false,
            redirect_hosts: Vec::new(),
            private: false,
            send_ns: false,
            fallback: Vec::new(),
        }
    }

    fn error(config: &UpstreamConfig) -> String {
        match build(config, Duration::from_secs(1), &EgressConfig::default()) {
            Ok(_) => panic!("client built"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn pem_files_without_what_they_should_hold_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "no PEM here\n").unwrap();
        let e = error(&config(Some(empty.clone()), None));
        assert_eq!(
            e,
            format!("CA file {} holds no usable certificate", empty.display())
        );

        let cert = rcgen::generate_simple_self_signed(vec!["regcache.test".into()]).unwrap();
        let cert_file = dir.path().join("client.pem");
        std::fs::write(&cert_file, cert.cert.pem()).unwrap();
        let client = |key_file: &Path| {
            config(
                None,
                Some(ClientCert {
                    cert_file: cert_file.clone(),
                    key_file: key_file.to_path_buf(),
                }),
            )
        };
        let e = error(&client(&cert_file));
        assert_eq!(
            e,
            format!("client key file {} holds no private key", cert_file.display())
        );

        // A damaged key file is reported without quoting any of it.
        let broken = dir.path().join("broken.key");
        std::fs::write(
            &broken,
            "-----BEGIN PRIVATE KEY-----\nhunter2!\n-----END PRIVATE KEY-----\n",
        )
        .unwrap();
        let e = error(&client(&broken));
        assert_eq!(
            e,
            format!("client key file {} is not valid PEM", broken.display())
        );

        let missing = dir.path().join("missing.pem");
        let e = error(&config(Some(missing.clone()), None));
        assert!(
            e.starts_with(&format!("cannot read CA file {}: ", missing.display())),
            "{e}"
        );
    }
}
