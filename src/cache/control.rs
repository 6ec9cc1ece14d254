//! The operator commands `regcache cache stats` and `regcache cache gc`. They work on the cache
//! directory whether the daemon runs or not, without racing it: if the directory's lock is free
//! (`dirlock.rs`) the command takes it and opens the directory itself; if a daemon holds it, the
//! command asks that daemon through its admin listener (`GET /admin/cache`, `POST /admin/gc`),
//! found at `[admin] listen` of the same config file.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use super::blobs::BlobStore;
use super::dirlock::DirLock;
use super::evict::{Budget, GcReport};
use super::index::{Index, Stats};
use super::layout::Layout;
use crate::config::Config;
use crate::metrics::Metrics;

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("there is no cache at {0}")]
    NoCache(PathBuf),
    #[error("cache directory: {0}")]
    Io(#[from] std::io::Error),
    #[error("a running regcache holds the cache directory, and its admin listener at {addr} did not answer: {reason}")]
    Unreachable { addr: SocketAddr, reason: String },
    #[error("the running regcache at {addr} answered {status}: {body}")]
    Refused {
        addr: SocketAddr,
        status: StatusCode,
        body: String,
    },
}

/// Who did the work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// This process, on the directory of a stopped daemon.
    Directory,
    /// The running daemon, through its admin listener.
    Daemon(SocketAddr),
}

enum Owner {
    Us(DirLock),
    Daemon(SocketAddr),
}

fn owner(config: &Config) -> Result<Owner, ControlError> {
    let dir = &config.cache.dir;
    if !dir.join("blobs").is_dir() {
        return Err(ControlError::NoCache(dir.clone()));
    }
    Ok(match DirLock::try_acquire(dir)? {
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
fn open_here(config: &Config) -> Result<Arc<Index>, ControlError> {
    let layout = Layout::new(&config.cache.dir);
    BlobStore::open(&layout)?;
    Ok(Index::open(
        layout,
        Budget::from_config(&config.cache),
        Arc::new(Metrics::new()),
    )?)
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ControlError> + Send + 'static,
) -> Result<T, ControlError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ControlError::Io(std::io::Error::other(e)))?
}

async fn ask<T: serde::de::DeserializeOwned>(
    addr: SocketAddr,
    method: Method,
    path_and_query: &str,
) -> Result<T, ControlError> {
    let unreachable = |reason: String| ControlError::Unreachable { addr, reason };
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let req = Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path_and_query}"))
        .body(Empty::new())
        .map_err(|e| unreachable(e.to_string()))?;
    let resp = client
        .request(req)
        .await
        .map_err(|e| unreachable(e.to_string()))?;
    let status = resp.status();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| unreachable(e.to_string()))?
        .to_bytes();
    if !status.is_success() {
        return Err(ControlError::Refused {
            addr,
            status,
            body: String::from_utf8_lossy(&body).trim().to_string(),
        });
    }
    serde_json::from_slice(&body).map_err(|e| unreachable(format!("unexpected answer: {e}")))
}

pub async fn stats(config: &Config) -> Result<(Stats, Via), ControlError> {
    match owner(config)? {
        Owner::Us(lock) => {
            let config = config.clone();
            let stats = blocking(move || {
                let index = open_here(&config)?;
                drop(lock);
                Ok(index.stats())
            })
            .await?;
            Ok((stats, Via::Directory))
        }
        Owner::Daemon(addr) => Ok((ask(addr, Method::GET, "/admin/cache").await?, Via::Daemon(addr))),
    }
}

pub async fn gc(config: &Config, to: Option<u64>) -> Result<(GcReport, Via), ControlError> {
    match owner(config)? {
        Owner::Us(lock) => {
            let config = config.clone();
            let report = blocking(move || {
                let index = open_here(&config)?;
                let report = index.gc(to);
                index.save_if_dirty()?;
                drop(lock);
                Ok(report)
            })
            .await?;
            Ok((report, Via::Directory))
        }
        Owner::Daemon(addr) => {
            let path = match to {
                Some(n) => format!("/admin/gc?to={n}"),
                None => "/admin/gc".to_string(),
            };
            Ok((ask(addr, Method::POST, &path).await?, Via::Daemon(addr)))
        }
    }
}

/// `1.5 GiB (1610612736 bytes)`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {} ({n} bytes)", UNITS[u])
    }
}

/// A UTC timestamp (`2024-05-01T12:00:00Z`) for milliseconds since the Unix epoch.
pub fn utc(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

pub fn render_stats(s: &Stats, via: Via) -> String {
    let budget = match s.max_size {
        Some(m) => format!(
            "{} (evicts from {:.0}% down to {:.0}%)",
            human_bytes(m),
            s.high_watermark * 100.0,
            s.low_watermark * 100.0
        ),
        None => "unlimited".to_string(),
    };
    let source = match via {
        Via::Directory => "read from the directory (no daemon running)".to_string(),
        Via::Daemon(a) => format!("answered by the running daemon at {a}"),
    };
    format!(
        "entries:       {} ({} blobs, {} manifests)\n\
         bytes:         {}\n\
         reserved:      {} (downloads in progress)\n\
         max_size:      {budget}\n\
         oldest access: {}\n\
         pinned:        {} ({})\n\
         in use:        {}\n\
         source:        {source}\n",
        s.blobs + s.manifests,
        s.blobs,
        s.manifests,
        human_bytes(s.bytes),
        human_bytes(s.reserved_bytes),
        s.oldest_access_ms.map_or_else(|| "-".to_string(), utc),
        s.pinned,
        human_bytes(s.pinned_bytes),
        s.in_use,
    )
}

pub fn render_gc(r: &GcReport, via: Via) -> String {
    let target = r
        .target
        .map_or_else(|| "nothing (unlimited cache, no --to)".to_string(), human_bytes);
    let by = match via {
        Via::Directory => "on the directory (no daemon running)".to_string(),
        Via::Daemon(a) => format!("by the running daemon at {a}"),
    };
    format!(
        "evicted {} entries, {} freed, {} now in use; target {target}; done {by}\n",
        r.evicted,
        human_bytes(r.freed_bytes),
        human_bytes(r.bytes),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        assert_eq!(utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc(1_709_210_096_000), "2024-02-29T12:34:56Z");
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(3 << 29), "1.5 GiB (1610612736 bytes)");
        let wild: SocketAddr = "0.0.0.0:5001".parse().unwrap();
        assert_eq!(admin_addr(wild).to_string(), "127.0.0.1:5001");
        let v6: SocketAddr = "[::]:5001".parse().unwrap();
        assert_eq!(admin_addr(v6).to_string(), "[::1]:5001");
    }
}
