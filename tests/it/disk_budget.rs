//! The disk budget (`[cache] max_size`): filling past it evicts the least recently used content
//! and keeps usage under it; a blob being read is never deleted; pulling a manifest keeps its
//! image's layers young; recency survives a restart; crash leftovers are cleaned at start; a blob
//! the cache cannot keep (no room, disk full) still reaches every client, verified; pulling
//! ten times the budget worth of images ends within it; and `unused_ttl` sweeps what nobody
//! pulled for that long.

mod eviction;
mod restart;
mod uncached;
mod unused;

use bytes::Bytes;
use regcache::oci::Digest;

use crate::support::daemon::Daemon;
use crate::support::fake::{bytes_of, sha256, Fake};

const BLOB: usize = 100_000;
/// What a BLOB-sized file counts for: 25 blocks of 4 KiB.
const COUNTED: f64 = 102_400.0;

fn digest(d: &str) -> Digest {
    d.parse().unwrap()
}

fn on_disk(d: &Daemon, digest: &str) -> bool {
    d.dir
        .path()
        .join("blobs/sha256")
        .join(digest.trim_start_matches("sha256:"))
        .is_file()
}

/// GETs a blob, checks it is complete and has the right digest, and waits until its download
/// (if any) has been published or dropped.
async fn get_blob(d: &Daemon, repo: &str, dg: &str) -> Bytes {
    let r = d.get(&format!("/v2/{repo}/blobs/{dg}")).await;
    assert_eq!(r.status, 200, "{dg}");
    let bytes = r.bytes();
    assert_eq!(sha256(&bytes), dg, "verified content");
    d.download_settled(dg).await;
    bytes
}

async fn usage(d: &Daemon) -> f64 {
    d.metric("regcache_cache_bytes", &[]).await
}

fn added(up: &Fake, n: usize, len: usize, seed: u64) -> Vec<String> {
    (0..n)
        .map(|i| up.add_blob("library/app", bytes_of(len, seed + i as u64)))
        .collect()
}

/// Pulls an image by tag: the manifest, then its config and layers, each verified. Returns the
/// blob digests.
async fn pull(d: &Daemon, repo: &str, tag: &str) -> Vec<String> {
    let r = d.get(&format!("/v2/{repo}/manifests/{tag}")).await;
    assert_eq!(r.status, 200);
    let m: serde_json::Value = serde_json::from_slice(&r.bytes()).unwrap();
    let mut blobs = vec![m["config"]["digest"].as_str().unwrap().to_string()];
    for l in m["layers"].as_array().unwrap() {
        blobs.push(l["digest"].as_str().unwrap().to_string());
    }
    for b in &blobs {
        get_blob(d, repo, b).await;
    }
    blobs
}
