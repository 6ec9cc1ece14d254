//! Blobs the cache cannot keep (larger than the a write error, no temp file) still
//! reach every client whole and verified, streamed from upstream.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::{get_blob, on_disk, usage};
use crate::support::daemon::{eventually, DaemonBuilder};
use crate::support::fake::{bytes_of, Fake, Fault};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blob_larger_than_the_budget_streams_through_unkept() {
    let up = Fake::start().await;
    let blob = bytes_of(200_000, 400);
    let dg = up.add_blob("library/app", blob.clone());
    let d = DaemonBuilder::new().upstream(&up).max_size("64KiB").start().await;
    let path = format!("/v2/library/app/blobs/{dg}");
    assert_eq!(get_blob(&d, "library/app", &dg).await, blob);
    assert_eq!(
        up.count("GET", "/blobs/"),
        1,
        "the leader's response was handed to the client"
    );
    assert_eq!(get_blob(&d, "library/app", &dg).await, blob);
    assert_eq!(up.count("GET", "/blobs/"), 2);
    for (spec, start, end) in [
        ("bytes=1000-1999", 1000, 2000),
        ("bytes=199000-", 199_000, 200_000),
    ] {
        let r = d.request("GET", &path, &[("range", spec)]).await;
        assert_eq!(r.status, 206, "{spec}");
        assert_eq!(r.bytes(), blob[start..end], "{spec}");
    }
    assert!(!on_disk(&d, &dg));
    assert_eq!(std::fs::read_dir(d.dir.path().join("tmp")).unwrap().count(), 0);
    assert_eq!(
        d.metric("regcache_uncached_blobs_total", &[("reason", "no_room")])
            .await,
        4.0
    );
    assert_eq!(usage(&d).await, 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_error_mid_download_falls_back_to_upstream_for_every_reader() {
    let up = Fake::start().await;
    let blob = bytes_of(1_000_000, 500);
    let dg = up.add_blob("library/app", blob.clone());
    let d = Arc::new(DaemonBuilder::new().upstream(&up).start().await);
    let (open, gate) = watch::channel(false);
    up.set_fault(Some(Fault::Hold {
        after: 300_000,
        gate,
        then_break: false,
    }));
    let path = format!("/v2/library/app/blobs/{dg}");
    let mut clients = Vec::new();
    for _ in 0..3 {
        let (d, p) = (d.clone(), path.clone());
        clients.push(tokio::spawn(async move { d.get(&p).await }));
    }
    eventually("the upstream GET", || up.count("GET", "/blobs/") == 1).await;
    // The first 256 KiB are written and handed out before the upstream holds; the next write
    // finds the disk full.
    tokio::time::sleep(Duration::from_millis(100)).await;
    d.cache().fail_next_writes(1);
    open.send(true).unwrap();
    for c in clients {
        let r = c.await.unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.bytes(), blob, "every reader gets the whole blob");
    }
    assert_eq!(
        up.count("GET", "/blobs/"),
        4,
        "each reader continued from upstream"
    );
    assert_eq!(d.metric("regcache_cache_write_errors_total", &[]).await, 1.0);
    assert_eq!(
        d.metric("regcache_uncached_blobs_total", &[("reason", "write_error")])
            .await,
        1.0
    );
    assert!(!on_disk(&d, &dg));
    assert_eq!(std::fs::read_dir(d.dir.path().join("tmp")).unwrap().count(), 0);
    // Once the disk has room again the blob is kept.
    up.set_fault(None);
    get_blob(&d, "library/app", &dg).await;
    assert!(on_disk(&d, &dg));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_temp_file_that_cannot_be_created_is_not_a_client_error() {
    let up = Fake::start().await;
    let blob = bytes_of(300_000, 600);
    let dg = up.add_blob("library/app", blob.clone());
    let d = DaemonBuilder::new().upstream(&up).start().await;
    d.cache().fail_next_writes(1);
    assert_eq!(get_blob(&d, "library/app", &dg).await, blob);
    assert_eq!(up.count("GET", "/blobs/"), 1);
    assert_eq!(d.metric("regcache_cache_write_errors_total", &[]).await, 1.0);
    assert!(!on_disk(&d, &dg));
}
