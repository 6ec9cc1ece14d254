//! Pushing manifests (spec "Pushing Manifests"): an image manifest by tag and by digest, an
//! index over two pushed images, a manifest naming a blob the repository lacks (refusing it is a
//! MAY, checked when the target says it refuses), and a manifest addressed by its sha512 digest.
//! Every accepted manifest is read back by tag, by digest and through its `Location`, byte for
//! byte with its media type, because digests are computed over exactly those bytes.

use hyper::Method;

use super::super::oci_push::{sha512_digest, MANIFEST_ACCEPT};
use super::fixtures::{self, Manifest};
use super::{expect_error, expect_header, expect_location, expect_status, fail, Report, Run, Target};

/// Manifest push by tag, by digest, of an index; the missing-blob refusal; sha512 references.
pub async fn manifest_push(t: &Target) -> Report {
    let mut run = Run::new(t);
    let repo = t.repo.clone();

    let check = "PUT /manifests/<tag> (image): 201 with Location and Docker-Content-Digest of the bytes";
    let image = fixtures::image("manifests/by-tag", 800);
    run.push_manifest(check, &repo, &image, "spec-image").await;
    run.passed(check);
    run.expect_manifest_readable(&repo, &image, Some("spec-image"))
        .await;

    let check = "PUT /manifests/<digest> (image): 201 with Location and Docker-Content-Digest";
    let image = fixtures::image("manifests/by-digest", 600);
    run.push_manifest(check, &repo, &image, &image.digest).await;
    run.passed(check);
    run.expect_manifest_readable(&repo, &image, None).await;

    let check =
        "PUT /manifests/<tag> (index of two pushed images): 201 with Location and Docker-Content-Digest";
    let amd64 = fixtures::image("manifests/index/amd64", 500);
    let arm64 = fixtures::image("manifests/index/arm64", 520);
    for image in [&amd64, &arm64] {
        run.push_manifest(check, &repo, image, &image.digest).await;
    }
    let index = fixtures::index(&amd64, &arm64);
    run.push_manifest(check, &repo, &index, "spec-index").await;
    run.passed(check);
    run.expect_manifest_readable(&repo, &index, Some("spec-index"))
        .await;

    let check = "PUT of a manifest naming a layer the repository lacks: 400 MANIFEST_BLOB_UNKNOWN";
    if t.refuses_missing_blobs {
        let image = fixtures::image("manifests/missing-layer", 300);
        // The config is there; only the layers are missing.
        run.push_blob(check, &repo, &image.blobs[0]).await;
        let refused = run
            .c
            .put_manifest(&repo, "spec-missing-layer", image.media_type, image.body.clone())
            .await;
        expect_error(check, &refused, 400, "MANIFEST_BLOB_UNKNOWN");
        run.passed(check);
    } else {
        run.skipped(check, "refuses_missing_blobs");
    }

    let check = "PUT /manifests/sha512:<hex>: 201, then GET by that digest serves the bytes";
    if t.supports_sha512 {
        let image = fixtures::image("manifests/sha512", 400);
        for blob in &image.blobs {
            run.push_blob(check, &repo, blob).await;
        }
        let digest = sha512_digest(&image.body);
        let put = run
            .c
            .put_manifest(&repo, &digest, image.media_type, image.body.clone())
            .await;
        expect_status(check, &put, &[201]);
        expect_location(check, &put);
        let got = run.c.manifest(Method::GET, &repo, &digest).await;
        expect_status(check, &got, &[200]);
        if got.body != image.body {
            fail(check, "the manifest bytes pushed", &got);
        }
        run.passed(check);
    } else {
        run.skipped(check, "supports_sha512");
    }
    run.report
}

impl Run<'_> {
    /// Pushes `manifest`'s blobs, then the manifest as `reference`: 201 with a Location that
    /// serves the bytes pushed, and the digest of the bytes in `Docker-Content-Digest`.
    /// Returns the answer.
    pub(super) async fn push_manifest(
        &self,
        check: &str,
        repo: &str,
        manifest: &Manifest,
        reference: &str,
    ) -> super::Answer {
        for blob in &manifest.blobs {
            self.push_blob(check, repo, blob).await;
        }
        let put = self
            .c
            .put_manifest(repo, reference, manifest.media_type, manifest.body.clone())
            .await;
        expect_status(check, &put, &[201]);
        let location = expect_location(check, &put);
        expect_header(check, &put, "docker-content-digest", &manifest.digest);
        let got = self.c.fetch(Method::GET, &location, Some(MANIFEST_ACCEPT)).await;
        expect_status(check, &got, &[200]);
        if got.body != manifest.body {
            fail(check, "the manifest bytes pushed, at the PUT's Location", &got);
        }
        put
    }

    /// A pushed manifest is served unchanged with its media type by digest and by `tag`; `HEAD` by digest answers its digest and length.
    pub(super) async fn expect_manifest_readable(
        &mut self,
        repo: &str,
        manifest: &Manifest,
        tag: Option<&str>,
    ) {
        let check = "a pushed manifest is readable: GET by digest and tag 200 with its bytes and Content-Type, HEAD 200 with digest and length";
        let mut gets = vec![self.c.manifest(Method::GET, repo, &manifest.digest).await];
        if let Some(tag) = tag {
            gets.push(self.c.manifest(Method::GET, repo, tag).await);
        }
        for got in gets {
            expect_status(check, &got, &[200]);
            if got.body != manifest.body {
                fail(check, "the manifest bytes pushed", &got);
            }
            expect_header(check, &got, "content-type", manifest.media_type);
        }
        let head = self.c.manifest(Method::HEAD, repo, &manifest.digest).await;
        expect_status(check, &head, &[200]);
        expect_header(check, &head, "docker-content-digest", &manifest.digest);
        expect_header(check, &head, "content-length", &manifest.body.len().to_string());
        self.passed(check);
    }
}
