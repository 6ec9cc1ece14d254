//! `regcache cache stats` and `regcache cache gc`, with the daemon running (they go through its
//! admin listener, since it holds the directory's lock) and with it stopped (they open the
//! directory themselves), and the admin endpoints behind them; `cache gc --unused-for` evicts by
//! age.

use crate::support::commands::{command as regcache, stdout};
use crate::support::daemon::{Daemon, DaemonBuilder};
use crate::support::fake::{bytes_of, Fake};

async fn fetch(d: &Daemon, digest: &str) {
    let r = d.get(&format!("/v2/library/app/blobs/{digest}")).await;
    assert_eq!(r.status, 200);
    r.bytes();
    d.download_settled(digest).await;
}

/// An operator's config file for `d`'s admin listener and cache directory, with `cache` keys.
fn operator_config(d: &Daemon, cache: &str) -> std::path::PathBuf {
    let config = d.dir.path().join("regcache.toml");
    let text = format!(
        "[admin]\nlisten = \"{}\"\n[cache]\ndir = \"{}\"\n{cache}",
        d.admin_addr,
        d.dir.path().display()
    );
    std::fs::write(&config, text).unwrap();
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_and_gc_with_and_without_a_running_daemon() {
    let up = Fake::start().await;
    let blobs: Vec<String> = (0..3)
        .map(|i| up.add_blob("library/app", bytes_of(100_000, 700 + i)))
        .collect();
    let d = DaemonBuilder::new().upstream(&up).max_size("1MB").start().await;
    for b in &blobs {
        fetch(&d, b).await;
    }
    let config = operator_config(&d, "max_size = \"1MB\"\n");

    // Running: the daemon answers.
    let text = stdout(&regcache(&["cache", "stats"], &config));
    assert!(text.contains("3 blobs"), "{text}");
    assert!(text.contains("running daemon"), "{text}");
    let json: serde_json::Value =
        serde_json::from_str(&stdout(&regcache(&["cache", "stats", "--json"], &config))).unwrap();
    assert_eq!(json["blobs"], 3);
    assert_eq!(json["bytes"], 3 * 102_400);
    assert_eq!(json["max_size"], 1_000_000);
    assert!(json["oldest_access_ms"].as_u64().is_some());
    let text = stdout(&regcache(&["cache", "gc", "--to", "150KB"], &config));
    assert!(text.contains("evicted 2 entries"), "{text}");
    assert!(text.contains("running daemon"), "{text}");
    assert_eq!(d.metric("regcache_evictions_total", &[]).await, 2.0);
    assert_eq!(d.metric("regcache_cache_blobs", &[]).await, 1.0);
    let blob_file = |b: &str| {
        d.dir
            .path()
            .join("blobs/sha256")
            .join(b.trim_start_matches("sha256:"))
    };
    assert!(!blob_file(&blobs[0]).exists() && !blob_file(&blobs[1]).exists());
    assert!(blob_file(&blobs[2]).exists());
    assert_eq!(d.admin("/admin/gc").await.status, 405, "gc wants POST");
    assert_eq!(d.admin_post("/admin/gc?to=lots").await.status, 400);

    // Stopped: the command opens the directory itself.
    let dir = d.stop().await;
    let text = stdout(&regcache(&["cache", "stats"], &config));
    assert!(text.contains("1 blobs"), "{text}");
    assert!(text.contains("no daemon running"), "{text}");
    let text = stdout(&regcache(&["cache", "gc", "--to", "0"], &config));
    assert!(text.contains("evicted 1 entries"), "{text}");
    assert!(!dir
        .path()
        .join("blobs/sha256")
        .join(blobs[2].trim_start_matches("sha256:"))
        .exists());
    // Without --to, gc trims to the low watermark: nothing left to do here.
    assert!(stdout(&regcache(&["cache", "gc"], &config)).contains("evicted 0 entries"));

    // The daemon starts on the trimmed directory.
    let d = DaemonBuilder::new()
        .upstream(&up)
        .max_size("1MB")
        .in_dir(dir)
        .start()
        .await;
    assert_eq!(d.metric("regcache_cache_blobs", &[]).await, 0.0);
    fetch(&d, &blobs[0]).await;
    assert_eq!(d.metric("regcache_cache_blobs", &[]).await, 1.0);
}

#[test]
fn stats_of_a_missing_cache_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("regcache.toml");
    let missing = dir.path().join("nothing-here");
    std::fs::write(&config, format!("[cache]\ndir = \"{}\"\n", missing.display())).unwrap();
    let out = regcache(&["cache", "stats"], &config);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no cache at"));
    assert!(!missing.exists(), "a stats run must not create a cache");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gc_unused_for_evicts_by_age_with_and_without_a_running_daemon() {
    let up = Fake::start().await;
    let blobs: Vec<String> = (0..3)
        .map(|i| up.add_blob("library/app", bytes_of(20_000, 710 + i)))
        .collect();
    let d = DaemonBuilder::new().upstream(&up).start().await;
    fetch(&d, &blobs[0]).await;
    fetch(&d, &blobs[1]).await;
    tokio::time::sleep(std::time::Duration::from_millis(3_000)).await;
    fetch(&d, &blobs[2]).await;
    let config = operator_config(&d, "");
    let kept = |dir: &std::path::Path, b: &str| {
        dir.join("blobs/sha256")
            .join(b.trim_start_matches("sha256:"))
            .exists()
    };

    // Running: the daemon evicts the two blobs last pulled three seconds ago.
    let text = stdout(&regcache(&["cache", "gc", "--unused-for", "2s"], &config));
    assert!(text.contains("evicted 2 entries"), "{text}");
    assert!(text.contains("target content unused for 2s"), "{text}");
    assert!(text.contains("running daemon"), "{text}");
    assert!(!kept(d.dir.path(), &blobs[0]) && kept(d.dir.path(), &blobs[2]));
    assert_eq!(d.admin_post("/admin/gc?unused=soon").await.status, 400);
    let out = regcache(&["cache", "gc", "--unused-for", "1d", "--to", "0"], &config);
    assert!(!out.status.success(), "--unused-for goes alone");

    // Stopped: the command evicts on the directory itself.
    let dir = d.stop().await;
    tokio::time::sleep(std::time::Duration::from_millis(2_100)).await;
    let text = stdout(&regcache(&["cache", "gc", "--unused-for", "2s"], &config));
    assert!(
        text.contains("evicted 1 entries") && text.contains("no daemon running"),
        "{text}"
    );
    assert!(!kept(dir.path(), &blobs[2]));
}
