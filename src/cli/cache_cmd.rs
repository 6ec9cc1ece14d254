//! The operator commands `regcache cache stats`, `ls`, `gc` and `purge`. They work on the cache
//! directory whether the daemon runs or not, without racing it: if the directory's lock is free
//! (`cache::dirlock`) the command takes it and opens the directory itself; if a daemon holds it,
//! the command asks that daemon through its admin listener (`admin_api` paths), found at
//! `[admin] listen` of the same config file.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::admin_api::{self, GcReport, ListEntry, PurgeReport, Stats};
use crate::app::{cache_settings, hosted_policy, mirror_policy};
use crate::cache::dirlock::{DirLock, Holder};
use crate::cache::store_mark::{self, Found, NotAStore};
use crate::cache::Cache;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::registry::{AllowAll, BadImage, ImageRef, Registry, RegistryError};
use crate::upstream::Upstreams;

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("there is no cache at {0}")]
    NoCache(PathBuf),
    #[error("cache directory: {0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    NotAStore(#[from] NotAStore),
    #[error("a running regcache holds the cache directory, and its admin listener at {addr} did not answer: {reason}")]
    Unreachable { addr: SocketAddr, reason: String },
    #[error(transparent)]
    BadImage(#[from] BadImage),
    #[error("{0}")]
    Purge(#[from] RegistryError),
    #[error(transparent)]
    Bundle(#[from] crate::registry::BundleError),
    #[error("upstreams: {0}")]
    Upstreams(String),
    #[error("the running regcache at {addr} answered {status}: {body}")]
    Refused {
        addr: SocketAddr,
        status: StatusCode,
        body: String,
    },
}

impl ControlError {
    /// The configuration, not the machine, is at fault (the command exits 64).
    pub fn is_config_error(&self) -> bool {
        matches!(self, ControlError::NotAStore(NotAStore::Foreign { .. }))
    }
}

/// Who did the work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// This process, on the directory of a stopped daemon.
    Directory,
    /// The running daemon, through its admin listener.
    Daemon(SocketAddr),
}

pub(super) enum Owner {
    Us(DirLock),
    Daemon(SocketAddr),
}

pub(super) fn owner(config: &Config) -> Result<Owner, ControlError> {
    let dir = &config.cache.dir;
    match store_mark::examine(dir)? {
        Found::Missing | Found::Empty => return Err(ControlError::NoCache(dir.clone())),
        Found::Marked | Found::Unmarked => {}
    }
    Ok(match DirLock::try_acquire(dir, Holder::Command)? {
        Some(lock) => Owner::Us(lock),
        None => Owner::Daemon(admin_addr(config.admin_listen)),
    })
}

/// Where to reach an admin listener bound to `listen` (a wildcard address means loopback).
fn admin_addr(listen: SocketAddr) -> SocketAddr {
    let ip = match listen.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, listen.port())
}

/// Opens the directory of a stopped daemon (the caller holds its lock). Blocking.
pub(super) fn open_here(config: &Config) -> Result<Cache, ControlError> {
    Ok(Cache::inspect(&cache_settings(config), Arc::new(Metrics::new()))?)
}

pub(super) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ControlError> + Send + 'static,
) -> Result<T, ControlError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ControlError::Io(std::io::Error::other(e)))?
}

/// An admin request to the daemon at `addr`, with `[admin] token_file`'s token when the config
/// has one.
pub(super) fn admin_request(
    config: &Config,
    addr: SocketAddr,
    method: Method,
    path_and_query: &str,
) -> http::request::Builder {
    let req = Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path_and_query}"));
    match &config.admin_token {
        Some(token) => req.header(http::header::AUTHORIZATION, format!("Bearer {}", token.expose())),
        None => req,
    }
}

/// An admin answer's whole body; `Refused` with its text when it is not a success.
pub(super) async fn answer_body(
    addr: SocketAddr,
    resp: http::Response<hyper::body::Incoming>,
) -> Result<Bytes, ControlError> {
    let status = resp.status();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| ControlError::Unreachable {
            addr,
            reason: e.to_string(),
        })?
        .to_bytes();
    if !status.is_success() {
        return Err(ControlError::Refused {
            addr,
            status,
            body: String::from_utf8_lossy(&body).trim().to_string(),
        });
    }
    Ok(body)
}

/// One admin request, with `[admin] token_file`'s token when the config has one.
pub(super) async fn ask<T: serde::de::DeserializeOwned>(
    config: &Config,
    addr: SocketAddr,
    method: Method,
    path_and_query: &str,
) -> Result<T, ControlError> {
    let unreachable = |reason: String| ControlError::Unreachable { addr, reason };
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let req = admin_request(config, addr, method, path_and_query)
        .body(Empty::new())
        .map_err(|e| unreachable(e.to_string()))?;
    let resp = client
        .request(req)
        .await
        .map_err(|e| unreachable(e.to_string()))?;
    let body = answer_body(addr, resp).await?;
    serde_json::from_slice(&body).map_err(|e| unreachable(format!("unexpected answer: {e}")))
}

