//! Upstream TLS: an https upstream with a private CA (`ca_file`) that demands a client
//! certificate (`client_cert_file`, `client_key_file`), and the rule that an https upstream's
//! redirects are followed only to https. The upstream is the fake registry behind a small
//! TLS-terminating proxy with a throwaway CA made for each test.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use crate::support::daemon::{DaemonBuilder, Upstream};
use crate::support::fake::{bytes_of, Fake};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

struct Pki {
    dir: tempfile::TempDir,
    ca_der: CertificateDer<'static>,
    server: (CertificateDer<'static>, PrivateKeyDer<'static>),
}

impl Pki {
    /// A CA, a server certificate for 127.0.0.1 and a client certificate, as PEM files.
    fn new() -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name.push(DnType::CommonName, "regcache test CA");
        let ca_key = KeyPair::generate().unwrap();
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca, ca_key);
        let leaf = |names: Vec<String>, cn: &str| {
            let mut p = CertificateParams::new(names).unwrap();
            p.distinguished_name.push(DnType::CommonName, cn);
            let key = KeyPair::generate().unwrap();
            (p.signed_by(&key, &issuer).unwrap(), key)
        };
        let (server, server_key) = leaf(vec!["127.0.0.1".into()], "fake registry");
        let (client, client_key) = leaf(vec!["regcache.test".into()], "regcache");
        std::fs::write(dir.path().join("ca.pem"), ca_cert.pem()).unwrap();
        std::fs::write(dir.path().join("client.pem"), client.pem()).unwrap();
        std::fs::write(dir.path().join("client.key"), client_key.serialize_pem()).unwrap();
        Pki {
            ca_der: ca_cert.der().clone(),
            server: (
                server.der().clone(),
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(server_key.serialize_der())),
            ),
            dir,
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

/// Terminates TLS (client certificate required) on 127.0.0.1 and relays to `backend`.
async fn tls_proxy(pki: &Pki, backend: SocketAddr) -> SocketAddr {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots.add(pki.ca_der.clone()).unwrap();
    let verifier =
        rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
            .build()
            .unwrap();
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(vec![pki.server.0.clone()], pki.server.1.clone_key())
        .unwrap();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let Ok(mut plain) = tokio::net::TcpStream::connect(backend).await else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
            });
        }
    });
    addr
}

/// The TLS upstream as docker.io, trusting the test CA, with the client certificate if asked.
fn upstream(url: &str, pki: &Pki, client_cert: bool) -> Upstream {
    let u = Upstream::new("docker.io", url).ca_file(&pki.path("ca.pem"));
    if client_cert {
        u.client_cert(&pki.path("client.pem"), &pki.path("client.key"))
    } else {
        u
    }
}

#[tokio::test]
async fn mutual_tls_with_a_client_certificate() {
    let up = Fake::start().await;
    let (_, bytes, layers) = up.add_image("library/app", "1", &[bytes_of(20_000, 1)]);
    let pki = Pki::new();
    let addr = tls_proxy(&pki, up.addr).await;
    let url = format!("https://{addr}");

    let d = DaemonBuilder::new()
        .with_upstream(upstream(&url, &pki, true))
        .start()
        .await;
    assert_eq!(d.get("/v2/library/app/manifests/1").await.bytes(), bytes);
    assert_eq!(
        d.get(&format!("/v2/library/app/blobs/{}", layers[0]))
            .await
            .status,
        200
    );

    // Without the client certificate the handshake fails: the upstream is unavailable.
    let without = DaemonBuilder::new()
        .with_upstream(upstream(&url, &pki, false))
        .start()
        .await;
    let r = without.get("/v2/library/app/manifests/1").await;
    assert_eq!(r.status, 503);
    assert_eq!(r.error_code(), "UNAVAILABLE");
}

#[tokio::test]
async fn an_https_upstream_is_never_followed_to_plain_http() {
    let up = Fake::start().await;
    let (_, bytes, layers) = up.add_image("library/app", "1", &[bytes_of(20_000, 2)]);
    up.redirect_blobs(true); // to the fake's plain-http storage host
    let pki = Pki::new();
    let addr = tls_proxy(&pki, up.addr).await;
    let d = DaemonBuilder::new()
        .with_upstream(upstream(&format!("https://{addr}"), &pki, true))
        .start()
        .await;
    assert_eq!(d.get("/v2/library/app/manifests/1").await.bytes(), bytes);
    let r = d.get(&format!("/v2/library/app/blobs/{}", layers[0])).await;
    assert_eq!(r.status, 502);
    assert!(
        up.requests().iter().all(|l| l.host != "storage"),
        "the http storage host was contacted"
    );
    // The same redirect from a plain-http (lab) upstream is followed to a listed host.
    let lab = DaemonBuilder::new()
        .with_upstream(
            Upstream::new("docker.io", &up)
                .default_upstream()
                .redirect_hosts(&[up.storage_host()]),
        )
        .start()
        .await;
    assert_eq!(
        lab.get(&format!("/v2/library/app/blobs/{}", layers[0]))
            .await
            .status,
        200
    );
}
