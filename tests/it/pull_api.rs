//! The pull API as clients see it: routing conventions, exact bytes and headers, errors as OCI
//! JSON with the right statuses, and that cached content needs no upstream request.

use crate::support::daemon::{self, DaemonBuilder, Upstream};
use crate::support::fake::{self, bytes_of, Fake};

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

#[tokio::test]
async fn base_endpoint_answers_with_api_version() {
    let up = Fake::start().await;
    let d = DaemonBuilder::new().upstream(&up).start().await;
    let r = d.get("/v2/").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("docker-distribution-api-version"), Some("registry/2.0"));
    let r = d.get("/v2").await;
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn manifest_and_blobs_by_every_routing_convention() {
    let up = Fake::start().await;
    let layer = bytes_of(100_000, 1);
    let (digest, bytes, layers) = up.add_image("library/alpine", "latest", std::slice::from_ref(&layer));
    let d = DaemonBuilder::new().upstream(&up).start().await;
    for path in [
        "/v2/library/alpine/manifests/latest",
        "/v2/alpine/manifests/latest",
        "/v2/library/alpine/manifests/latest?ns=docker.io",
        "/v2/docker.io/library/alpine/manifests/latest",
        "/v2/docker.io/alpine/manifests/latest",
    ] {
        let r = d.get(path).await;
        assert_eq!(r.status, 200, "{path}");
        assert_eq!(r.bytes(), bytes, "{path}: exact upstream bytes");
        assert_eq!(r.header("docker-content-digest"), Some(digest.as_str()));
        assert_eq!(r.header("content-type"), Some(OCI_MANIFEST));
        assert_eq!(r.header("content-length"), Some(bytes.len().to_string().as_str()));
    }
    for path in [
        format!("/v2/library/alpine/blobs/{}", layers[0]),
        format!("/v2/alpine/blobs/{}?ns=docker.io", layers[0]),
        format!("/v2/docker.io/library/alpine/blobs/{}", layers[0]),
    ] {
        let r = d.get(&path).await;
        assert_eq!(r.status, 200, "{path}");
        assert_eq!(r.bytes(), layer, "{path}");
        assert_eq!(r.header("docker-content-digest"), Some(layers[0].as_str()));
    }
    assert_eq!(
        up.count("GET", &format!("blobs/{}", layers[0])),
        1,
        "one upstream download for three pulls"
    );
    for l in up.requests() {
        assert!(
            l.path.starts_with("/v2/library/alpine/") || l.path == "/v2/",
            "upstream saw {}",
            l.path
        );
    }
}

#[tokio::test]
async fn second_upstream_by_path_prefix_and_ns_never_mixes_with_default() {
    let hub = Fake::start().await;
    let ghcr = Fake::start().await;
    hub.add_manifest(
        "org/app",
        Some("v1"),
        OCI_MANIFEST,
        r#"{"schemaVersion":2,"from":"hub"}"#,
    );
    ghcr.add_manifest(
        "org/app",
        Some("v1"),
        OCI_MANIFEST,
        r#"{"schemaVersion":2,"from":"ghcr"}"#,
    );
    let d = DaemonBuilder::new()
        .upstream(&hub)
        .with_upstream(Upstream::new("ghcr.io", &ghcr))
        .start()
        .await;
    let from = |r: daemon::Reply| String::from_utf8(r.bytes().to_vec()).unwrap();
    assert!(from(d.get("/v2/org/app/manifests/v1").await).contains("hub"));
    assert!(from(d.get("/v2/ghcr.io/org/app/manifests/v1").await).contains("ghcr"));
    assert!(from(d.get("/v2/org/app/manifests/v1?ns=ghcr.io").await).contains("ghcr"));
    assert!(from(d.get("/v2/org/app/manifests/v1?ns=docker.io").await).contains("hub"));
    let r = d.get("/v2/org/app/manifests/v1?ns=quay.io").await;
    assert_eq!(r.status, 404);
    assert_eq!(r.error_code(), "NAME_UNKNOWN");
}

