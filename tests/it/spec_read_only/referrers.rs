//! The discovery workflow's referrers checks (`03_discovery_test.go`), with what the spec says
//! of `GET /v2/<name>/referrers/<digest>`: always 200 with an image index (`Content-Type` and
//! `mediaType`), one descriptor per manifest or index whose `subject` is that digest, carrying
//! its `artifactType` and annotations; an empty index when nothing refers to it, whether the
//! registry has that manifest or not; `OCI-Filters-Applied: artifactType` exactly when an
//! `artifactType` filter was applied; 400 for a malformed digest.

use std::collections::BTreeMap;

use bytes::Bytes;
use serde_json::{json, Value};

use super::{assert_oci_error, Phase, OCI_INDEX, OCI_MANIFEST, REPO};
use crate::support::daemon::Daemon;
use crate::support::fake::{sha256, Fake};

const TYPE_A: &str = "application/vnd.example.sbom.v1";
const TYPE_B: &str = "application/vnd.example.signature.v1";
const TYPE_INDEX: &str = "application/vnd.example.bundle.v1";
const ANNOTATION: &str = "org.opencontainers.conformance.test";

/// The referrers put on the fake upstream, as the suite pushes them.
pub(super) struct Referrers {
    subject: String,
    /// Each referrer of `subject`: digest -> (media type, artifact type, annotation).
    of_subject: BTreeMap<String, (&'static str, &'static str, &'static str)>,
    /// A manifest the registry does not have, and the one manifest that refers to it.
    missing_subject: String,
    of_missing: String,
}

/// A descriptor of `bytes` as `media_type`.
fn descriptor(media_type: &str, bytes: &[u8]) -> Value {
    json!({"mediaType": media_type, "digest": sha256(bytes), "size": bytes.len()})
}

/// An artifact manifest about `subject`: typed by its config's media type (`by_config`) or by
/// `artifactType` with the empty config, its blob as the one layer.
fn artifact(subject: &Value, kind: &str, by_config: bool, blob: &[u8], note: Option<&str>) -> Value {
    let empty = descriptor("application/vnd.oci.empty.v1+json", b"{}");
    let mut m = json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "subject": subject});
    if by_config {
        m["config"] = descriptor(kind, blob);
        m["layers"] = json!([empty]);
    } else {
        m["artifactType"] = kind.into();
        m["config"] = empty;
        m["layers"] = json!([descriptor(kind, blob)]);
    }
    if let Some(note) = note {
        m["annotations"] = json!({ ANNOTATION: note });
    }
    m
}

impl Referrers {
    /// Five referrers of `subject` (two of `TYPE_A`, two of `TYPE_B`, an index), and one of a
    /// manifest the registry never had.
    pub(super) fn on_fake(up: &Fake, subject: &(String, Bytes)) -> Referrers {
        let (blob_a, blob_b) = (b"an sbom".as_slice(), b"a signature".as_slice());
        for blob in [blob_a, blob_b, b"{}"] {
            up.add_blob(REPO, blob.to_vec());
        }
        let subject_desc = descriptor(OCI_MANIFEST, &subject.1);
        let mut of_subject = BTreeMap::new();
        let mut add = |media_type: &'static str, doc: Value, kind: &'static str, note: &'static str| {
            let digest = up.add_referrer(REPO, media_type, doc.to_string());
            of_subject.insert(digest, (media_type, kind, note));
            doc
        };
        let mut artifacts = Vec::new();
        for (kind, by_config, blob, note) in [
            (TYPE_A, true, blob_a, "config a"),
            (TYPE_B, true, blob_b, "config b"),
            (TYPE_A, false, blob_a, "layer a"),
            (TYPE_B, false, blob_b, "layer b"),
        ] {
            let doc = artifact(&subject_desc, kind, by_config, blob, Some(note));
            artifacts.push(add(OCI_MANIFEST, doc, kind, note));
        }
        let index = json!({
            "schemaVersion": 2, "mediaType": OCI_INDEX, "artifactType": TYPE_INDEX,
            "manifests": [
                descriptor(OCI_MANIFEST, artifacts[0].to_string().as_bytes()),
                descriptor(OCI_MANIFEST, artifacts[2].to_string().as_bytes()),
            ],
            "subject": subject_desc, "annotations": { ANNOTATION: "index" },
        });
        add(OCI_INDEX, index, TYPE_INDEX, "index");
        let missing = br#"{"schemaVersion":2,"never":"pushed"}"#;
        let of_missing = artifact(&descriptor(OCI_MANIFEST, missing), TYPE_B, false, blob_b, None);
        Referrers {
            subject: subject.0.clone(),
            of_subject,
            missing_subject: sha256(missing),
            of_missing: up.add_referrer(REPO, OCI_MANIFEST, of_missing.to_string()),
        }
    }
}

pub(super) async fn run(d: &Daemon, refs: &Referrers, phase: Phase) {
    nothing_refers(d, phase).await;
    every_referrer(d, refs, phase).await;
    filtered_by_artifact_type(d, refs, phase).await;
    of_a_missing_manifest(d, refs, phase).await;
    referrers_are_pullable(d, refs, phase).await;
    malformed_digest(d, phase).await;
}