pub async fn stats(config: &Config) -> Result<(Stats, Via), ControlError> {
    match owner(config)? {
        Owner::Us(lock) => {
            let config = config.clone();
            let stats = blocking(move || {
                let cache = open_here(&config)?;
                drop(lock);
                Ok(cache.stats())
            })
            .await?;
            Ok((stats, Via::Directory))
        }
        Owner::Daemon(addr) => Ok((
            ask(config, addr, Method::GET, admin_api::CACHE_STATS).await?,
            Via::Daemon(addr),
        )),
    }
}

/// Evicts now (`cache gc`): to `to` or the low watermark, after releasing what hosted
/// repositories no longer hold with `hosted`; or, with `unused_for`, what nobody used for that
/// long.
pub async fn gc(
    config: &Config,
    to: Option<u64>,
    hosted: bool,
    unused_for: Option<Duration>,
) -> Result<(GcReport, Via), ControlError> {
    match owner(config)? {
        Owner::Us(lock) if hosted => {
            let (registry, cache) = registry_here(config).await?;
            let report = registry.gc_hosted(to, crate::registry::UPLOAD_GRACE).await?;
            blocking(move || Ok(cache.save_recency()?)).await?;
            drop(lock);
            Ok((report, Via::Directory))
        }
        Owner::Us(lock) => {
            let config = config.clone();
            let report = blocking(move || {
                let cache = open_here(&config)?;
                let report = match unused_for {
                    Some(d) => cache.gc_unused(d),
                    None => cache.gc(to),
                };
                cache.save_recency()?;
                drop(lock);
                Ok(report)
            })
            .await?;
            Ok((report, Via::Directory))
        }
        Owner::Daemon(addr) => {
            let path = admin_api::gc_path(to, hosted, unused_for);
            Ok((ask(config, addr, Method::POST, &path).await?, Via::Daemon(addr)))
        }
    }
}

/// What the cache holds under `prefix` (everything without one).
pub async fn ls(config: &Config, prefix: Option<&str>) -> Result<(Vec<ListEntry>, Via), ControlError> {
    match owner(config)? {
        Owner::Us(lock) => {
            let (config, prefix) = (config.clone(), prefix.map(str::to_string));
            let entries = blocking(move || {
                let cache = open_here(&config)?;
                let entries = cache.list(prefix.as_deref());
                drop(lock);
                Ok(entries)
            })
            .await?;
            Ok((entries, Via::Directory))
        }
        Owner::Daemon(addr) => {
            let path = admin_api::ls_path(prefix);
            Ok((ask(config, addr, Method::GET, &path).await?, Via::Daemon(addr)))
        }
    }
}

/// Drops the tag record of `image` (every tag record of its repository without a tag).
pub async fn purge(config: &Config, image: &str) -> Result<(PurgeReport, Via), ControlError> {
    let parsed: ImageRef = image.parse()?;
    match owner(config)? {
        Owner::Us(lock) => {
            let report = purge_here(config, &parsed).await?;
            drop(lock);
            Ok((report, Via::Directory))
        }
        Owner::Daemon(addr) => {
            let path = admin_api::purge_path(image);
            Ok((ask(config, addr, Method::POST, &path).await?, Via::Daemon(addr)))
        }
    }
}

/// A purge on the directory of a stopped daemon (the caller holds its lock), with the names
/// resolved by the same upstreams the daemon would use.
async fn purge_here(config: &Config, image: &ImageRef) -> Result<PurgeReport, ControlError> {
    let (registry, cache) = registry_here(config).await?;
    let report = registry.purge(image).await?;
    blocking(move || Ok(cache.save_recency()?)).await?;
    Ok(report)
}

/// A registry over the directory of a stopped daemon (the caller holds its lock).
pub(super) async fn registry_here(
    config: &Config,
) -> Result<(Registry, Arc<crate::cache::Cache>), ControlError> {
    let owned = config.clone();
    let cache = Arc::new(blocking(move || open_here(&owned)).await?);
    let metrics = Arc::new(Metrics::new());
    let upstreams =
        Upstreams::from_config(config, &metrics).map_err(|e| ControlError::Upstreams(e.to_string()))?;
    let registry = Registry::new(
        Arc::new(upstreams),
        cache.clone(),
        mirror_policy(config),
        Arc::new(AllowAll),
        metrics,
    )
    .with_hosted(hosted_policy(config));
    Ok((registry, cache))
}

/// Creates a repository in a hosted namespace (`regcache repo create local/team/app`).
pub async fn create_repo(
    config: &Config,
    name: &str,
) -> Result<(crate::admin_api::RepoReport, Via), ControlError> {
    match owner(config)? {
        Owner::Us(lock) => {
            let (registry, _cache) = registry_here(config).await?;
            let report = registry.create_hosted_repository(name).await?;
            drop(lock);
            Ok((report, Via::Directory))
        }
        Owner::Daemon(addr) => {
            let report = ask(config, addr, Method::POST, &admin_api::repos_path(name)).await?;
            Ok((report, Via::Daemon(addr)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wildcard_admin_listener_is_reached_on_loopback() {
        let wild: SocketAddr = "0.0.0.0:5001".parse().unwrap();
        assert_eq!(admin_addr(wild).to_string(), "127.0.0.1:5001");
        let v6: SocketAddr = "[::]:5001".parse().unwrap();
        assert_eq!(admin_addr(v6).to_string(), "[::1]:5001");
    }
}
