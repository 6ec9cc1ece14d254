//! Across a restart: the recency order survives (the index snapshot), and crash leftovers (temp
//! files, junk, torn and truncated blobs, orphaned type files) are cleaned at start.

use super::{added, get_blob, on_disk, pull, usage, BLOB, COUNTED};
use crate::support::daemon::DaemonBuilder;
use crate::support::fake::{bytes_of, sha256, Fake};
use regcache::cache::Key;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_keeps_the_recency_order() {
    let up = Fake::start().await;
    let blobs = added(&up, 10, BLOB, 200);
    let d = DaemonBuilder::new()
        .upstream(&up)
        .max_size(1_000_000)
        .start()
        .await;
    for b in &blobs[..9] {
        get_blob(&d, "library/app", b).await;
    }
    // Blob 0 was downloaded first (oldest file) but read last: the snapshot must say so.
    get_blob(&d, "library/app", &blobs[0]).await;
    let dir = d.stop().await;
    let d = DaemonBuilder::new()
        .upstream(&up)
        .max_size(1_000_000)
        .in_dir(dir)
        .start()
        .await;
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
    let d = DaemonBuilder::new().upstream(&up).start().await;
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

    let d = DaemonBuilder::new().upstream(&up).in_dir(dir).start().await;
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
    // The empty blob is legitimately empty: kept (it was never fetched for a repository, so
    // serving it would first ask the upstream); the rest is served as before.
    let empty_digest = sha256(b"").parse().unwrap();
    assert!(d.cache().contains(&Key::blob(&empty_digest)));
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
