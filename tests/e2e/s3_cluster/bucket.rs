//! The shared bucket seen from outside the replicas, with object_store's S3 client: waiting
//! until it holds a set of blobs, and checking that every object under `blobs/` is whole (its
//! size and SHA-256 match the digest in its key).

use std::time::{Duration, Instant};

use futures_util::StreamExt as _;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt as _};
use sha2::{Digest as _, Sha256};

use crate::support::seaweedfs;

/// A path-style client for `bucket` at `endpoint` with the test credentials.
pub fn client(endpoint: &str, bucket: &str) -> AmazonS3 {
    let _ = rustls::crypto::ring::default_provider().install_default();
    AmazonS3Builder::new()
        .with_endpoint(endpoint)
        .with_allow_http(true)
        .with_virtual_hosted_style_request(false)
        .with_region(seaweedfs::REGION)
        .with_bucket_name(bucket)
        .with_access_key_id(seaweedfs::ACCESS_KEY)
        .with_secret_access_key(seaweedfs::SECRET_KEY)
        .build()
        .expect("build the S3 client")
}

/// The key of blob `digest` (`sha256:<hex>`).
pub fn blob_key(digest: &str) -> Path {
    Path::from(format!("blobs/sha256/{}", digest.trim_start_matches("sha256:")))
}

/// Waits until the bucket holds every one of `digests` (at most `limit`).
pub async fn wait_for_blobs(
    store: &AmazonS3,
    digests: &[String],
    limit: Duration,
) -> Result<Duration, String> {
    let started = Instant::now();
    loop {
        let mut missing = Vec::new();
        for digest in digests {
            match store.head(&blob_key(digest)).await {
                Ok(_) => {}
                Err(object_store::Error::NotFound { .. }) => missing.push(digest.clone()),
                Err(e) => return Err(format!("HEAD {digest}: {e}")),
            }
        }
        if missing.is_empty() {
            return Ok(started.elapsed());
        }
        if started.elapsed() > limit {
            return Err(format!("the bucket still lacks {missing:?} after {limit:?}"));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits (a minute at most) until the bucket holds every one of `digests`, then verifies every
/// blob in it (`verify_blobs`); how long the wait took and the digests found. Panics otherwise.
pub async fn settled(store: &AmazonS3, digests: &[String]) -> (Duration, Vec<String>) {
    let waited = wait_for_blobs(store, digests, Duration::from_secs(60))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let stored = verify_blobs(store).await.unwrap_or_else(|e| panic!("{e}"));
    (waited, stored)
}

/// Lists `blobs/` and reads every object back: each must be `sha256/<hex>` with the bytes whose
/// SHA-256 is `<hex>`, and the size the listing gave. Returns the digests found.
pub async fn verify_blobs(store: &AmazonS3) -> Result<Vec<String>, String> {
    let listed: Vec<_> = store.list(Some(&Path::from("blobs"))).collect().await;
    let mut digests = Vec::new();
    for meta in listed {
        let meta = meta.map_err(|e| format!("list blobs/: {e}"))?;
        let key = meta.location.to_string();
        let hex = key
            .strip_prefix("blobs/sha256/")
            .filter(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
            .ok_or_else(|| format!("unexpected key {key}"))?;
        let mut stream = store
            .get(&meta.location)
            .await
            .map_err(|e| format!("GET {key}: {e}"))?
            .into_stream();
        let (mut hasher, mut len) = (Sha256::new(), 0u64);
        while let Some(bytes) = stream.next().await {
            let bytes = bytes.map_err(|e| format!("GET {key}: {e}"))?;
            len += bytes.len() as u64;
            hasher.update(&bytes);
        }
        if len != meta.size {
            return Err(format!("{key}: {len} bytes read, {} listed", meta.size));
        }
        let got = format!("{:x}", hasher.finalize());
        if got != hex {
            return Err(format!(
                "{key} ({len} bytes) holds bytes with SHA-256 {got}: a partial or wrong object"
            ));
        }
        digests.push(format!("sha256:{hex}"));
    }
    Ok(digests)
}
