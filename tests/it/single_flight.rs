//! One upstream download per blob however many clients ask, streamed to all of them while it
//! arrives; failures end every reader's body in an error and keep nothing; Range requests on
//! cached and in-flight blobs.

use std::time::Duration;

use crate::support::daemon::{self, eventually, Daemon, DaemonBuilder};
use crate::support::fake::{bytes_of, Fake, Fault};
use regcache::oci::Digest;
use tokio::sync::watch;

const SIZE: usize = 1_000_000;

/// Holds the upstream's blob bodies after `after` bytes until the returned sender opens them;
/// then they finish, or break if `then_break`.
fn hold(up: &Fake, after: usize, then_break: bool) -> watch::Sender<bool> {
    let (open, gate) = watch::channel(false);
    up.set_fault(Some(Fault::Hold {
        after,
        gate,
        then_break,
    }));
    open
}

/// Sends a GET for `path` and reads its response head; the connection, for the body.
async fn head_of(addr: std::net::SocketAddr, path: &str) -> (String, tokio::net::TcpStream) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: mirror\r\nConnection: close\r\n\r\n");
    conn.write_all(req.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(conn.read(&mut byte).await.unwrap(), 1, "the head ended early");
        head.push(byte[0]);
    }
    (String::from_utf8_lossy(&head).into_owned(), conn)
}

/// GETs `path` on its own task.
fn spawn_get(d: &std::sync::Arc<Daemon>, path: &str) -> tokio::task::JoinHandle<daemon::Reply> {
    let (d, p) = (d.clone(), path.to_string());
    tokio::spawn(async move { d.get(&p).await })
}

/// Clients that joined a blob download another client started.
fn joined(d: &Daemon) -> f64 {
    d.metric_now("regcache_coalesced_total", &[("kind", "blob")])
}

/// Whether the upstream has answered the download of `digest` (its headers are in).
fn download_started(d: &Daemon, digest: &str) -> bool {
    let key: Digest = digest.parse().unwrap();
    d.cache()
        .filling(&key)
        .is_some_and(|fill| fill.progress().borrow().started)
}

/// How many readers follow the download of `digest`: every holder of the fill but the fills
/// map, the download task and this look (the count the download itself checks when
/// `finish_abandoned` is off).
fn readers(d: &Daemon, digest: &str) -> usize {
    let key: Digest = digest.parse().unwrap();
    d.cache()
        .filling(&key)
        .map_or(0, |fill| std::sync::Arc::strong_count(&fill).saturating_sub(3))
}

