//! The disk budget (`[cache] max_size`): filling past it evicts the least recently used content
//! and keeps usage under it; a blob being read is never deleted; pulling a manifest keeps its
//! image's layers young; recency survives a restart; crash leftovers are cleaned at start; a blob
//! the cache cannot keep (no room, disk full) still reaches every client, verified; and pulling
//! ten times the budget worth of images ends within it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::support::daemon::{eventually, Daemon};
use crate::support::fake::{bytes_of, sha256, Fake, Fault};
use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use regcache::cache::Key;
use regcache::oci::Digest;
use tokio::sync::watch;

const BLOB: usize = 100_000;
/// What a BLOB-sized file counts for: 25 blocks of 4 KiB.
const COUNTED: f64 = 102_400.0;

fn budget(max: &str) -> String {
    format!("[cache]\ndir = \"@CACHE_DIR@\"\nmax_size = {max}\n")
}

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
    let key = digest(dg);
    eventually("the download to settle", || {
        d.cache().fills.active(&key).is_none()
    })
    .await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filling_past_the_budget_evicts_the_least_recently_used() {
    let up = Fake::start().await;
    let blobs = added(&up, 10, BLOB, 100);
    // High watermark 950,000, low 850,000: nine blobs fit, the tenth evicts.
    let d = Daemon::start(&up.url(), &budget("1000000")).await;
    assert_eq!(d.metric("regcache_cache_max_bytes", &[]).await, 1e6);
    for b in &blobs[..9] {
        get_blob(&d, "library/app", b).await;
    }
    assert_eq!(usage(&d).await, 9.0 * COUNTED);
    assert_eq!(d.metric("regcache_cache_blobs", &[]).await, 9.0);
    assert_eq!(d.metric("regcache_evictions_total", &[]).await, 0.0);
    get_blob(&d, "library/app", &blobs[0]).await; // a hit makes it the most recent
    get_blob(&d, "library/app", &blobs[9]).await;
    let kept: Vec<bool> = blobs.iter().map(|b| on_disk(&d, b)).collect();
    assert_eq!(
        kept,
        [true, false, false, true, true, true, true, true, true, true]
    );
    assert_eq!(d.metric("regcache_evictions_total", &[]).await, 2.0);
    assert_eq!(d.metric("regcache_evicted_bytes_total", &[]).await, 2.0 * COUNTED);
    assert_eq!(usage(&d).await, 8.0 * COUNTED);
    assert_eq!(d.metric("regcache_cache_blobs", &[]).await, 8.0);
    assert_eq!(d.metric("regcache_cache_reserved_bytes", &[]).await, 0.0);
    // An evicted blob is simply fetched again.
    assert_eq!(up.count("GET", "/blobs/"), 10);
    get_blob(&d, "library/app", &blobs[1]).await;
    assert_eq!(up.count("GET", "/blobs/"), 11);
    assert!(usage(&d).await <= 950_000.0);
}

