//! Wiring: builds the shared state from a `Config`, binds the listener, runs the server until
//! asked to stop, then drains open connections. Tests start the whole daemon in-process on
//! `127.0.0.1:0` through `start`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::cache::Cache;
use crate::config::Config;
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
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Running {
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting, lets in-flight requests finish, and returns when done.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }

    /// Runs until `signal` completes, then shuts down gracefully.
    pub async fn run_until(self, signal: impl std::future::Future<Output = ()>) {
        signal.await;
        tracing::info!("shutting down");
        self.shutdown().await;
    }
}

pub async fn start(config: Config) -> Result<Running, StartError> {
    let cache = Cache::open(&config).map_err(|source| StartError::Cache {
        dir: config.cache.dir.display().to_string(),
        source,
    })?;
    let upstreams = Upstreams::from_config(&config)?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| StartError::Bind {
            addr: config.listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| StartError::Bind {
        addr: config.listen,
        source,
    })?;
    for u in upstreams.all() {
        tracing::debug!(host = u.host(), url = %u.config().base_url(), default = u.config().default, "upstream");
    }
    tracing::info!(listen = %server::describe(addr), cache = %config.cache.dir.display(), upstreams = upstreams.all().len(), "regcache listening");
    let state = Arc::new(State::new(config, upstreams, cache));
    let (stop, stop_rx) = watch::channel(false);
    let task = tokio::spawn(server::serve(listener, state, stop_rx, Duration::from_secs(30)));
    Ok(Running { addr, stop, task })
}
