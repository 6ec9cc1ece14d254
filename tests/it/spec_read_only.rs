//! The OCI distribution spec's read-only requirements, checked through regcache. This follows
//! the checks of the spec's conformance suite in its read-only mode (the registry is only read;
//! its content is given to the suite as a namespace, a tag, a manifest digest, a blob digest
//! and a tag list) for the pull and content-discovery workflows (`01_pull_test.go` and
//! `03_discovery_test.go`), asserting what each check asserts and what the spec text behind it
//! requires besides (exact bytes, headers, error bodies, `Link`, sort order):
//!
//! - `pull.rs`: manifests by tag and by digest (GET and HEAD: status, `Content-Type`,
//!   `Docker-Content-Digest`, `Content-Length`), blobs (GET, HEAD, `Range`), unknown manifests,
//!   blobs and repositories (404 with OCI error JSON), and a malformed digest.
//! - `tags.rs`: tag lists sorted, `n`, `last`, the `Link` to the next page, behind an upstream
//!   that follows the spec, one that lists unsorted and ignores `n` and `last`, and one that
//!   pages by default.
//! - `referrers.rs`: the referrers API: an image index, with and without an `artifactType`
//!   filter (`OCI-Filters-Applied`), empty for a digest nothing refers to, and listing the
//!   referrers of a manifest the registry does not have.
//!
//! The content is served by the fake upstream, so every check first runs against content
//! regcache fetches and caches, then runs again with the upstream down: the cached content must
//! still conform. Unknown manifests stay 404 then (the upstream's answer is remembered); what
//! regcache cannot know without its upstream (a blob, or the tag list of a repository it never
//! listed) is an upstream error (502, or 503 `UNAVAILABLE` once the upstream is marked down),
//! never a made-up 404.

mod pull;
mod referrers;
mod tags;

use bytes::Bytes;

use crate::support::daemon::{DaemonBuilder, Reply};
use crate::support::fake::{bytes_of, sha256, Fake, Fault, TagListing};

const REPO: &str = "oci/conformance";
/// A repository the upstream does not have.
const UNKNOWN_REPO: &str = "oci/nowhere";
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// The tag the suite is given (`OCI_TAG_NAME`).
const TAG: &str = "tagtest0";
/// Every tag of `REPO` (the discovery checks' `OCI_TAG_LIST`) in the order the upstream lists
/// them when it does not sort; upper case too, so byte order and case-insensitive order differ.
const TAGS: [&str; 8] = [
    "test2", "TEST1", "multi", "tagtest0", "test0", "test3", "TEST0", "test1",
];

/// Which run of the checks: content fetched through regcache, or the upstream down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Live,
    UpstreamDown,
}

/// What the suite is told about the registry's content, put on the fake upstream.
struct Content {
    /// The tagged manifest (`OCI_MANIFEST_DIGEST`) and its bytes.
    manifest: (String, Bytes),
    /// A manifest pushed by digest only.
    untagged: (String, Bytes),
    /// An image index tagged `multi`, so `Content-Type` is not always the manifest's.
    index: (String, Bytes),
    /// The config blob (`OCI_BLOB_DIGEST`).
    config: String,
    /// A layer large enough for ranges, and its bytes.
    layer: (String, Vec<u8>),
}

impl Content {
    /// The fake upstream with this content, listing tags as `listing` says.
    async fn on_fake(listing: TagListing) -> (Fake, Content) {
        let up = Fake::start().await;
        let layer = bytes_of(100_000, 7);
        let (digest, bytes, layers) = up.add_image(REPO, TAG, std::slice::from_ref(&layer));
        let doc: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        let config = doc["config"]["digest"].as_str().unwrap().to_string();
        let untagged = format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{},"layers":{},"annotations":{{"copy":"2"}}}}"#,
            doc["config"], doc["layers"]
        );
        let untagged_digest = up.add_manifest(REPO, None, OCI_MANIFEST, untagged.clone());
        let index = format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","manifests":[{{"mediaType":"{OCI_MANIFEST}","digest":"{digest}","size":{},"platform":{{"architecture":"amd64","os":"linux"}}}}]}}"#,
            bytes.len()
        );
        let index_digest = up.add_manifest(REPO, Some("multi"), OCI_INDEX, index.clone());
        for t in TAGS.iter().filter(|t| ![TAG, "multi"].contains(t)) {
            up.add_manifest(REPO, Some(t), OCI_MANIFEST, bytes.clone());
        }
        up.set_tags(REPO, &TAGS);
        up.set_tag_listing(listing);
        let content = Content {
            manifest: (digest, bytes),
            untagged: (untagged_digest, untagged.into()),
            index: (index_digest, index.into()),
            config,
            layer: (layers[0].clone(), layer),
        };
        (up, content)
    }
}

