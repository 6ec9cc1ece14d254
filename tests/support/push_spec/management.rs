//! Content management (spec "Content Management"): deleting a tag (202 and the tag gone, or the
//! 400/405 refusal a registry without tag deletion MUST give), deleting a manifest by digest
//! (202, then 404 `MANIFEST_UNKNOWN`) and deleting a blob (202, then 404 `BLOB_UNKNOWN`, and
//! 404 for a second delete). The content deleted is this workflow's own, so the other
//! workflows' content survives it.

use hyper::Method;

use super::fixtures;
use super::{expect_error, expect_status, Report, Run, Target};

/// Tag, manifest and blob deletion, or the refusals the spec prescribes when disabled.
pub async fn content_management(t: &Target) -> Report {
    let mut run = Run::new(t);
    let repo = t.repo.clone();
    let image = fixtures::image("management/image", 250);
    for tag in ["spec-delete-tag", "spec-delete-keep"] {
        run.push_manifest("setup: push an image under two tags", &repo, &image, tag)
            .await;
    }

    if t.deletes_tags {
        let check = "DELETE /manifests/<tag>: 202, the tag then 404 MANIFEST_UNKNOWN, the manifest still served by digest";
        let deleted = run.c.delete_manifest(&repo, "spec-delete-tag").await;
        expect_status(check, &deleted, &[202]);
        let gone = run.c.manifest(Method::GET, &repo, "spec-delete-tag").await;
        expect_error(check, &gone, 404, "MANIFEST_UNKNOWN");
        let kept = run.c.manifest(Method::GET, &repo, &image.digest).await;
        expect_status(check, &kept, &[200]);
        run.passed(check);
    } else {
        let check = "DELETE /manifests/<tag> where tag deletion is disabled: 400 or 405, the tag kept";
        let refused = run.c.delete_manifest(&repo, "spec-delete-tag").await;
        expect_status(check, &refused, &[400, 405]);
        let kept = run.c.manifest(Method::GET, &repo, "spec-delete-tag").await;
        expect_status(check, &kept, &[200]);
        run.passed(check);
        run.skipped("DELETE /manifests/<tag>: 202 and the tag gone", "deletes_tags");
    }

    let layer = &image.blobs[1];
    if !t.deletes_content {
        let check = "DELETE /manifests/<digest> and /blobs/<digest> where deletion is disabled: 400 or 405";
        let manifest = run.c.delete_manifest(&repo, &image.digest).await;
        expect_status(check, &manifest, &[400, 405]);
        let blob = run.c.delete_blob(&repo, &layer.digest).await;
        expect_status(check, &blob, &[400, 405]);
        run.passed(check);
        run.skipped(
            "DELETE /manifests/<digest> and /blobs/<digest>: 202, then 404",
            "deletes_content",
        );
        return run.report;
    }

    let check = "DELETE /manifests/<digest>: 202, then GET and HEAD 404 (MANIFEST_UNKNOWN)";
    let deleted = run.c.delete_manifest(&repo, &image.digest).await;
    expect_status(check, &deleted, &[202]);
    let gone = run.c.manifest(Method::GET, &repo, &image.digest).await;
    expect_error(check, &gone, 404, "MANIFEST_UNKNOWN");
    let head = run.c.manifest(Method::HEAD, &repo, &image.digest).await;
    expect_status(check, &head, &[404]);
    run.passed(check);

    let check = "DELETE /blobs/<digest>: 202, then GET 404 BLOB_UNKNOWN, HEAD 404, a second DELETE 404";
    let deleted = run.c.delete_blob(&repo, &layer.digest).await;
    expect_status(check, &deleted, &[202]);
    let gone = run.c.blob(Method::GET, &repo, &layer.digest).await;
    expect_error(check, &gone, 404, "BLOB_UNKNOWN");
    let head = run.c.blob(Method::HEAD, &repo, &layer.digest).await;
    expect_status(check, &head, &[404]);
    let again = run.c.delete_blob(&repo, &layer.digest).await;
    expect_status(check, &again, &[404]);
    run.passed(check);
    run.report
}
