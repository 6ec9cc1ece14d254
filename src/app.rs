//! Wiring: takes the cache directory's lock (before anything is bound, so a second daemon on the
//! directory fails at once), builds the shared state from a `Config`, binds the registry and
//! admin listeners, runs until asked to stop, then drains open connections and lets downloads
//! finish within one deadline (`shutdown_grace` from the request to stop), saves the cache's
//! recency snapshot and releases the lock. Tests start the whole daemon in-process on
//! `127.0.0.1:0` through `start`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::auth::Auth;
use crate::cache::dirlock::{DirLock, Holder};
use crate::cache::shared::Shared;
use crate::cache::store_mark::{self, NotAStore};
use crate::cache::{Cache, CacheSettings};
use crate::config::{Config, TlsConfig};
use crate::metrics::Metrics;
use crate::registry::Registry;
use crate::server::admin::AdminGuard;
use crate::server::tls::{CertReloader, Tls, TlsError, CERT_POLL_INTERVAL};
use crate::server::{self, ConnLimits, State};
use crate::upstream::{ClientBuildError, Upstreams};

mod restart;
mod settings;
pub use settings::{cache_settings, hosted_policy, mirror_policy};
use settings::{daemon_cache_settings, tls_settings};

/// How long a starting daemon waits for a `regcache cache` command to let go of the cache
/// directory's lock.
const LOCK_WAIT: Duration = Duration::from_secs(5);
/// How often it looks again meanwhile.
const LOCK_POLL: Duration = Duration::from_millis(100);

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("the cache directory {dir} is in use by another regcache process (it holds {dir}/lock)")]
    CacheBusy { dir: String },
    #[error("cannot open the cache directory {dir}: {source}")]
    Cache {
        dir: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("upstream client: {0}")]
    Client(#[from] ClientBuildError),
    #[error("TLS listener: {0}")]
    Tls(#[from] TlsError),
    /// `[cache] dir` holds something that is not a regcache store: a configuration mistake.
    #[error(transparent)]
    NotAStore(#[from] NotAStore),
    #[error("[storage] bucket: {0}")]
    Storage(#[from] object_store::Error),
}

impl StartError {
    /// The configuration, not the machine, is at fault (`regcache serve` exits 64).
    pub fn is_config_error(&self) -> bool {
        matches!(self, StartError::NotAStore(NotAStore::Foreign { .. }))
    }
}

/// A running daemon.
pub struct Running {
    addr: SocketAddr,
    admin_addr: SocketAddr,
    /// Carries the shutdown deadline once the daemon is asked to stop.
    stop: watch::Sender<Option<Instant>>,
    done: watch::Sender<bool>,
    server: JoinHandle<()>,
    admin: JoinHandle<()>,
    persist: JoinHandle<()>,
    cert_watch: Option<JoinHandle<()>>,
    tls: Option<(CertReloader, TlsConfig)>,
    state: Arc<State>,
    upstreams: Arc<Upstreams>,
    grace: Duration,
    /// What the daemon started with: a reload reports what differs and needs a restart.
    started: Arc<Config>,
    _lock: DirLock,
}

impl Running {
    /// The registry API address.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The admin (metrics, health) address.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
    }

    pub fn metrics(&self) -> &Metrics {
        &self.state.metrics
    }

    /// A handle that applies reloaded configurations to this daemon (SIGHUP).
    pub fn reloader(&self) -> Reloader {
        Reloader {
            upstreams: self.upstreams.clone(),
            tls: self.tls.clone(),
            auth: self.state.auth.clone(),
            started: self.started.clone(),
        }
    }

    /// Client authentication (tests count its password checks).
    pub fn auth(&self) -> &crate::auth::Auth {
        &self.state.auth
    }

    pub fn cache(&self) -> &Cache {
        &self.state.cache
    }

    /// Stops accepting, lets in-flight requests and downloads finish, and returns when done, at
    /// the latest `shutdown_grace` from now: draining connections and finishing downloads share
    /// that one deadline. `/readyz` fails from the first moment.
    pub async fn shutdown(self) {
        let deadline = Instant::now() + self.grace;
        let _ = self.stop.send(Some(deadline));
        // Returns by the deadline: connections still open then are closed.
        let _ = self.server.await;
        // Downloads no client waits for any more may still finish, within what is left.
        if tokio::time::timeout_at(deadline, self.state.cache.wait_idle())
            .await
            .is_err()
        {
            tracing::warn!(grace = ?self.grace, "downloads still running at the end of the grace period are dropped (nothing half-written is kept)");
        }
        let _ = self.done.send(true);
        let _ = self.admin.await;
        let _ = self.persist.await;
        if let Some(w) = self.cert_watch {
            let _ = w.await;
        }
    }

    /// Runs until `signal` completes, then shuts down gracefully.
    pub async fn run_until(self, signal: impl std::future::Future<Output = ()>) {
        signal.await;
        tracing::info!("shutting down: no new connections; open requests may finish");
        self.shutdown().await;
        tracing::info!("stopped");
    }
}

/// Applies what can change live from a new configuration.
#[derive(Clone)]
pub struct Reloader {
    upstreams: Arc<Upstreams>,
    tls: Option<(CertReloader, TlsConfig)>,
    auth: Arc<Auth>,
    started: Arc<Config>,
}

impl Reloader {
    /// Applies upstream credentials and client authentication (users, tokens, groups, access
    /// rules, private upstreams); returns what else changed and needs a restart.
    pub fn apply(&self, config: &Config) -> Vec<String> {
        let mut changes = self.upstreams.reload(config);
        self.auth.reload(&config.auth, private_upstreams(config));
        if self.tls.as_ref().map(|(_, t)| t) != config.tls.as_ref() {
            changes.push("[tls] settings (the files in use are reloaded, other files need a restart)".into());
        }
        changes.extend(restart::needs_restart(&self.started, config));
        changes
    }

    /// Re-reads the TLS listener's certificate and key; a file that does not load keeps the
    /// certificate in use (and is logged). Nothing to do without `[tls]`.
    pub fn reload_certificate(&self) {
        if let Some((certs, _)) = &self.tls {
            let _ = certs.reload();
        }
    }
}

/// Client authentication and read rules from `[auth]`, `[[access]]` and the private upstreams.
fn auth(config: &Config) -> Auth {
    Auth::new(&config.auth, private_upstreams(config))
}

/// The client-facing hosts of the private upstreams.
fn private_upstreams(config: &Config) -> Vec<String> {
    let private = config.upstreams.iter().filter(|u| u.private);
    private.map(|u| u.host.clone()).collect()
}

async fn bind(addr: SocketAddr) -> Result<(TcpListener, SocketAddr), StartError> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Bind { addr, source })?;
    let local = listener
        .local_addr()
        .map_err(|source| StartError::Bind { addr, source })?;
    Ok((listener, local))
}