/// An error as the spec gives it: this status, `application/json`, and a body
/// `{"errors":[{"code","message"}, …]}` whose first code is one of `codes`.
fn assert_oci_error(r: &Reply, status: u16, codes: &[&str], what: &str) {
    assert_eq!(r.status, status, "{what}");
    assert_eq!(r.header("content-type"), Some("application/json"), "{what}");
    let v: serde_json::Value = serde_json::from_slice(&r.bytes()).expect("an error body is JSON");
    let errors = v["errors"].as_array().expect("an errors list");
    assert!(!errors.is_empty(), "{what}: no error in {v}");
    for e in errors {
        let code = e["code"].as_str().expect("a code");
        assert!(
            code.bytes().all(|b| b.is_ascii_uppercase() || b == b'_'),
            "{what}: {code}"
        );
        assert!(
            e["message"].is_string() || e.get("message").is_none(),
            "{what}: {e}"
        );
    }
    let code = errors[0]["code"].as_str().unwrap_or_default();
    assert!(codes.contains(&code), "{what}: {code}, expected one of {codes:?}");
}

/// What is answered for content regcache cannot know about while its upstream is down: 502 while
/// the upstream answers with errors, 503 `UNAVAILABLE` once it is marked down; never a 404.
fn assert_unavailable(r: &Reply, what: &str) {
    match r.status.as_u16() {
        502 => assert_oci_error(r, 502, &["UNKNOWN"], what),
        _ => assert_oci_error(r, 503, &["UNAVAILABLE"], what),
    }
}

/// `Docker-Content-Digest`, when present, names the body's digest.
fn assert_digest_of_body(r: &Reply, digest: &str, what: &str) {
    assert_eq!(sha256(&r.bytes()), digest, "{what}: the body's digest");
    if let Some(h) = r.header("docker-content-digest") {
        assert_eq!(h, digest, "{what}");
    }
}

#[tokio::test]
async fn pull_checks_hold_live_and_with_the_upstream_down() {
    let (up, content) = Content::on_fake(TagListing::Spec).await;
    // Every tag is revalidated, so with the upstream down it is served stale.
    let d = DaemonBuilder::new().upstream(&up).tag_ttl("0s").start().await;
    pull::run(&d, &content, Phase::Live).await;
    up.set_fault(Some(Fault::Down(503)));
    pull::run(&d, &content, Phase::UpstreamDown).await;
}

/// Tag lists and referrers behind an upstream listing tags as `listing` says.
async fn discovery(listing: TagListing) {
    let (up, content) = Content::on_fake(listing).await;
    let refs = referrers::Referrers::on_fake(&up, &content.manifest);
    let d = DaemonBuilder::new().upstream(&up).start().await;
    for phase in [Phase::Live, Phase::UpstreamDown] {
        if phase == Phase::UpstreamDown {
            up.set_fault(Some(Fault::Down(503)));
        }
        tags::run(&d, phase).await;
        referrers::run(&d, &refs, phase).await;
    }
}

#[tokio::test]
async fn discovery_checks_hold_behind_an_upstream_that_follows_the_spec() {
    discovery(TagListing::Spec).await;
}

#[tokio::test]
async fn discovery_checks_hold_behind_an_upstream_that_ignores_n_and_last() {
    discovery(TagListing::Ignores).await;
}

#[tokio::test]
async fn discovery_checks_hold_behind_an_upstream_that_pages_by_default() {
    discovery(TagListing::PagesOf(2)).await;
}