#[tokio::test]
async fn cached_digests_are_served_without_upstream() {
    let up = Fake::start().await;
    let (digest, bytes, layers) = up.add_image("library/app", "1", &[bytes_of(5000, 2)]);
    let d = DaemonBuilder::new().upstream(&up).start().await;
    assert_eq!(
        d.get(&format!("/v2/library/app/manifests/{digest}"))
            .await
            .bytes(),
        bytes
    );
    assert_eq!(
        d.get(&format!("/v2/library/app/blobs/{}", layers[0]))
            .await
            .status,
        200
    );
    up.clear_log();
    up.set_fault(Some(fake::Fault::Status(500)));
    let r = d.get(&format!("/v2/library/app/manifests/{digest}")).await;
    assert_eq!(r.bytes(), bytes);
    let r = d.head(&format!("/v2/library/app/manifests/{digest}")).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-length"), Some(bytes.len().to_string().as_str()));
    assert_eq!(r.header("docker-content-digest"), Some(digest.as_str()));
    assert_eq!(
        d.get(&format!("/v2/library/app/blobs/{}", layers[0]))
            .await
            .bytes(),
        bytes_of(5000, 2)
    );
    assert_eq!(
        d.head(&format!("/v2/library/app/blobs/{}", layers[0]))
            .await
            .header("content-length"),
        Some("5000")
    );
    assert!(up.requests().is_empty(), "upstream saw {:?}", up.requests());
}

#[tokio::test]
async fn head_never_downloads_a_blob() {
    let up = Fake::start().await;
    let digest = up.add_blob("library/x", bytes_of(70_000, 3));
    let d = DaemonBuilder::new().upstream(&up).start().await;
    let r = d.head(&format!("/v2/library/x/blobs/{digest}")).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-length"), Some("70000"));
    assert_eq!(r.header("accept-ranges"), Some("bytes"));
    assert_eq!(up.count("GET", "/blobs/"), 0);
    assert_eq!(up.count("HEAD", "/blobs/"), 1);
}

#[tokio::test]
async fn bad_input_gets_oci_errors_not_5xx() {
    let up = Fake::start().await;
    let d = DaemonBuilder::new().upstream(&up).start().await;
    let zero = format!("sha256:{}", "0".repeat(64));
    for (path, status, code) in [
        ("/v2/Bad/manifests/latest".to_string(), 400, "NAME_INVALID"),
        (
            "/v2/library/x/manifests/sha256:totallywrong".to_string(),
            400,
            "DIGEST_INVALID",
        ),
        ("/v2/library/x/blobs/md5:abc".to_string(), 400, "DIGEST_INVALID"),
        (
            "/v2/library/x/manifests/-bad".to_string(),
            404,
            "MANIFEST_UNKNOWN",
        ),
        (
            "/v2/library/missing/manifests/latest".to_string(),
            404,
            "MANIFEST_UNKNOWN",
        ),
        (
            format!("/v2/library/missing/manifests/{zero}"),
            404,
            "MANIFEST_UNKNOWN",
        ),
        (format!("/v2/library/missing/blobs/{zero}"), 404, "BLOB_UNKNOWN"),
        ("/v2/_catalog".to_string(), 405, "UNSUPPORTED"),
    ] {
        let r = d.get(&path).await;
        assert_eq!(r.status, status, "{path}");
        assert_eq!(r.error_code(), code, "{path}");
        assert_eq!(r.header("content-type"), Some("application/json"));
    }
    let r = d.request("POST", "/v2/library/x/blobs/uploads/", &[]).await;
    assert_eq!(r.status, 405);
    assert_eq!(r.error_code(), "UNSUPPORTED");
    let r = d.request("PUT", "/v2/library/x/manifests/latest", &[]).await;
    assert_eq!(r.status, 405);
}

