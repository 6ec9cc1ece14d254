//! The pull workflow's checks (`01_pull_test.go`), with what the spec says of each answer:
//! content that exists is 200 with its exact bytes and digest, HEAD answers the headers of GET
//! without a body, `Range` gives 206 and the slice, and what does not exist is 404 with the
//! spec's error code in OCI error JSON.

use super::{
    assert_digest_of_body, assert_oci_error, assert_unavailable, Content, Phase, OCI_INDEX, OCI_MANIFEST,
    REPO, TAG, UNKNOWN_REPO,
};
use crate::support::daemon::Daemon;
use crate::support::fake::sha256;

pub(super) async fn run(d: &Daemon, c: &Content, phase: Phase) {
    unknown_blobs(d, phase).await;
    blobs(d, c, phase).await;
    blob_ranges(d, c, phase).await;
    unknown_manifests(d, phase).await;
    manifests(d, c, phase).await;
    unknown_repository(d, c, phase).await;
    malformed_digests(d, phase).await;
}

/// The suite's digest of content nobody has.
fn dummy_digest() -> String {
    sha256(b"hello world")
}

/// A blob the registry does not have: 404 for HEAD (no body) and GET (`BLOB_UNKNOWN`).
async fn unknown_blobs(d: &Daemon, phase: Phase) {
    let path = format!("/v2/{REPO}/blobs/{}", dummy_digest());
    let what = format!("{phase:?} {path}");
    let head = d.head(&path).await;
    let get = d.get(&path).await;
    match phase {
        Phase::Live => {
            assert_eq!(head.status, 404, "HEAD {what}");
            assert!(head.bytes().is_empty(), "HEAD {what}");
            assert_oci_error(&get, 404, &["BLOB_UNKNOWN"], &what);
        }
        Phase::UpstreamDown => {
            assert!(head.status.is_server_error(), "HEAD {what}: {}", head.status);
            assert_unavailable(&get, &what);
        }
    }
}

/// Blobs that exist (the config, `OCI_BLOB_DIGEST`, and a layer): HEAD is 200 with the digest
/// and the length and no body; GET is 200 with the exact bytes, the same digest and length.
async fn blobs(d: &Daemon, c: &Content, phase: Phase) {
    for digest in [&c.config, &c.layer.0] {
        let path = format!("/v2/{REPO}/blobs/{digest}");
        let what = format!("{phase:?} {path}");
        let head = d.head(&path).await;
        assert_eq!(head.status, 200, "HEAD {what}");
        assert_eq!(
            head.header("docker-content-digest"),
            Some(digest.as_str()),
            "HEAD {what}"
        );
        assert!(head.bytes().is_empty(), "HEAD {what}");
        let get = d.get(&path).await;
        assert_eq!(get.status, 200, "GET {what}");
        assert_digest_of_body(&get, digest, &what);
        let length = get.bytes().len().to_string();
        assert_eq!(get.header("content-length"), Some(length.as_str()), "GET {what}");
        assert_eq!(
            head.header("content-length"),
            Some(length.as_str()),
            "HEAD {what}"
        );
    }
    let layer = d.get(&format!("/v2/{REPO}/blobs/{}", c.layer.0)).await;
    assert_eq!(layer.bytes(), c.layer.1, "{phase:?}: the layer's exact bytes");
}

/// A blob part: 206 with exactly the asked bytes, their `Content-Range` and `Content-Length`;
/// a range that starts past the end is 416 with `Content-Range: bytes */<size>`.
async fn blob_ranges(d: &Daemon, c: &Content, phase: Phase) {
    let (digest, bytes) = &c.layer;
    let path = format!("/v2/{REPO}/blobs/{digest}");
    let size = bytes.len();
    for (range, start, end) in [
        ("bytes=0-99", 0, 100),
        ("bytes=1000-", 1000, size),
        ("bytes=-500", size - 500, size),
        ("bytes=99990-200000", 99_990, size),
    ] {
        let what = format!("{phase:?} {path} {range}");
        let r = d.request("GET", &path, &[("range", range)]).await;
        assert_eq!(r.status, 206, "{what}");
        let content_range = format!("bytes {start}-{}/{size}", end - 1);
        assert_eq!(r.header("content-range"), Some(content_range.as_str()), "{what}");
        let length = (end - start).to_string();
        assert_eq!(r.header("content-length"), Some(length.as_str()), "{what}");
        assert_eq!(r.bytes(), bytes[start..end], "{what}");
    }
    let r = d.request("GET", &path, &[("range", "bytes=200000-")]).await;
    assert_eq!(r.status, 416, "{phase:?} a range past the end");
    let unsatisfied = format!("bytes */{size}");
    assert_eq!(r.header("content-range"), Some(unsatisfied.as_str()));
}