async fn setup() -> (Fake, Daemon, String, Vec<u8>) {
    let up = Fake::start().await;
    let blob = bytes_of(SIZE, 7);
    let digest = up.add_blob("library/big", blob.clone());
    let d = DaemonBuilder::new().upstream(&up).start().await;
    (up, d, digest, blob)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_cold_pulls_cause_one_upstream_get() {
    let (up, d, digest, blob) = setup().await;
    let open = hold(&up, 300_000, false);
    let path = format!("/v2/library/big/blobs/{digest}");
    let d = std::sync::Arc::new(d);
    let tasks: Vec<_> = (0..8).map(|_| spawn_get(&d, &path)).collect();
    eventually("the first upstream GET", || up.count("GET", "/blobs/") >= 1).await;
    // A late joiner arrives while the download is held half-way.
    let late = spawn_get(&d, &path);
    eventually("all nine clients on the one download", || joined(&d) == 8.0).await;
    open.send(true).unwrap();
    for t in tasks.into_iter().chain([late]) {
        let r = t.await.unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.bytes(), blob);
    }
    assert_eq!(up.count("GET", "/blobs/"), 1);
    assert_eq!(d.get(&path).await.bytes(), blob);
    assert_eq!(up.count("GET", "/blobs/"), 1, "later pulls are hits");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn download_survives_the_first_client_leaving() {
    let (up, d, digest, blob) = setup().await;
    let open = hold(&up, 100_000, false);
    let path = format!("/v2/library/big/blobs/{digest}");
    let d = std::sync::Arc::new(d);
    let first = spawn_get(&d, &path);
    eventually("the upstream GET", || up.count("GET", "/blobs/") == 1).await;
    eventually("the upstream to answer", || download_started(&d, &digest)).await;
    first.abort();
    let _ = first.await;
    open.send(true).unwrap();
    // The fill completes with no client and lands in the cache.
    let blob_path = d
        .dir
        .path()
        .join("blobs/sha256")
        .join(digest.trim_start_matches("sha256:"));
    eventually("the blob to be published", || blob_path.is_file()).await;
    assert_eq!(std::fs::read(&blob_path).unwrap(), blob);
    assert_eq!(d.get(&path).await.bytes(), blob);
    assert_eq!(up.count("GET", "/blobs/"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abandoned_download_stops_when_configured() {
    let up = Fake::start().await;
    let blob = bytes_of(SIZE, 7);
    let digest = up.add_blob("library/big", blob.clone());
    let d = DaemonBuilder::new()
        .upstream(&up)
        .finish_abandoned(false)
        .start()
        .await;
    let open = hold(&up, 300_000, false);
    let path = format!("/v2/library/big/blobs/{digest}");
    let d = std::sync::Arc::new(d);
    let first = spawn_get(&d, &path);
    eventually("the upstream GET", || up.count("GET", "/blobs/") == 1).await;
    eventually("the upstream to answer", || download_started(&d, &digest)).await;
    first.abort();
    let _ = first.await;
    // The download notices it is abandoned when the next bytes arrive with no reader left, so
    // the upstream sends the rest only once the server has let go of the response's reader.
    eventually("the reader to let go of the download", || {
        readers(&d, &digest) == 0
    })
    .await;
    open.send(true).unwrap();
    let tmp = d.dir.path().join("tmp");
    eventually("the temp file to be removed", || {
        std::fs::read_dir(&tmp).unwrap().count() == 0
    })
    .await;
    assert!(!d
        .dir
        .path()
        .join("blobs/sha256")
        .join(digest.trim_start_matches("sha256:"))
        .exists());
    // The failed download's temp file goes before the download itself: a request in between
    // would join it.
    d.download_settled(&digest).await;
    up.set_fault(None);
    assert_eq!(d.get(&path).await.bytes(), blob);
    assert_eq!(up.count("GET", "/blobs/"), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_break_fails_every_reader_and_keeps_nothing() {
    let (up, d, digest, blob) = setup().await;
    let open = hold(&up, 200_000, true);
    let path = format!("/v2/library/big/blobs/{digest}");
    let d = std::sync::Arc::new(d);
    // Each reader has its response head before the break (a reader that joins after it gets a
    // 502, also correct, but not what this test is about).
    let mut readers = Vec::new();
    for _ in 0..3 {
        readers.push(head_of(d.addr, &path).await);
    }
    assert_eq!(up.count("GET", "/blobs/"), 1);
    open.send(true).unwrap();
    for (head, mut conn) in readers {
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        let mut rest = Vec::new();
        let _ = tokio::io::AsyncReadExt::read_to_end(&mut conn, &mut rest).await;
        assert!(rest.len() < SIZE, "a broken download must not look complete");
    }
    let _ = blob;
    let tmp = d.dir.path().join("tmp");
    eventually("the temp file to be removed", || {
        std::fs::read_dir(&tmp).unwrap().count() == 0
    })
    .await;
    assert!(!d
        .dir
        .path()
        .join("blobs/sha256")
        .join(digest.trim_start_matches("sha256:"))
        .exists());
    // Next request downloads afresh.
    d.download_settled(&digest).await;
    up.set_fault(None);
    assert_eq!(d.get(&path).await.bytes(), bytes_of(SIZE, 7));
    assert_eq!(up.count("GET", "/blobs/"), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mid_stream_break_is_visible_to_the_client() {
    let (up, d, digest, _) = setup().await;
    up.set_fault(Some(Fault::Break { after: 400_000 }));
    let r = d.get(&format!("/v2/library/big/blobs/{digest}")).await;
    assert_eq!(r.status, 200);
    assert!(
        r.body.is_err(),
        "body must end in an error, got {} bytes",
        r.body.as_ref().map(|b| b.len()).unwrap_or(0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn digest_mismatch_is_never_served_complete_nor_kept() {
    let (up, d, digest, _) = setup().await;
    up.set_fault(Some(Fault::Corrupt));
    let path = format!("/v2/library/big/blobs/{digest}");
    let r = d.get(&path).await;
    assert!(
        r.status != 200 || r.body.is_err(),
        "corrupt content must not be delivered as complete"
    );
    d.download_settled(&digest).await;
    let blob_path = d
        .dir
        .path()
        .join("blobs/sha256")
        .join(digest.trim_start_matches("sha256:"));
    assert!(!blob_path.exists());
    let r = d.get(&path).await;
    assert!(r.status != 200 || r.body.is_err());
    d.download_settled(&digest).await;
    assert_eq!(
        up.count("GET", "/blobs/"),
        2,
        "nothing poisoned the cache: asked again"
    );
    up.set_fault(None);
    assert_eq!(d.get(&path).await.bytes(), bytes_of(SIZE, 7));
}

async fn range(d: &Daemon, path: &str, spec: &str) -> daemon::Reply {
    d.request("GET", path, &[("range", spec)]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn range_matrix_on_a_cached_blob() {
    let up = Fake::start().await;
    let blob = bytes_of(2048, 9);
    let digest = up.add_blob("library/r", blob.clone());
    let d = DaemonBuilder::new().upstream(&up).start().await;
    let path = format!("/v2/library/r/blobs/{digest}");
    assert_eq!(d.get(&path).await.bytes(), blob);
    for (spec, start, end) in [
        ("bytes=500-1499", 500, 1500),
        ("bytes=500-", 500, 2048),
        ("bytes=-500", 1548, 2048),
        ("bytes=2000-5000", 2000, 2048),
        ("bytes=0-2048", 0, 2048),
    ] {
        let r = range(&d, &path, spec).await;
        assert_eq!(r.status, 206, "{spec}");
        assert_eq!(r.bytes(), blob[start..end], "{spec}");
        assert_eq!(
            r.header("content-range"),
            Some(format!("bytes {}-{}/2048", start, end - 1).as_str()),
            "{spec}"
        );
        assert_eq!(
            r.header("content-length"),
            Some((end - start).to_string().as_str())
        );
    }
    for spec in ["bytes=500-0", "bytes=5000-10000"] {
        let r = range(&d, &path, spec).await;
        assert_eq!(r.status, 416, "{spec}");
        assert_eq!(r.header("content-range"), Some("bytes */2048"));
    }
    assert_eq!(up.count("GET", "/blobs/"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn range_on_an_in_flight_blob_waits_for_its_bytes() {
    let (up, d, digest, blob) = setup().await;
    let open = hold(&up, 300_000, false);
    let path = format!("/v2/library/big/blobs/{digest}");
    let d = std::sync::Arc::new(d);
    // A cold Range request starts the one full download.
    let early = range(&d, &path, "bytes=1000-1999").await;
    assert_eq!(early.status, 206);
    assert_eq!(early.bytes(), blob[1000..2000]);
    let mut tail = {
        let d = d.clone();
        let p = path.clone();
        tokio::spawn(async move { range(&d, &p, "bytes=900000-").await })
    };
    eventually("the range request to join the download", || joined(&d) == 1.0).await;
    assert!(
        tokio::time::timeout(Duration::from_millis(50), &mut tail)
            .await
            .is_err(),
        "bytes past the download position are waited for"
    );
    open.send(true).unwrap();
    let r = tail.await.unwrap();
    assert_eq!(r.status, 206);
    assert_eq!(r.bytes(), blob[900_000..]);
    assert_eq!(
        r.header("content-range"),
        Some(format!("bytes 900000-{}/{SIZE}", SIZE - 1).as_str())
    );
    assert_eq!(up.count("GET", "/blobs/"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_manifest_requests_share_one_upstream_request() {
    let up = Fake::start().await;
    let (digest, bytes, _) = up.add_image("library/app", "latest", &[bytes_of(10, 1)]);
    let d = std::sync::Arc::new(DaemonBuilder::new().upstream(&up).tag_ttl("0s").start().await);
    let (open, gate) = watch::channel(false);
    up.set_fault(Some(Fault::HoldManifests { gate }));
    let spawn_all = |path: String, method: &'static str| {
        (0..6)
            .map(|_| {
                let d = d.clone();
                let p = path.clone();
                tokio::spawn(async move { d.request(method, &p, &[]).await })
            })
            .collect::<Vec<_>>()
    };
    // Cold tag GETs.
    let tasks = spawn_all("/v2/library/app/manifests/latest".to_string(), "GET");
    eventually("the upstream request", || up.count("GET", "/manifests/") >= 1).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    open.send(true).unwrap();
    for t in tasks {
        assert_eq!(t.await.unwrap().bytes(), bytes);
    }
    assert_eq!(up.count("GET", "/manifests/"), 1);
    open.send(false).unwrap();
    up.clear_log();
    assert_eq!(
        d.get(&format!("/v2/library/app/manifests/{digest}"))
            .await
            .bytes(),
        bytes
    );
    assert_eq!(up.count("GET", "/manifests/"), 0, "cached by the tag pull");
    // Stale tag revalidations coalesce into one HEAD.
    let tasks = spawn_all("/v2/library/app/manifests/latest".to_string(), "GET");
    eventually("the upstream HEAD", || up.count("HEAD", "/manifests/") >= 1).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    open.send(true).unwrap();
    for t in tasks {
        assert_eq!(t.await.unwrap().bytes(), bytes);
    }
    assert_eq!(up.count("HEAD", "/manifests/"), 1);
    assert_eq!(up.count("GET", "/manifests/"), 0);
}