/// The referrers index of `digest` with `query`: 200, an image index; its descriptors and its
/// `OCI-Filters-Applied` header.
async fn index(d: &Daemon, digest: &str, query: &str, what: &str) -> (Vec<Value>, Option<String>) {
    let path = format!("/v2/{REPO}/referrers/{digest}{query}");
    let r = d.get(&path).await;
    assert_eq!(r.status, 200, "{what}: {path}");
    assert_eq!(r.header("content-type"), Some(OCI_INDEX), "{what}: {path}");
    let v: Value = serde_json::from_slice(&r.bytes()).expect("a JSON index");
    assert_eq!(
        (&v["schemaVersion"], &v["mediaType"]),
        (&json!(2), &json!(OCI_INDEX)),
        "{what}"
    );
    let manifests = v["manifests"].as_array().expect("a manifests list").clone();
    (manifests, r.header("oci-filters-applied").map(String::from))
}

/// The suite's nonexistent digest: an empty index, not a 404.
async fn nothing_refers(d: &Daemon, phase: Phase) {
    let what = format!("{phase:?} referrers of nothing");
    let (manifests, filters) = index(d, &sha256(b"hello world"), "", &what).await;
    assert_eq!((manifests, filters), (vec![], None), "{what}");
}

/// Each descriptor is one of `want`'s referrers with its media type, artifact type, and its one
/// annotation; no referrer is listed twice.
fn assert_descriptors(got: &[Value], refs: &Referrers, want: &[&String], what: &str) {
    let digests: Vec<&str> = got.iter().map(|m| m["digest"].as_str().unwrap()).collect();
    let mut sorted = digests.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(
        sorted,
        want.iter().map(|d| d.as_str()).collect::<Vec<_>>(),
        "{what}"
    );
    for m in got {
        let (media_type, kind, note) = refs.of_subject[m["digest"].as_str().unwrap()];
        assert_eq!(m["mediaType"], media_type, "{what}: {m}");
        assert_eq!(m["artifactType"], kind, "{what}: {m}");
        assert_eq!(m["annotations"], json!({ ANNOTATION: note }), "{what}: {m}");
        assert!(m["size"].as_u64().is_some_and(|s| s > 0), "{what}: {m}");
    }
}

/// Every referrer of the subject, and no claim of a filter.
async fn every_referrer(d: &Daemon, refs: &Referrers, phase: Phase) {
    let what = format!("{phase:?} every referrer");
    let (manifests, filters) = index(d, &refs.subject, "", &what).await;
    assert_eq!(manifests.len(), 5, "{what}");
    assert_descriptors(
        &manifests,
        refs,
        &refs.of_subject.keys().collect::<Vec<_>>(),
        &what,
    );
    assert_eq!(filters, None, "{what}: nothing was filtered");
}

/// `artifactType=<type>`: only the referrers of that type (none for a type nobody has), and
/// `OCI-Filters-Applied: artifactType`.
async fn filtered_by_artifact_type(d: &Daemon, refs: &Referrers, phase: Phase) {
    for kind in [TYPE_A, TYPE_B, TYPE_INDEX, "application/vnd.example.none"] {
        let what = format!("{phase:?} artifactType={kind}");
        let (manifests, filters) = index(d, &refs.subject, &format!("?artifactType={kind}"), &what).await;
        assert_eq!(filters.as_deref(), Some("artifactType"), "{what}");
        let want: Vec<&String> = refs
            .of_subject
            .iter()
            .filter(|(_, (_, k, _))| *k == kind)
            .map(|(digest, _)| digest)
            .collect();
        assert_descriptors(&manifests, refs, &want, &what);
    }
}

/// The referrers of a manifest the registry does not have are listed all the same.
async fn of_a_missing_manifest(d: &Daemon, refs: &Referrers, phase: Phase) {
    let what = format!("{phase:?} referrers of a missing manifest");
    let (manifests, _) = index(d, &refs.missing_subject, "", &what).await;
    assert_eq!(manifests.len(), 1, "{what}: {manifests:?}");
    assert_eq!(manifests[0]["digest"], refs.of_missing.as_str(), "{what}");
    assert_eq!(manifests[0]["artifactType"], TYPE_B, "{what}");
    assert_eq!(manifests[0].get("annotations"), None, "{what}");
}

/// Each listed referrer is a manifest of the repository, pulled by its digest.
async fn referrers_are_pullable(d: &Daemon, refs: &Referrers, phase: Phase) {
    let all = refs.of_subject.iter().map(|(d, (t, _, _))| (d, *t));
    for (digest, media_type) in all.chain([(&refs.of_missing, OCI_MANIFEST)]) {
        let path = format!("/v2/{REPO}/manifests/{digest}");
        let r = d.request("GET", &path, &[("accept", media_type)]).await;
        assert_eq!(r.status, 200, "{phase:?} {path}");
        assert_eq!(r.header("content-type"), Some(media_type), "{phase:?} {path}");
        assert_eq!(sha256(&r.bytes()), *digest, "{phase:?} {path}");
    }
}

/// A digest of invalid syntax is 400 `DIGEST_INVALID`.
async fn malformed_digest(d: &Daemon, phase: Phase) {
    let path = format!("/v2/{REPO}/referrers/sha256:totallywrong");
    assert_oci_error(
        &d.get(&path).await,
        400,
        &["DIGEST_INVALID"],
        &format!("{phase:?} {path}"),
    );
}
