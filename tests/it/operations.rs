//! Operating the daemon: health and readiness endpoints, and metrics that move as expected across
//! a miss, a hit, a coalesced pull and a digest mismatch.

use std::time::Duration;

use crate::support::daemon::{eventually, Daemon, DaemonBuilder};
use crate::support::fake::{self, bytes_of, Fake, Fault};
use tokio::sync::watch;

#[tokio::test]
async fn health_and_readiness() {
    let up = Fake::start().await;
    let d = DaemonBuilder::new().upstream(&up).start().await;
    assert_eq!(d.admin("/healthz").await.status, 200);
    assert_eq!(d.admin("/readyz").await.status, 200);
    assert_eq!(d.admin("/nope").await.status, 404);
    let m = d.admin("/metrics").await;
    assert_eq!(m.status, 200);
    assert!(String::from_utf8_lossy(&m.bytes()).contains("regcache_inflight_downloads 0"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_follow_miss_hit_coalesced_and_mismatch() {
    let up = Fake::start().await;
    let blob = bytes_of(600_000, 3);
    let digest = up.add_blob("library/app", blob.clone());
    let (_, manifest, _) = up.add_image("library/app", "v1", &[bytes_of(10, 4)]);
    let d = std::sync::Arc::new(DaemonBuilder::new().upstream(&up).start().await);
    let path = format!("/v2/library/app/blobs/{digest}");
    coalesced_cold_pull(&up, &d, &digest, &blob).await;

    // A hit: served from disk, nothing fetched.
    assert_eq!(d.get(&path).await.bytes(), blob);
    served(&d, "blob", "cache", 600_000.0).await;
    assert_eq!(requests(&d, "blob", "hit").await, 1.0);
    assert_eq!(
        d.metric(
            "regcache_served_bytes_total",
            &[("kind", "blob"), ("source", "cache")]
        )
        .await,
        600_000.0
    );
    assert_eq!(
        d.metric(
            "regcache_served_bytes_total",
            &[("kind", "blob"), ("source", "upstream")]
        )
        .await,
        1_800_000.0
    );
    assert_eq!(
        d.metric("regcache_upstream_bytes_total", &[("upstream", "docker.io")])
            .await,
        600_000.0
    );
    manifest_miss_then_hit(&d, &manifest).await;

    // A corrupt download: counted, and an error result.
    let bad = up.add_blob("library/app", bytes_of(1000, 5));
    up.set_fault(Some(Fault::Corrupt));
    let _ = d.get(&format!("/v2/library/app/blobs/{bad}")).await;
    assert_eq!(d.metric("regcache_digest_mismatches_total", &[]).await, 1.0);
    assert_eq!(d.metric("regcache_failed_downloads_total", &[]).await, 1.0);
}

/// Waits until the access log has counted `bytes` of `kind` served from `source`. It counts a
/// response when the server drops its body, which can be just after the client has read the
/// last byte, and served bytes are the last thing it counts for a response.
async fn served(d: &Daemon, kind: &str, source: &str, bytes: f64) {
    let labels = [("kind", kind), ("source", source)];
    eventually(
        &format!("{bytes} {kind} bytes from {source} to be counted"),
        || d.metric_now("regcache_served_bytes_total", &labels) >= bytes,
    )
    .await;
}

/// `regcache_requests_total` of `kind` with `result`, from the docker.io upstream.
async fn requests(d: &Daemon, kind: &str, result: &str) -> f64 {
    d.metric(
        "regcache_requests_total",
        &[("kind", kind), ("result", result), ("upstream", "docker.io")],
    )
    .await
}

/// A cold pull held half-way, joined by two more clients: one miss, two coalesced, one
/// download.
async fn coalesced_cold_pull(up: &Fake, d: &std::sync::Arc<Daemon>, digest: &str, blob: &[u8]) {
    let path = format!("/v2/library/app/blobs/{digest}");
    let (open, gate) = watch::channel(false);
    up.set_fault(Some(Fault::Hold {
        after: 100_000,
        gate,
        then_break: false,
    }));
    let mut tasks = Vec::new();
    for _ in 0..3 {
        let d = d.clone();
        let p = path.clone();
        tasks.push(tokio::spawn(async move { d.get(&p).await }));
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    assert_eq!(d.metric("regcache_inflight_downloads", &[]).await, 1.0);
    open.send(true).unwrap();
    for t in tasks {
        assert_eq!(t.await.unwrap().bytes(), blob);
    }
    up.set_fault(None);
    // Readers get their last bytes before the blob is published: until then the next request
    // would join the download instead of hitting the cache.
    d.download_settled(digest).await;
    served(d, "blob", "upstream", 1_800_000.0).await;
    assert_eq!(requests(d, "blob", "miss").await, 1.0);
    assert_eq!(requests(d, "blob", "coalesced").await, 2.0);
    assert_eq!(
        d.metric("regcache_coalesced_total", &[("kind", "blob")]).await,
        2.0
    );
    assert_eq!(d.metric("regcache_inflight_downloads", &[]).await, 0.0);
    assert_eq!(
        d.metric("regcache_upstream_bytes_total", &[("upstream", "docker.io")])
            .await,
        600_000.0
    );
}

/// Manifests: a miss then a hit, and the upstream requests by class.
async fn manifest_miss_then_hit(d: &Daemon, manifest: &[u8]) {
    let path = format!("/v2/library/app/manifests/{}", fake::sha256(manifest));
    assert_eq!(d.get(&path).await.bytes(), manifest);
    assert_eq!(d.get(&path).await.bytes(), manifest);
    let len = manifest.len() as f64;
    served(d, "manifest", "upstream", len).await;
    served(d, "manifest", "cache", len).await;
    assert_eq!(requests(d, "manifest", "miss").await, 1.0);
    assert_eq!(requests(d, "manifest", "hit").await, 1.0);
    assert_eq!(
        d.metric(
            "regcache_upstream_requests_total",
            &[("class", "2xx"), ("method", "GET"), ("upstream", "docker.io")]
        )
        .await,
        2.0
    );
}