/// Manifests the registry does not have: 404 for HEAD and GET (`MANIFEST_UNKNOWN`), by tag, by
/// digest, and for the suite's own unknown reference `.INVALID_MANIFEST_NAME`, which no manifest
/// can have. The upstream's 404s are remembered, so they hold while it is down.
async fn unknown_manifests(d: &Daemon, phase: Phase) {
    for reference in [".INVALID_MANIFEST_NAME", "no-such-tag", &dummy_digest()] {
        let path = format!("/v2/{REPO}/manifests/{reference}");
        let what = format!("{phase:?} {path}");
        let accept = [("accept", OCI_MANIFEST)];
        let head = d.request("HEAD", &path, &accept).await;
        assert_eq!(head.status, 404, "HEAD {what}");
        assert!(head.bytes().is_empty(), "HEAD {what}");
        let get = d.request("GET", &path, &accept).await;
        assert_oci_error(&get, 404, &["MANIFEST_UNKNOWN"], &what);
    }
}

/// Manifests by tag (`OCI_TAG_NAME`) and by digest (`OCI_MANIFEST_DIGEST`, and one pushed by
/// digest only), and an image index, asked with the media type in `Accept`: HEAD and GET are 200
/// with that `Content-Type`, the manifest's `Docker-Content-Digest` and `Content-Length`; GET
/// has the exact bytes, HEAD no body.
async fn manifests(d: &Daemon, c: &Content, phase: Phase) {
    let cases = [
        (TAG.to_string(), &c.manifest, OCI_MANIFEST),
        (c.manifest.0.clone(), &c.manifest, OCI_MANIFEST),
        (c.untagged.0.clone(), &c.untagged, OCI_MANIFEST),
        ("multi".to_string(), &c.index, OCI_INDEX),
        (c.index.0.clone(), &c.index, OCI_INDEX),
    ];
    for (reference, (digest, bytes), media_type) in cases {
        let path = format!("/v2/{REPO}/manifests/{reference}");
        let accept = [("accept", media_type)];
        let head = d.request("HEAD", &path, &accept).await;
        let get = d.request("GET", &path, &accept).await;
        for (r, method) in [(&head, "HEAD"), (&get, "GET")] {
            let what = format!("{phase:?} {method} {path}");
            assert_eq!(r.status, 200, "{what}");
            assert_eq!(r.header("content-type"), Some(media_type), "{what}");
            assert_eq!(r.header("docker-content-digest"), Some(digest.as_str()), "{what}");
            let length = bytes.len().to_string();
            assert_eq!(r.header("content-length"), Some(length.as_str()), "{what}");
        }
        assert!(head.bytes().is_empty(), "{phase:?} HEAD {path}");
        assert_eq!(get.bytes(), bytes, "{phase:?} GET {path}");
        assert_digest_of_body(&get, digest, &path);
    }
}

/// A repository the registry does not have: its manifests are 404 with `NAME_UNKNOWN` or
/// `MANIFEST_UNKNOWN` (the spec allows either), its blobs 404 with `NAME_UNKNOWN` or
/// `BLOB_UNKNOWN`, also for a digest another repository has.
async fn unknown_repository(d: &Daemon, c: &Content, phase: Phase) {
    for reference in [TAG, &c.manifest.0] {
        let path = format!("/v2/{UNKNOWN_REPO}/manifests/{reference}");
        let what = format!("{phase:?} {path}");
        let head = d.head(&path).await;
        assert_eq!(head.status, 404, "HEAD {what}");
        let get = d.get(&path).await;
        assert_oci_error(&get, 404, &["NAME_UNKNOWN", "MANIFEST_UNKNOWN"], &what);
    }
    let path = format!("/v2/{UNKNOWN_REPO}/blobs/{}", dummy_digest());
    let what = format!("{phase:?} {path}");
    match phase {
        Phase::Live => assert_oci_error(&d.get(&path).await, 404, &["NAME_UNKNOWN", "BLOB_UNKNOWN"], &what),
        Phase::UpstreamDown => assert_unavailable(&d.get(&path).await, &what),
    }
}

/// The suite's error-code check: a malformed digest is a client error, 400 with a spec code
/// (`DIGEST_INVALID`; the suite also allows a 404), never an upstream request.
async fn malformed_digests(d: &Daemon, phase: Phase) {
    for path in [
        format!("/v2/{REPO}/manifests/sha256:totallywrong"),
        format!("/v2/{REPO}/blobs/sha256:totallywrong"),
    ] {
        let r = d.get(&path).await;
        assert_oci_error(&r, 400, &["DIGEST_INVALID"], &format!("{phase:?} {path}"));
    }
}
