//! Lazy pullers (stargz, SOCI, nydus) on a cold blob: a range far ahead of the one download is
//! fetched from the upstream with a ranged request at once, while the full download goes on and
//! is verified and kept; a range near the download follows it (`single_flight.rs`).

use std::time::Duration;

use crate::support::daemon::{eventually, DaemonBuilder};
use crate::support::fake::{bytes_of, Fake, Fault};
use regcache::oci::Digest;
use tokio::sync::watch;

const SIZE: usize = 16 * 1024 * 1024;
const TAIL: usize = 1024 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tail_range_of_a_cold_blob_does_not_wait_for_the_download() {
    let up = Fake::start().await;
    let blob = bytes_of(SIZE, 11);
    let digest = up.add_blob("library/lazy", blob.clone());
    let (open, gate) = watch::channel(false);
    up.set_fault(Some(Fault::Hold {
        after: 1024 * 1024,
        gate,
        then_break: false,
    }));
    let d = std::sync::Arc::new(DaemonBuilder::new().upstream(&up).start().await);
    let path = format!("/v2/library/lazy/blobs/{digest}");
    let full = {
        let (d, p) = (d.clone(), path.clone());
        tokio::spawn(async move { d.get(&p).await })
    };
    let key: Digest = digest.parse().unwrap();
    eventually("the download to start", || {
        d.cache()
            .filling(&key)
            .is_some_and(|f| f.progress().borrow().written > 0)
    })
    .await;

    let spec = format!("bytes={}-", SIZE - TAIL);
    let tail = tokio::time::timeout(
        Duration::from_secs(10),
        d.request("GET", &path, &[("range", &spec)]),
    )
    .await
    .expect("the tail came while the download was held");
    assert_eq!(tail.status, 206);
    assert_eq!(tail.bytes(), blob[SIZE - TAIL..]);
    let ranged = |up: &Fake| up.requests().into_iter().filter(|r| r.range.is_some()).count();
    assert_eq!(ranged(&up), 1, "one ranged upstream request");
    assert!(!full.is_finished(), "the full download is still held");

    open.send(true).unwrap();
    assert_eq!(full.await.unwrap().bytes(), blob);
    assert_eq!(up.count("GET", "/blobs/"), 2, "one full download and one range");
    d.download_settled(&digest).await;
    let again = d.request("GET", &path, &[("range", &spec)]).await;
    assert_eq!(again.bytes(), blob[SIZE - TAIL..]);
    assert_eq!(
        up.count("GET", "/blobs/"),
        2,
        "kept: later ranges come from the cache"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_that_ignores_ranges_leaves_the_range_to_the_download() {
    let up = Fake::start().await;
    let blob = bytes_of(SIZE, 12);
    let digest = up.add_blob("library/lazy", blob.clone());
    up.ignore_ranges(true);
    let d = DaemonBuilder::new().upstream(&up).start().await;
    let path = format!("/v2/library/lazy/blobs/{digest}");
    let cold = d
        .request("GET", &path, &[("range", &format!("bytes={}-", SIZE - TAIL))])
        .await;
    assert_eq!(cold.status, 206);
    assert_eq!(
        cold.bytes(),
        blob[SIZE - TAIL..],
        "the whole answer was not taken for the range"
    );
    let ranged = up.requests().into_iter().filter(|r| r.range.is_some()).count();
    assert_eq!(ranged, 1, "the range was asked of the upstream first");
}

/// While a ranged fetch is under way the download reads nothing more (the range goes first, as
/// a lazy puller waits on it), for half a second at most; then it goes on and the blob is kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_download_lets_a_ranged_fetch_go_first_for_a_while() {
    let up = Fake::start().await;
    let size = 64 * 1024 * 1024;
    let blob = bytes_of(size, 13);
    let digest = up.add_blob("library/lazy", blob.clone());
    let (open, gate) = watch::channel(false);
    up.set_fault(Some(Fault::HoldRanges { gate }));
    let d = std::sync::Arc::new(DaemonBuilder::new().upstream(&up).start().await);
    let path = format!("/v2/library/lazy/blobs/{digest}");
    let tail = {
        let (d, p) = (d.clone(), path.clone());
        let spec = format!("bytes={}-", size - TAIL);
        tokio::spawn(async move { d.request("GET", &p, &[("range", &spec)]).await })
    };
    let key: Digest = digest.parse().unwrap();
    let written = || d.cache().filling(&key).map(|f| f.progress().borrow().written);
    eventually("the ranged request to reach the upstream", || {
        up.requests().iter().any(|r| r.range.is_some())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let before = written().expect("the download is under way");
    assert!(before < size as u64);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        written(),
        Some(before),
        "the download read nothing while the range ran"
    );

    // The range is held longer than the download waits for it.
    eventually("the download to go on", || written().is_none_or(|w| w > before)).await;
    open.send(true).unwrap();
    let tail = tail.await.unwrap();
    assert_eq!(tail.status, 206);
    assert_eq!(tail.bytes(), blob[size - TAIL..]);
    d.download_settled(&digest).await;
    assert_eq!(up.count("GET", "/blobs/"), 2, "one full download and one range");
    assert_eq!(d.get(&path).await.bytes(), blob, "kept");
    assert_eq!(up.count("GET", "/blobs/"), 2);
}