/// Refuses a directory that is not a regcache store (creating a new one in a missing or empty
/// directory), then takes its lock. A `regcache cache` command may hold it for a moment: that is
/// waited for (up to `LOCK_WAIT`); another daemon is not, so a second daemon on the directory
/// fails at once, before it binds anything.
async fn lock_cache_dir(config: &Config) -> Result<DirLock, StartError> {
    store_mark::claim(&config.cache.dir)?;
    let dir = config.cache.dir.display().to_string();
    let mut daemon_seen = false;
    let started = Instant::now();
    loop {
        match DirLock::try_acquire(&config.cache.dir, Holder::Daemon) {
            Ok(Some(lock)) => return Ok(lock),
            Ok(None) => {}
            Err(source) => return Err(StartError::Cache { dir, source }),
        }
        // The holder's name is read without the lock: trusted when it says "daemon" twice, so
        // a command caught rewriting a stopped daemon's lock file is waited for.
        let daemon = DirLock::holder(&config.cache.dir) == Some(Holder::Daemon);
        if (daemon && daemon_seen) || started.elapsed() >= LOCK_WAIT {
            return Err(StartError::CacheBusy { dir });
        }
        daemon_seen = daemon;
        tokio::time::sleep(LOCK_POLL).await;
    }
}

/// What the daemon serves, in the log: one line, tests read its `listen`.
fn log_start(config: &Config, upstreams: &Upstreams, addr: SocketAddr, admin_addr: SocketAddr) {
    for u in upstreams.all() {
        tracing::debug!(host = u.host(), url = %u.config().base_url(), default = u.config().default, "upstream");
    }
    tracing::info!(
        listen = %addr,
        tls = config.tls.is_some(),
        client_certificates = config.tls.as_ref().map(|t| format!("{:?}", t.client_auth).to_lowercase()),
        admin = %admin_addr,
        cache = %config.cache.dir.display(),
        upstreams = upstreams.all().len(),
        egress = %config.fetch.egress.describe(),
        "regcache listening"
    );
    for warning in config.warnings() {
        tracing::warn!("{warning}");
    }
}

