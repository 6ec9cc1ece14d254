//! `[cache] unused_ttl`: content nobody pulled for that long goes whatever the budget (here
//! unlimited), while content pulled again since, and pinned content, stays; what went is
//! fetched again on the next pull.

use std::time::Duration;

use super::{get_blob, on_disk};
use crate::support::daemon::DaemonBuilder;
use crate::support::fake::{bytes_of, Fake};

#[tokio::test]
async fn content_unused_for_the_ttl_is_swept_and_used_or_pinned_content_stays() {
    let up = Fake::start().await;
    let (_, _, old) = up.add_image("library/old", "1", &[bytes_of(20_000, 41)]);
    let (_, _, used) = up.add_image("library/used", "1", &[bytes_of(20_000, 42)]);
    let (_, _, kept) = up.add_image("library/kept", "1", &[bytes_of(20_000, 43)]);
    let d = DaemonBuilder::new().upstream(&up).unused_ttl("3s").start().await;
    for (repo, layers) in [
        ("library/old", &old),
        ("library/used", &used),
        ("library/kept", &kept),
    ] {
        get_blob(&d, repo, &layers[0]).await;
    }
    let kept_key = regcache::cache::Key::blob(&kept[0].parse().unwrap());
    d.cache().pin(kept_key, true).unwrap();

    // Keep one blob in use past the TTL; leave the others alone.
    let start = std::time::Instant::now();
    while start.elapsed() < Duration::from_millis(6_500) {
        get_blob(&d, "library/used", &used[0]).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(!on_disk(&d, &old[0]), "unused past the TTL, still on disk");
    assert!(on_disk(&d, &used[0]), "pulled within the TTL, swept");
    assert!(on_disk(&d, &kept[0]), "pinned, swept");
    assert!(d.metric("regcache_evictions_total", &[]).await >= 1.0);

    up.clear_log();
    get_blob(&d, "library/old", &old[0]).await;
    assert_eq!(up.count("GET", &old[0]), 1, "fetched again after the sweep");
}
