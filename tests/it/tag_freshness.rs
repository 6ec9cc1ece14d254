//! Tags: trusted for `tag_ttl`, then revalidated with one upstream HEAD (a GET only when the digest
//! moved), served stale when the upstream fails, and answered 404 when the upstream says the tag
//! is gone.

use crate::support::daemon::{DaemonBuilder, Upstream};
use crate::support::fake::{bytes_of, Fake, Fault};

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

#[tokio::test]
async fn within_ttl_a_tag_costs_nothing_upstream() {
    let up = Fake::start().await;
    let (_, bytes, _) = up.add_image("library/app", "latest", &[bytes_of(10, 1)]);
    let d = DaemonBuilder::new().upstream(&up).tag_ttl("1h").start().await;
    for _ in 0..5 {
        assert_eq!(d.get("/v2/library/app/manifests/latest").await.bytes(), bytes);
        assert_eq!(d.head("/v2/library/app/manifests/latest").await.status, 200);
    }
    assert_eq!(up.count("GET", "/manifests/"), 1);
    assert_eq!(up.count("HEAD", "/manifests/"), 0);
}

#[tokio::test]
async fn after_ttl_one_head_per_pull_and_no_get() {
    let up = Fake::start().await;
    let (digest, bytes, _) = up.add_image("library/app", "latest", &[bytes_of(10, 1)]);
    let d = DaemonBuilder::new().upstream(&up).tag_ttl("0s").start().await;
    for _ in 0..3 {
        let r = d.get("/v2/library/app/manifests/latest").await;
        assert_eq!(r.bytes(), bytes);
        assert_eq!(r.header("docker-content-digest"), Some(digest.as_str()));
    }
    assert_eq!(up.count("GET", "/manifests/"), 1);
    assert_eq!(up.count("HEAD", "/manifests/"), 2);
}

#[tokio::test]
async fn a_moved_tag_is_followed() {
    let up = Fake::start().await;
    let (old, _, _) = up.add_image("library/app", "latest", &[bytes_of(10, 1)]);
    let d = DaemonBuilder::new().upstream(&up).tag_ttl("0s").start().await;
    assert_eq!(
        d.get("/v2/library/app/manifests/latest")
            .await
            .header("docker-content-digest"),
        Some(old.as_str())
    );
    let (new, new_bytes, _) = up.add_image("library/app", "latest", &[bytes_of(10, 2)]);
    up.clear_log();
    let r = d.get("/v2/library/app/manifests/latest").await;
    assert_eq!(r.header("docker-content-digest"), Some(new.as_str()));
    assert_eq!(r.bytes(), new_bytes);
    assert_eq!(up.count("HEAD", "/manifests/latest"), 1);
    assert_eq!(
        up.count("GET", &format!("/manifests/{new}")),
        1,
        "fetched by the new digest"
    );
    assert_eq!(up.count("GET", "/manifests/latest"), 0);
}

#[tokio::test]
async fn head_then_get_by_digest_like_containerd() {
    let up = Fake::start().await;
    let (digest, bytes, _) = up.add_image("library/app", "v1", &[bytes_of(10, 1)]);
    let d = DaemonBuilder::new().upstream(&up).start().await;
    let r = d.head("/v2/library/app/manifests/v1?ns=docker.io").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("docker-content-digest"), Some(digest.as_str()));
    assert_eq!(r.header("content-length"), Some(bytes.len().to_string().as_str()));
    assert_eq!(r.header("content-type"), Some(OCI_MANIFEST));
    assert_eq!(
        up.count("GET", "/manifests/"),
        0,
        "a HEAD never costs an upstream GET"
    );
    assert_eq!(
        d.get(&format!("/v2/library/app/manifests/{digest}?ns=docker.io"))
            .await
            .bytes(),
        bytes
    );
    up.clear_log();
    assert_eq!(
        d.head("/v2/library/app/manifests/v1?ns=docker.io").await.status,
        200
    );
    assert_eq!(d.get("/v2/library/app/manifests/v1").await.bytes(), bytes);
    assert!(up.requests().is_empty(), "{:?}", up.requests());
}

#[tokio::test]
async fn stale_tag_is_served_when_upstream_fails() {
    let up = Fake::start().await;
    let (_, bytes, _) = up.add_image("library/app", "latest", &[bytes_of(10, 1)]);
    let (_, kept, _) = up.add_image("library/app", "kept", &[bytes_of(10, 2)]);
    let d = DaemonBuilder::new().upstream(&up).tag_ttl("0s").start().await;
    assert_eq!(d.get("/v2/library/app/manifests/latest").await.bytes(), bytes);
    assert_eq!(d.get("/v2/library/app/manifests/kept").await.bytes(), kept);
    for status in [500, 503, 401] {
        up.set_fault(Some(Fault::Status(status)));
        let r = d.get("/v2/library/app/manifests/latest").await;
        assert_eq!(r.status, 200, "upstream {status}");
        assert_eq!(r.bytes(), bytes);
    }
    up.set_fault(Some(Fault::Status(404)));
    let r = d.get("/v2/library/app/manifests/latest").await;
    assert_eq!(r.status, 404, "a tag the upstream deleted is gone");
    assert_eq!(r.error_code(), "MANIFEST_UNKNOWN");
    // Rate-limited: the 429 itself and the requests held back after it are served stale.
    up.set_fault(Some(Fault::Status(429)));
    for _ in 0..2 {
        let r = d.get("/v2/library/app/manifests/kept").await;
        assert_eq!(r.status, 200);
        assert_eq!(r.bytes(), kept);
    }
}

#[tokio::test]
async fn cache_survives_a_restart_with_the_upstream_down() {
    let up = Fake::start().await;
    let (digest, bytes, layers) = up.add_image("library/app", "latest", &[bytes_of(30_000, 1)]);
    let d = DaemonBuilder::new().upstream(&up).start().await;
    assert_eq!(d.pull("library/app", "latest", &layers).await, bytes);
    let dir = d.stop().await;
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let d = DaemonBuilder::new()
        .with_upstream(Upstream::new("docker.io", &format!("http://{dead}")))
        .in_dir(dir)
        .start()
        .await;
    let r = d.get("/v2/library/app/manifests/latest").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("docker-content-digest"), Some(digest.as_str()));
    assert_eq!(
        d.get(&format!("/v2/library/app/blobs/{}", layers[0]))
            .await
            .bytes(),
        bytes_of(30_000, 1)
    );
}
