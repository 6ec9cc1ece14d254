//! A throwaway PKI for the TLS listener tests: a CA, server certificates for 127.0.0.1 with an
//! ECDSA P-256, Ed25519 or RSA key (RSA from a fixed test key: ring cannot generate RSA keys),
//! client certificates, and clients that talk HTTP/1.1 or HTTP/2 (chosen by ALPN) over it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use rustls::ClientConfig;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

#[derive(Debug, Clone, Copy)]
pub enum KeyKind {
    EcdsaP256,
    Ed25519,
    Rsa,
}

pub struct Pki {
    pub dir: tempfile::TempDir,
    ca: Issuer<'static, KeyPair>,
    ca_der: CertificateDer<'static>,
}

impl Pki {
    /// A new CA, written to `ca.crt`.
    pub fn new(name: &str) -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name.push(DnType::CommonName, name);
        let key = KeyPair::generate().unwrap();
        let cert = ca.self_signed(&key).unwrap();
        std::fs::write(dir.path().join("ca.crt"), cert.pem()).unwrap();
        Pki {
            dir,
            ca: Issuer::new(ca, key),
            ca_der: cert.der().clone(),
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A server certificate for 127.0.0.1 named `cn`, written to `server.crt` and `server.key`.
    pub fn server(&self, kind: KeyKind, cn: &str) -> CertificateDer<'static> {
        let key = match kind {
            KeyKind::EcdsaP256 => KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap(),
            KeyKind::Ed25519 => KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap(),
            KeyKind::Rsa => KeyPair::from_pem(include_str!("rsa2048.key")).unwrap(),
        };
        let mut p = CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap();
        p.distinguished_name.push(DnType::CommonName, cn);
        let cert = p.signed_by(&key, &self.ca).unwrap();
        std::fs::write(self.path("server.crt"), cert.pem()).unwrap();
        std::fs::write(self.path("server.key"), key.serialize_pem()).unwrap();
        cert.der().clone()
    }

    /// A client certificate and key named `cn`.
    pub fn client(&self, cn: &str) -> (CertificateDer<'static>, PrivateKeyDer<'static>) {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(vec!["client.regcache.test".to_string()]).unwrap();
        p.distinguished_name.push(DnType::CommonName, cn);
        let cert = p.signed_by(&key, &self.ca).unwrap();
        let der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        (cert.der().clone(), der)
    }

    /// A client trusting this CA, offering `alpn`, presenting `cert` if given.
    pub fn client_config(
        &self,
        alpn: &[u8],
        cert: Option<(CertificateDer<'static>, PrivateKeyDer<'static>)>,
    ) -> Arc<ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.ca_der.clone()).unwrap();
        client_config(roots, alpn, cert)
    }
}

pub fn client_config(
    roots: rustls::RootCertStore,
    alpn: &[u8],
    cert: Option<(CertificateDer<'static>, PrivateKeyDer<'static>)>,
) -> Arc<ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let mut config = match cert {
        Some((c, k)) => builder.with_client_auth_cert(vec![c], k).unwrap(),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![alpn.to_vec()];
    Arc::new(config)
}

/// A TLS connection to 127.0.0.1 (the client's side of the handshake).
pub async fn connect(addr: SocketAddr, config: Arc<ClientConfig>) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::try_from("127.0.0.1").unwrap();
    tokio_rustls::TlsConnector::from(config).connect(name, tcp).await
}

/// The server certificate a new connection is shown.
pub async fn served_certificate(addr: SocketAddr, config: Arc<ClientConfig>) -> CertificateDer<'static> {
    let stream = connect(addr, config).await.expect("TLS handshake");
    stream.get_ref().1.peer_certificates().unwrap()[0]
        .clone()
        .into_owned()
}

/// An HTTP connection over TLS, in whichever version ALPN chose.
pub enum Http {
    H1(http1::SendRequest<Empty<Bytes>>),
    H2(http2::SendRequest<Empty<Bytes>>),
}

impl Http {
    pub async fn over(stream: TlsStream<TcpStream>) -> Result<Http, String> {
        let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
        let io = TokioIo::new(stream);
        Ok(if h2 {
            let (tx, conn) = http2::handshake(TokioExecutor::new(), io)
                .await
                .map_err(|e| e.to_string())?;
            tokio::spawn(conn);
            Http::H2(tx)
        } else {
            let (tx, conn) = http1::handshake(io).await.map_err(|e| e.to_string())?;
            tokio::spawn(conn);
            Http::H1(tx)
        })
    }

    /// `GET path`: status and the whole body.
    pub async fn get(&mut self, path: &str) -> Result<(u16, Bytes), String> {
        let req = http::Request::get(format!("https://127.0.0.1{path}"))
            .header("host", "127.0.0.1")
            .body(Empty::new())
            .unwrap();
        let resp = match self {
            Http::H1(tx) => tx.send_request(req).await,
            Http::H2(tx) => tx.send_request(req).await,
        }
        .map_err(|e| e.to_string())?;
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await.map_err(|e| e.to_string())?;
        Ok((status, body.to_bytes()))
    }
}

/// A GET on a new connection.
pub async fn get_once(
    addr: SocketAddr,
    config: Arc<ClientConfig>,
    path: &str,
) -> Result<(u16, Bytes), String> {
    let stream = connect(addr, config).await.map_err(|e| e.to_string())?;
    Http::over(stream).await?.get(path).await
}
