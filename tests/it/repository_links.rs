//! Cached content is served under a repository only when it was fetched or confirmed for that
//! repository: a digest learned elsewhere (a private layer) reveals nothing under another name,
//! while content two repositories really share costs one upstream `HEAD`, and ordinary pulls
//! cost nothing extra.

use crate::support::daemon::DaemonBuilder;
use crate::support::fake::{bytes_of, Fake};

#[tokio::test]
async fn private_content_is_not_served_under_another_name() {
    let up = Fake::start().await;
    let layer = bytes_of(50_000, 11);
    let (manifest, _, layers) = up.add_image("myorg/private", "v1", &[layer]);
    let d = DaemonBuilder::new().upstream(&up).start().await;
    d.pull("myorg/private", "v1", &layers).await;
    assert_eq!(up.count("HEAD", "/blobs/"), 0, "a pull confirms nothing twice");
    up.clear_log();

    for (path, code) in [
        (format!("/v2/library/alpine/blobs/{}", layers[0]), "BLOB_UNKNOWN"),
        (
            format!("/v2/library/alpine/manifests/{manifest}"),
            "MANIFEST_UNKNOWN",
        ),
        (
            format!("/v2/docker.io/other/app/blobs/{}", layers[0]),
            "BLOB_UNKNOWN",
        ),
    ] {
        let r = d.get(&path).await;
        assert_eq!(r.status, 404, "{path}");
        assert_eq!(r.error_code(), code, "{path}");
        assert_eq!(d.head(&path).await.status, 404, "HEAD {path}");
    }
    assert_eq!(up.count("GET", "/blobs/"), 0, "nothing was downloaded for them");
    assert_eq!(
        up.count("HEAD", "/library/alpine/manifests/"),
        1,
        "the upstream's no is remembered like any manifest 404"
    );
    // The repository it came through still gets it from the cache.
    up.clear_log();
    d.pull("myorg/private", "v1", &layers).await;
    assert_eq!(up.requests().len(), 0);
}

#[tokio::test]
async fn shared_content_is_confirmed_once_then_served_from_cache() {
    let up = Fake::start().await;
    let layer = bytes_of(50_000, 12);
    let (_, _, layers) = up.add_image("library/base", "v1", std::slice::from_ref(&layer));
    up.add_blob("library/derived", layer.clone());
    let d = DaemonBuilder::new().upstream(&up).start().await;
    d.pull("library/base", "v1", &layers).await;
    up.clear_log();

    let path = format!("/v2/library/derived/blobs/{}", layers[0]);
    let r = d.get(&path).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.bytes(), layer);
    assert_eq!(
        up.count("HEAD", "/library/derived/blobs/"),
        1,
        "confirmed upstream"
    );
    assert_eq!(up.count("GET", "/blobs/"), 0, "served from the cache");
    up.clear_log();
    assert_eq!(d.get(&path).await.bytes(), layer);
    assert_eq!(up.requests().len(), 0, "remembered");
}

#[tokio::test]
async fn links_survive_a_restart_and_an_offline_mirror_serves_only_linked_content() {
    let up = Fake::start().await;
    let (manifest, _, layers) = up.add_image("myorg/private", "v1", &[bytes_of(20_000, 13)]);
    let d = DaemonBuilder::new().upstream(&up).start().await;
    d.pull("myorg/private", "v1", &layers).await;
    let dir = d.stop().await;
    up.clear_log();

    let d = DaemonBuilder::new()
        .upstream(&up)
        .offline()
        .in_dir(dir)
        .start()
        .await;
    let linked = d.get(&format!("/v2/myorg/private/manifests/{manifest}")).await;
    assert_eq!(linked.status, 200);
    assert_eq!(
        d.get(&format!("/v2/myorg/private/blobs/{}", layers[0]))
            .await
            .status,
        200
    );
    let elsewhere = d.get(&format!("/v2/library/alpine/blobs/{}", layers[0])).await;
    assert_eq!(elsewhere.status, 404, "offline: nothing to confirm it with");
    assert_eq!(up.requests().len(), 0, "offline means no request");
}