/// A client that reads the response head and the first bytes of the body, then stops reading.
/// Its small receive buffer keeps the kernel from taking the whole body off the daemon's hands.
async fn stalled_get(addr: SocketAddr, path: &str) -> (Incoming, Bytes, impl Sized) {
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.set_recv_buffer_size(16 * 1024).unwrap();
    let stream = sock.connect(addr).await.unwrap();
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let mut sender = sender;
    let req = Request::get(path)
        .header("host", addr.to_string())
        .body(Empty::<Bytes>::new())
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
    (body, first, sender)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blob_being_read_is_not_evicted() {
    let up = Fake::start().await;
    let big = bytes_of(8_000_000, 1);
    let big_d = up.add_blob("library/app", big.clone());
    let other = bytes_of(5_000_000, 2);
    let other_d = up.add_blob("library/app", other.clone());
    // Room for one of them, not both.
    let d = Daemon::start(&up.url(), &budget("\"12MB\"")).await;
    get_blob(&d, "library/app", &big_d).await;
    let (body, first, _conn) = stalled_get(d.addr, &format!("/v2/library/app/blobs/{big_d}")).await;

    // The only candidate for eviction is being read: the other blob streams through unkept.
    assert_eq!(get_blob(&d, "library/app", &other_d).await, other);
    assert!(on_disk(&d, &big_d), "a blob being read was deleted");
    assert!(!on_disk(&d, &other_d));
    assert_eq!(
        d.metric("regcache_uncached_blobs_total", &[("reason", "no_room")])
            .await,
        1.0
    );
    assert_eq!(d.metric("regcache_evictions_total", &[]).await, 0.0);
    let stats: serde_json::Value = serde_json::from_slice(&d.admin("/admin/cache").await.bytes()).unwrap();
    assert_eq!(stats["in_use"], 1);
    // A gc leaves it alone too.
    let gc: serde_json::Value =
        serde_json::from_slice(&d.admin_post("/admin/gc?to=0").await.bytes()).unwrap();
    assert_eq!(gc["evicted"], 0);
    assert!(on_disk(&d, &big_d));

    // The reader finishes intact; then the blob may go.
    let rest = body.collect().await.unwrap().to_bytes();
    assert_eq!([first, rest].concat(), big);
    let key = Key::blob(&digest(&big_d));
    let index = d.cache().index.clone();
    eventually("the reader's lease to end", || index.stats().in_use == 0).await;
    get_blob(&d, "library/app", &other_d).await;
    assert!(!on_disk(&d, &big_d));
    assert!(!index.contains(&key));
    assert!(on_disk(&d, &other_d));
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pulling_a_manifest_keeps_its_layers() {
    let up = Fake::start().await;
    // (Tags differ so that the images' configs differ too.)
    up.add_image("library/a", "a1", &[bytes_of(BLOB, 1), bytes_of(BLOB, 2)]);
    up.add_image("library/b", "b1", &[bytes_of(BLOB, 3), bytes_of(BLOB, 4)]);
    let newcomer = up.add_blob("library/c", bytes_of(250_000, 5));
    // Each image counts 217,088 bytes (manifest and its type file, config, two layers).
    let d = Daemon::start(&up.url(), &budget("600000")).await;
    let a = pull(&d, "library/a", "a1").await;
    let b = pull(&d, "library/b", "b1").await;
    // Image a's manifest is pulled again (a cache hit): its config and layers get younger
    // than image b's.
    assert_eq!(d.get("/v2/library/a/manifests/a1").await.status, 200);
    get_blob(&d, "library/c", &newcomer).await;
    for x in &a {
        assert!(on_disk(&d, x), "a layer of the image pulled last was evicted");
    }
    for x in &b {
        assert!(
            !on_disk(&d, x),
            "the least recently pulled image should have gone"
        );
    }
    assert!(usage(&d).await <= 600_000.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_keeps_the_recency_order() {
    let up = Fake::start().await;
    let blobs = added(&up, 10, BLOB, 200);
    let d = Daemon::start(&up.url(), &budget("1000000")).await;
    for b in &blobs[..9] {
        get_blob(&d, "library/app", b).await;
    }
    // Blob 0 was downloaded first (oldest file) but read last: the snapshot must say so.
    get_blob(&d, "library/app", &blobs[0]).await;
    let dir = d.stop().await;
    let d = Daemon::restart(dir, &up.url(), &budget("1000000")).await;
    assert_eq!(usage(&d).await, 9.0 * COUNTED, "the index was rebuilt");
    get_blob(&d, "library/app", &blobs[9]).await;
    let kept: Vec<bool> = blobs.iter().map(|b| on_disk(&d, b)).collect();
    assert_eq!(
        kept,
        [true, false, false, true, true, true, true, true, true, true]
    );
    get_blob(&d, "library/app", &blobs[0]).await;
    assert_eq!(
        up.count("GET", "/blobs/"),
        10,
        "cached blobs stay hits after a restart"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_leftovers_are_cleaned_at_start() {
    let up = Fake::start().await;
    let blobs = added(&up, 2, BLOB, 300);
    let (_, manifest, _) = up.add_image("library/img", "v1", &[bytes_of(10, 9)]);
    let d = Daemon::start(&up.url(), "").await;
    get_blob(&d, "library/app", &blobs[0]).await;
    get_blob(&d, "library/app", &blobs[1]).await;
    pull(&d, "library/img", "v1").await;
    let dir = d.stop().await;

    let root = dir.path().to_path_buf();
    let hex = |d: &str| d.trim_start_matches("sha256:").to_string();
    std::fs::write(root.join("tmp/sha256-abc.1.2"), b"half a download").unwrap();
    std::fs::write(root.join("blobs/sha256/not-a-digest"), b"junk").unwrap();
    let torn = root.join("blobs/sha256").join(hex(&sha256(b"torn")));
    std::fs::write(&torn, b"").unwrap();
    let empty = root.join("blobs/sha256").join(hex(&sha256(b"")));
    std::fs::write(&empty, b"").unwrap();
    let truncated = root.join("blobs/sha256").join(hex(&blobs[1]));
    std::fs::OpenOptions::new()
        .write(true)
        .open(&truncated)
        .unwrap()
        .set_len(5000)
        .unwrap();
    let orphan = root
        .join("manifests/sha256")
        .join(format!("{}.type", hex(&sha256(b"x"))));
    std::fs::write(&orphan, b"application/vnd.oci.image.manifest.v1+json").unwrap();

    let d = Daemon::restart(dir, &up.url(), "").await;
    assert_eq!(std::fs::read_dir(root.join("tmp")).unwrap().count(), 0);
    for gone in [
        &root.join("blobs/sha256/not-a-digest"),
        &torn,
        &truncated,
        &orphan,
    ] {
        assert!(!gone.exists(), "{} survived the start", gone.display());
    }
    up.clear_log();
    // The empty blob is legitimately empty; the rest is served as before.
    assert_eq!(
        d.head(&format!("/v2/library/app/blobs/{}", sha256(b"")))
            .await
            .status,
        200
    );
    get_blob(&d, "library/app", &blobs[0]).await;
    let m = d
        .get(&format!("/v2/library/img/manifests/{}", sha256(&manifest)))
        .await;
    assert_eq!(m.bytes(), manifest);
    assert_eq!(up.requests().len(), 0, "all hits");
    // The truncated blob was dropped, so it is fetched again, whole.
    get_blob(&d, "library/app", &blobs[1]).await;
    assert_eq!(up.count("GET", "/blobs/"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blob_larger_than_the_budget_streams_through_unkept() {
    let up = Fake::start().await;
    let blob = bytes_of(200_000, 400);
    let dg = up.add_blob("library/app", blob.clone());
    let d = Daemon::start(&up.url(), &budget("\"64KiB\"")).await;
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
    let d = Arc::new(Daemon::start(&up.url(), "").await);
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
    d.cache().fills.store().fail_next_writes(1);
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
    let d = Daemon::start(&up.url(), "").await;
    d.cache().fills.store().fail_next_writes(1);
    assert_eq!(get_blob(&d, "library/app", &dg).await, blob);
    assert_eq!(up.count("GET", "/blobs/"), 1);
    assert_eq!(d.metric("regcache_cache_write_errors_total", &[]).await, 1.0);
    assert!(!on_disk(&d, &dg));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pulling_ten_times_the_budget_ends_within_it() {
    const MAX: f64 = 2_000_000.0;
    const IMAGES: usize = 88;
    let started = std::time::Instant::now();
    let up = Fake::start().await;
    let mut total = 0usize;
    for i in 0..IMAGES {
        let layers: Vec<Vec<u8>> = (0..3)
            .map(|j| {
                let len = 40_000 + (i * 7919 + j * 104_729) % 80_000;
                total += len;
                bytes_of(len, (i * 10 + j) as u64)
            })
            .collect();
        up.add_image(&format!("team/app{i}"), &format!("v{i}"), &layers);
    }
    assert!(total as f64 >= 10.0 * MAX, "{total} bytes of layers");
    let d = Arc::new(Daemon::start(&up.url(), &budget("\"2MB\"")).await);
    let mut workers = Vec::new();
    for w in 0..4 {
        let d = d.clone();
        workers.push(tokio::spawn(async move {
            for i in (w..IMAGES).step_by(4) {
                pull(&d, &format!("team/app{i}"), &format!("v{i}")).await;
                // One consistent view of published plus reserved bytes.
                let stats: serde_json::Value =
                    serde_json::from_slice(&d.admin("/admin/cache").await.bytes()).unwrap();
                let used = stats["bytes"].as_f64().unwrap() + stats["reserved_bytes"].as_f64().unwrap();
                assert!(used <= MAX, "usage {used} over the budget");
            }
        }));
    }
    for w in workers {
        w.await.unwrap();
    }
    assert!(usage(&d).await <= MAX);
    // What is really on disk agrees with the accounting.
    let mut on_disk = 0u64;
    for dir in ["blobs/sha256", "manifests/sha256"] {
        for e in std::fs::read_dir(d.dir.path().join(dir)).unwrap() {
            on_disk += e.unwrap().metadata().unwrap().len().div_ceil(4096).max(1) * 4096;
        }
    }
    assert_eq!(on_disk as f64, usage(&d).await);
    assert!(d.metric("regcache_evictions_total", &[]).await > 0.0);
    assert_eq!(
        d.metric("regcache_uncached_blobs_total", &[("reason", "no_room")])
            .await,
        0.0,
        "every blob was kept while it was young"
    );
    println!(
        "{IMAGES} images, {total} bytes of layers, in {:?}",
        started.elapsed()
    );
}