#[tokio::test]
async fn upstream_failures_map_to_clear_statuses() {
    let up = Fake::start().await;
    up.add_image("library/x", "1", &[bytes_of(10, 4)]);
    let d = DaemonBuilder::new().upstream(&up).start().await;
    up.set_fault(Some(fake::Fault::Status(429)));
    let r = d.get("/v2/library/x/manifests/1").await;
    assert_eq!(r.status, 429);
    assert_eq!(r.error_code(), "TOOMANYREQUESTS");
    assert!(r.header("retry-after").is_some());
    // The upstream is left alone until its Retry-After (60 s when it gives none) has passed.
    let sent = up.requests().len();
    up.set_fault(Some(fake::Fault::Status(503)));
    let r = d.get("/v2/library/x/manifests/1").await;
    assert_eq!(r.status, 429);
    assert_eq!(up.requests().len(), sent);
    let d = DaemonBuilder::new().upstream(&up).start().await;
    let r = d.get("/v2/library/x/manifests/1").await;
    assert_eq!(r.status, 502);
    // An upstream nobody listens on.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let d2 = DaemonBuilder::new()
        .upstream(&format!("http://{dead}"))
        .start()
        .await;
    let r = d2.get("/v2/library/x/manifests/1").await;
    assert_eq!(r.status, 503);
    assert_eq!(r.error_code(), "UNAVAILABLE");
}

#[tokio::test]
async fn accept_header_is_respected() {
    let up = Fake::start().await;
    up.add_image("library/x", "1", &[bytes_of(10, 5)]);
    let d = DaemonBuilder::new().upstream(&up).start().await;
    let docker_only = [("accept", "application/vnd.docker.distribution.manifest.v2+json")];
    let r = d.request("GET", "/v2/library/x/manifests/1", &docker_only).await;
    assert_eq!(r.status, 404);
    assert_eq!(r.error_code(), "MANIFEST_UNKNOWN");
    let both = [
        ("accept", "application/vnd.docker.distribution.manifest.v2+json"),
        ("accept", OCI_MANIFEST),
    ];
    assert_eq!(
        d.request("GET", "/v2/library/x/manifests/1", &both).await.status,
        200
    );
}

#[tokio::test]
async fn tags_list_paginates_with_rewritten_links() {
    let up = Fake::start().await;
    for t in ["a", "b", "c"] {
        up.add_manifest("org/app", Some(t), OCI_MANIFEST, format!("{{\"t\":\"{t}\"}}"));
    }
    let d = DaemonBuilder::new()
        .upstream(&up)
        .with_upstream(Upstream::new("ghcr.io", &up))
        .start()
        .await;
    let r = d.get("/v2/ghcr.io/org/app/tags/list?n=2").await;
    assert_eq!(r.status, 200);
    let v: serde_json::Value = serde_json::from_slice(&r.bytes()).unwrap();
    assert_eq!(v["tags"], serde_json::json!(["a", "b"]));
    assert_eq!(
        r.header("link"),
        Some("</v2/ghcr.io/org/app/tags/list?n=2&last=b>; rel=\"next\"")
    );
    let r = d.get("/v2/org/app/tags/list?n=2&ns=ghcr.io").await;
    assert_eq!(
        r.header("link"),
        Some("</v2/org/app/tags/list?n=2&last=b&ns=ghcr.io>; rel=\"next\"")
    );
    let r = d.get("/v2/ghcr.io/org/app/tags/list?n=2&last=b").await;
    let v: serde_json::Value = serde_json::from_slice(&r.bytes()).unwrap();
    assert_eq!(v["tags"], serde_json::json!(["c"]));
    assert!(r.header("link").is_none());
    assert_eq!(d.get("/v2/org/app/tags/list?n=x").await.status, 400);
}

#[tokio::test]
async fn corrupt_manifest_is_refused_and_not_kept() {
    let up = Fake::start().await;
    let good = r#"{"schemaVersion":2}"#;
    let digest = up.add_manifest("library/x", None, OCI_MANIFEST, good);
    // Serve other bytes under the good digest.
    up.add_manifest(
        "library/x",
        Some(&digest),
        OCI_MANIFEST,
        r#"{"schemaVersion":2,"evil":1}"#,
    );
    let d = DaemonBuilder::new().upstream(&up).start().await;
    let r = d.get(&format!("/v2/library/x/manifests/{digest}")).await;
    assert_eq!(r.status, 502);
    assert_eq!(r.error_code(), "MANIFEST_INVALID");
    let r = d.get(&format!("/v2/library/x/manifests/{digest}")).await;
    assert_eq!(r.status, 502, "nothing was kept: asked upstream again");
    assert_eq!(up.count("GET", &format!("manifests/{digest}")), 2);
}
