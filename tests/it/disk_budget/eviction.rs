//! Eviction: the least recently used content goes first, a blob being read stays, pulling a
//! manifest keeps its image's layers young, and ten times the budget ends within it.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use regcache::cache::Key;

use super::{added, digest, get_blob, on_disk, pull, usage, BLOB, COUNTED};
use crate::support::daemon::{eventually, DaemonBuilder};
use crate::support::fake::{bytes_of, Fake};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filling_past_the_budget_evicts_the_least_recently_used() {
    let up = Fake::start().await;
    let blobs = added(&up, 10, BLOB, 100);
    // High watermark 950,000, low 850,000: nine blobs fit, the tenth evicts.
    let d = DaemonBuilder::new()
        .upstream(&up)
        .max_size(1_000_000)
        .start()
        .await;
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
    let d = DaemonBuilder::new().upstream(&up).max_size("12MB").start().await;
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
    eventually("the reader's lease to end", || d.cache().stats().in_use == 0).await;
    get_blob(&d, "library/app", &other_d).await;
    assert!(!on_disk(&d, &big_d));
    assert!(!d.cache().contains(&key));
    assert!(on_disk(&d, &other_d));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pulling_a_manifest_keeps_its_layers() {
    let up = Fake::start().await;
    // (Tags differ so that the images' configs differ too.)
    up.add_image("library/a", "a1", &[bytes_of(BLOB, 1), bytes_of(BLOB, 2)]);
    up.add_image("library/b", "b1", &[bytes_of(BLOB, 3), bytes_of(BLOB, 4)]);
    let newcomer = up.add_blob("library/c", bytes_of(250_000, 5));
    // Each image counts 217,088 bytes (manifest and its type file, config, two layers).
    let d = DaemonBuilder::new().upstream(&up).max_size(600_000).start().await;
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
    let d = Arc::new(DaemonBuilder::new().upstream(&up).max_size("2MB").start().await);
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
