//! PEM files turned into rustls values: a certificate chain with its private key (RSA, ECDSA or
//! Ed25519, checked to belong together) and a set of CA certificates. Used by config validation
//! (so `check-config` catches a broken file) and by the TLS listener (at start and on every
//! reload), so both judge a file the same way. PEM is read through rustls-pki-types; the ring
//! provider decides which key types are usable.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;
use rustls::RootCertStore;

/// Why a TLS file cannot be used; one line, naming the file.
#[derive(Debug, thiserror::Error)]
pub enum TlsFileError {
    #[error("{} is not a readable file: {source}", path.display())]
    Unreadable {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} holds no PEM CERTIFICATE", path.display())]
    NoCertificate { path: PathBuf },
    #[error("{} holds no PEM private key (PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY)", path.display())]
    NoKey { path: PathBuf },
    #[error("{} is not a usable private key (RSA, ECDSA P-256/P-384 or Ed25519): {reason}", path.display())]
    BadKey { path: PathBuf, reason: String },
    #[error("{} does not hold the private key of the certificate in {}", key.display(), cert.display())]
    Mismatch { cert: PathBuf, key: PathBuf },
    #[error("{} does not start with a usable certificate: {reason}", path.display())]
    BadCertificate { path: PathBuf, reason: String },
    #[error("{} holds no CA certificate usable as a trust anchor", path.display())]
    NoTrustAnchor { path: PathBuf },
}

fn read(path: &Path) -> Result<Vec<u8>, TlsFileError> {
    std::fs::read(path).map_err(|source| TlsFileError::Unreadable {
        path: path.to_path_buf(),
        source,
    })
}

/// Every certificate in a PEM file, leaf first.
pub fn read_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsFileError> {
    let pem = read(path)?;
    let chain: Vec<_> = CertificateDer::pem_slice_iter(&pem).flatten().collect();
    if chain.is_empty() {
        return Err(TlsFileError::NoCertificate {
            path: path.to_path_buf(),
        });
    }
    Ok(chain)
}

/// The first private key in a PEM file (PKCS#8, PKCS#1 or SEC1).
pub fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsFileError> {
    let pem = read(path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| match e {
        pem::Error::NoItemsFound => TlsFileError::NoKey {
            path: path.to_path_buf(),
        },
        other => TlsFileError::BadKey {
            path: path.to_path_buf(),
            reason: other.to_string(),
        },
    })
}

/// The certificate chain in `cert` with the key in `key`, ready to sign handshakes.
pub fn certified_key(cert: &Path, key: &Path) -> Result<CertifiedKey, TlsFileError> {
    let chain = read_chain(cert)?;
    let der = read_key(key)?;
    let provider = rustls::crypto::ring::default_provider();
    let signing = provider
        .key_provider
        .load_private_key(der)
        .map_err(|e| TlsFileError::BadKey {
            path: key.to_path_buf(),
            reason: e.to_string(),
        })?;
    let certified = CertifiedKey::new(chain, signing);
    certified.keys_match().map_err(|e| match e {
        rustls::Error::InconsistentKeys(_) => TlsFileError::Mismatch {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
        },
        other => TlsFileError::BadCertificate {
            path: cert.to_path_buf(),
            reason: other.to_string(),
        },
    })?;
    Ok(certified)
}

/// The CA certificates in a PEM file as trust anchors (for client certificates).
pub fn read_roots(path: &Path) -> Result<Arc<RootCertStore>, TlsFileError> {
    let mut roots = RootCertStore::empty();
    for cert in read_chain(path)? {
        let _ = roots.add(cert);
    }
    if roots.is_empty() {
        return Err(TlsFileError::NoTrustAnchor {
            path: path.to_path_buf(),
        });
    }
    Ok(Arc::new(roots))
}