/// What every request handler shares.
fn shared_state(
    config: &Config,
    upstreams: &Arc<Upstreams>,
    cache: Arc<Cache>,
    metrics: Arc<Metrics>,
) -> Arc<State> {
    let auth = Arc::new(auth(config));
    let registry = Registry::new(
        upstreams.clone(),
        cache.clone(),
        mirror_policy(config),
        auth.clone(),
        metrics.clone(),
    )
    .with_hosted(hosted_policy(config));
    Arc::new(State {
        registry,
        auth,
        cache,
        metrics,
    })
}

pub async fn start(config: Config) -> Result<Running, StartError> {
    let settings = daemon_cache_settings(&config)?;
    start_on(config, settings).await
}

/// `start` with a shared store of the caller's (tests of the shared level on an in-memory one).
#[doc(hidden)]
pub async fn start_sharing(config: Config, shared: Arc<dyn Shared>) -> Result<Running, StartError> {
    let mut settings = cache_settings(&config);
    settings.shared = Some(shared);
    start_on(config, settings).await
}

async fn start_on(config: Config, settings: CacheSettings) -> Result<Running, StartError> {
    let metrics = Arc::new(Metrics::new());
    let lock = lock_cache_dir(&config).await?;
    let cache = Cache::open(&settings, metrics.clone()).map_err(|source| StartError::Cache {
        dir: config.cache.dir.display().to_string(),
        source,
    })?;
    let cache = Arc::new(cache);
    let upstreams = Arc::new(Upstreams::from_config(&config, &metrics)?);
    let tls = match &config.tls {
        Some(t) => Some(Arc::new(Tls::new(&tls_settings(t))?)),
        None => None,
    };
    let (listener, addr) = bind(config.listen).await?;
    let (admin_listener, admin_addr) = bind(config.admin_listen).await?;
    log_start(&config, &upstreams, addr, admin_addr);
    let grace = config.shutdown_grace;
    let state = shared_state(&config, &upstreams, cache, metrics);
    let (stop, stop_rx) = watch::channel(None);
    let (done, done_rx) = watch::channel(false);
    let persist = state.cache.persist_recency(done_rx.clone());
    if let Some(ttl) = config.cache.unused_ttl {
        // Ends with the process; nothing to finish at shutdown.
        drop(state.cache.expire_unused(ttl, done_rx.clone()));
    }
    let cert_watch = tls
        .as_ref()
        .map(|t| t.reloader().watch(CERT_POLL_INTERVAL, stop_rx.clone()));
    let reload_tls = tls
        .as_ref()
        .zip(config.tls.clone())
        .map(|(t, c)| (t.reloader(), c));
    let limits = ConnLimits {
        max_connections: config.max_connections,
        idle_timeout: config.idle_timeout,
        sendfile: config.sendfile,
    };
    let server = tokio::spawn(server::serve(
        listener,
        state.clone(),
        tls,
        limits,
        stop_rx.clone(),
    ));
    let guard = Arc::new(AdminGuard::new(config.admin_token.clone(), admin_addr));
    let admin = tokio::spawn(server::admin::serve(
        admin_listener,
        state.clone(),
        guard,
        config.idle_timeout,
        stop_rx,
        done_rx,
    ));
    Ok(Running {
        addr,
        admin_addr,
        stop,
        done,
        server,
        admin,
        persist,
        cert_watch,
        tls: reload_tls,
        state,
        upstreams,
        grace,
        started: Arc::new(config),
        _lock: lock,
    })
}
