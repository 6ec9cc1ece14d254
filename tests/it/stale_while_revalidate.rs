//! Stale-while-revalidate: with `[cache] revalidate = "background"` a stale tag is served from
//! the cache at once and revalidated behind it, so the next pull sees where the tag moved; and in
//! either mode a pull of a tag whose revalidation is already under way does not wait for it.

use std::time::Duration;

use crate::support::daemon::{eventually, DaemonBuilder};
use crate::support::fake::{bytes_of, Fake};
use crate::support::listeners::BlackHole;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn background_mode_serves_the_cached_tag_and_learns_the_move_behind_it() {
    let up = Fake::start().await;
    let (old, old_bytes, _) = up.add_image("library/app", "latest", &[bytes_of(10, 1)]);
    let d = DaemonBuilder::new()
        .upstream(&up)
        .tag_ttl("0s")
        .revalidate("background")
        .start()
        .await;
    assert_eq!(d.get("/v2/library/app/manifests/latest").await.bytes(), old_bytes);
    let (new, new_bytes, _) = up.add_image("library/app", "latest", &[bytes_of(10, 2)]);
    up.clear_log();

    let r = d.get("/v2/library/app/manifests/latest").await;
    assert_eq!(
        r.header("docker-content-digest"),
        Some(old.as_str()),
        "served at once"
    );
    assert_eq!(r.bytes(), old_bytes);
    eventually("the background HEAD", || {
        up.count("HEAD", "/manifests/latest") == 1
    })
    .await;
    let next = || async { d.get("/v2/library/app/manifests/latest").await };
    let mut r = next().await;
    for _ in 0..100 {
        if r.header("docker-content-digest") == Some(new.as_str()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        r = next().await;
    }
    assert_eq!(
        r.header("docker-content-digest"),
        Some(new.as_str()),
        "the move was learned"
    );
    assert_eq!(r.bytes(), new_bytes);
    assert_eq!(up.count("GET", "/manifests/latest"), 0, "never a GET by tag");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pull_does_not_wait_for_a_revalidation_already_under_way() {
    let up = Fake::start().await;
    let (digest, bytes, layers) = up.add_image("library/app", "latest", &[bytes_of(10, 1)]);
    let d = DaemonBuilder::new().upstream(&up).start().await;
    d.pull("library/app", "latest", &layers).await;
    let dir = d.stop().await;
    let hole = BlackHole::start().await;
    let d = std::sync::Arc::new(
        DaemonBuilder::new()
            .upstream(&hole)
            .in_dir(dir)
            .tag_ttl("0s")
            .revalidate_timeout("30s")
            .start()
            .await,
    );
    let first = {
        let d = d.clone();
        tokio::spawn(async move { d.get("/v2/library/app/manifests/latest").await })
    };
    eventually("the first pull's revalidation to reach the upstream", || {
        hole.accepted() >= 1
    })
    .await;
    let r = d.get("/v2/library/app/manifests/latest").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("docker-content-digest"), Some(digest.as_str()));
    assert_eq!(r.bytes(), bytes);
    assert!(
        !first.is_finished(),
        "the second pull did not wait for the first one's revalidation"
    );
    first.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_an_unanswered_revalidation_the_cached_tag_is_served_without_asking_again() {
    let up = Fake::start().await;
    let (digest, _, layers) = up.add_image("library/app", "latest", &[bytes_of(10, 1)]);
    let d = DaemonBuilder::new().upstream(&up).start().await;
    d.pull("library/app", "latest", &layers).await;
    let dir = d.stop().await;
    let hole = BlackHole::start().await;
    let d = DaemonBuilder::new()
        .upstream(&hole)
        .in_dir(dir)
        .tag_ttl("0s")
        .revalidate_timeout("200ms")
        .start()
        .await;
    let first = d.get("/v2/library/app/manifests/latest").await;
    assert_eq!(first.header("docker-content-digest"), Some(digest.as_str()));
    let asked = hole.accepted();
    assert!(asked >= 1, "the first pull tried the upstream");
    for _ in 0..5 {
        let r = d.get("/v2/library/app/manifests/latest").await;
        assert_eq!(r.header("docker-content-digest"), Some(digest.as_str()));
    }
    assert_eq!(hole.accepted(), asked, "no new attempt while backing off");
}
