//! Wiring: builds the shared state from a `Config`, binds the registry and admin listeners, runs
//! until asked to stop, then drains open connections and saves the cache's recency snapshot. Tests start the whole daemon in-process on
//! `127.0.0.1:0` through `start`.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::cache::Cache;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::server::{self, State};
use crate::upstream::{ClientBuildError, Upstreams};

#[derive(Debug, thiserror::Error)]
pub enum StartError {
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
}

/// A running daemon.
pub struct Running {
    addr: SocketAddr,
    admin_addr: SocketAddr,
    stop: watch::Sender<bool>,
    done: watch::Sender<bool>,
    server: JoinHandle<()>,
    admin: JoinHandle<()>,
    persist: JoinHandle<()>,
    state: Arc<State>,
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

    pub fn cache(&self) -> &Cache {
        &self.state.cache
    }

    /// Stops accepting, lets in-flight requests finish (up to `shutdown_grace`), and returns when
    /// done. `/readyz` fails from the first moment.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = self.server.await;
        let _ = self.done.send(true);
        let _ = self.admin.await;
        let _ = self.persist.await;
    }

    /// Runs until `signal` completes, then shuts down gracefully.
    pub async fn run_until(self, signal: impl std::future::Future<Output = ()>) {
        signal.await;
        tracing::info!("shutting down: no new connections; open requests may finish");
        self.shutdown().await;
        tracing::info!("stopped");
    }
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

pub async fn start(config: Config) -> Result<Running, StartError> {
    let metrics = Arc::new(Metrics::new());
    let cache = Cache::open(&config, metrics.clone()).map_err(|source| StartError::Cache {
        dir: config.cache.dir.display().to_string(),
        source,
    })?;
    let upstreams = Upstreams::from_config(&config, &metrics)?;
    let (listener, addr) = bind(config.listen).await?;
    let (admin_listener, admin_addr) = bind(config.admin_listen).await?;
    for u in upstreams.all() {
        tracing::debug!(host = u.host(), url = %u.config().base_url(), default = u.config().default, "upstream");
    }
    tracing::info!(
        listen = %addr,
        admin = %admin_addr,
        cache = %config.cache.dir.display(),
        upstreams = upstreams.all().len(),
        "regcache listening"
    );
    let grace = config.shutdown_grace;
    let state = Arc::new(State::new(config, upstreams, cache, metrics));
    let (stop, stop_rx) = watch::channel(false);
    let (done, done_rx) = watch::channel(false);
    let persist = state.cache.persist_recency(done_rx.clone());
    let server = tokio::spawn(server::serve(listener, state.clone(), stop_rx.clone(), grace));
    let admin = tokio::spawn(server::admin::serve(
        admin_listener,
        state.clone(),
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
        state,
    })
}
