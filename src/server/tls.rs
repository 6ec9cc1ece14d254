//! TLS for the registry listener: a rustls acceptor offering ALPN `h2` and `http/1.1`, client
//! certificates verified against a CA when one is configured, and a certificate that can be
//! replaced while the daemon runs. The certificate sits behind a resolver holding an
//! `Arc<CertifiedKey>`: a reload swaps it for the handshakes that follow, and connections already
//! open keep theirs. A reload whose files do not load (unreadable, half written, key and
//! certificate not matching) keeps the certificate in use and logs a warning.

mod identity;

use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, SystemTime};

use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;

use crate::tls_files::{self, TlsFileError};
pub(super) use identity::peer_identity;

/// How often the certificate and key files are checked for changes (mtime and size).
pub const CERT_POLL_INTERVAL: Duration = Duration::from_secs(2);

/// The files and client-certificate policy of the TLS listener.
#[derive(Debug, Clone)]
pub struct TlsSettings {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    /// CA certificates for client certificates; `None`: none are asked for.
    pub client_ca_file: Option<PathBuf>,
    /// With a client CA: whether a client without a certificate is refused.
    pub client_cert_required: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{0}")]
    File(#[from] TlsFileError),
    #[error("{0}")]
    Rustls(#[from] rustls::Error),
    #[error("client certificate verifier: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
}

/// A TLS acceptor and the certificate it serves.
pub struct Tls {
    acceptor: TlsAcceptor,
    slot: Arc<CertSlot>,
}

impl Tls {
    pub fn new(settings: &TlsSettings) -> Result<Tls, TlsError> {
        let slot = Arc::new(CertSlot::load(settings)?);
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder =
            ServerConfig::builder_with_provider(provider.clone()).with_safe_default_protocol_versions()?;
        let builder = match &settings.client_ca_file {
            None => builder.with_no_client_auth(),
            Some(ca) => {
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(tls_files::read_roots(ca)?, provider);
                let verifier = match settings.client_cert_required {
                    true => verifier,
                    false => verifier.allow_unauthenticated(),
                };
                builder.with_client_cert_verifier(verifier.build()?)
            }
        };
        let mut config = builder.with_cert_resolver(slot.clone());
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Tls {
            acceptor: TlsAcceptor::from(Arc::new(config)),
            slot,
        })
    }

    pub(super) fn acceptor(&self) -> &TlsAcceptor {
        &self.acceptor
    }

    /// A handle that reloads the certificate (SIGHUP, file changes).
    pub fn reloader(&self) -> CertReloader {
        CertReloader {
            slot: self.slot.clone(),
        }
    }
}

/// A file's modification time and size: what tells a rewritten file from the one loaded.
type Stamp = Option<(SystemTime, u64)>;

fn stamp(path: &std::path::Path) -> Stamp {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

/// The certificate handshakes are answered with, and where it came from.
#[derive(Debug)]
struct CertSlot {
    cert_file: PathBuf,
    key_file: PathBuf,
    current: RwLock<Arc<CertifiedKey>>,
    seen: Mutex<(Stamp, Stamp)>,
}

impl CertSlot {
    fn load(settings: &TlsSettings) -> Result<CertSlot, TlsFileError> {
        let seen = (stamp(&settings.cert_file), stamp(&settings.key_file));
        let key = tls_files::certified_key(&settings.cert_file, &settings.key_file)?;
        Ok(CertSlot {
            cert_file: settings.cert_file.clone(),
            key_file: settings.key_file.clone(),
            current: RwLock::new(Arc::new(key)),
            seen: Mutex::new(seen),
        })
    }
}

impl ResolvesServerCert for CertSlot {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.current
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .clone(),
        )
    }
}

/// Reloads the listener's certificate and key from their files.
#[derive(Clone)]
pub struct CertReloader {
    slot: Arc<CertSlot>,
}

impl CertReloader {
    /// Loads the files now; on failure the certificate in use stays and a warning is logged.
    pub fn reload(&self) -> Result<(), TlsFileError> {
        let slot = &self.slot;
        match tls_files::certified_key(&slot.cert_file, &slot.key_file) {
            Ok(key) => {
                *slot.current.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(key);
                tracing::info!(cert = %slot.cert_file.display(), "TLS certificate reloaded");
                Ok(())
            }
            Err(e) => {
                tracing::warn!(error = %e, "TLS certificate reload failed; keeping the certificate in use");
                Err(e)
            }
        }
    }

    /// Reloads when either file's mtime or size changed since the last look.
    pub fn reload_if_changed(&self) {
        let now = (stamp(&self.slot.cert_file), stamp(&self.slot.key_file));
        let changed = {
            let mut seen = self.slot.seen.lock().unwrap_or_else(PoisonError::into_inner);
            let changed = *seen != now;
            *seen = now;
            changed
        };
        if changed {
            let _ = self.reload();
        }
    }

    /// Checks the files every `interval` until `stop` carries the shutdown deadline.
    pub fn watch(self, interval: Duration, mut stop: watch::Receiver<Option<Instant>>) -> JoinHandle<()> {
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = tick.tick() => self.reload_if_changed(),
                    _ = stop.wait_for(|s| s.is_some()) => return,
                }
            }
        })
    }
}
