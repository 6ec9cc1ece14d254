//! Pushing blobs (spec "Pushing blobs" and "Mounting a blob from another repository"): the
//! monolithic POST-then-PUT upload, the single POST with `digest=`, the chunked upload with its
//! `Range` progress and in-order rule, digest verification, cancellation, sha512 digests, and
//! cross-repository mounts with and without `from`. Every pushed blob is read back, because a
//! 201 that stored the wrong bytes is the failure that matters most.

use bytes::Bytes;
use hyper::Method;

use super::super::oci_push::{sha512_digest, Answer};
use super::fixtures::Blob;
use super::{expect_error, expect_location, expect_status, fail, Report, Run, Target};

/// Answers to a cancelled upload: the spec names no code (distribution answers 204), only that
/// the session is gone afterwards, which is what is checked.
const CANCELLED: &[u16] = &[200, 202, 204];

/// Blob upload: monolithic, single POST, chunked (with status between chunks and an
/// out-of-order chunk), wrong digest, cancellation and sha512.
pub async fn blob_upload(t: &Target) -> Report {
    let mut run = Run::new(t);
    let repo = t.repo.clone();

    let check =
        "POST /blobs/uploads/ then PUT ?digest= (monolithic): 202 with Location, then 201 with Location";
    let blob = Blob::patterned("blobs/monolithic", 1500);
    let start = run.c.start_upload(&repo).await;
    expect_status(check, &start, &[202]);
    let upload = expect_location(check, &start);
    let done = run.c.put_upload(&upload, &blob.digest, blob.data.clone()).await;
    expect_status(check, &done, &[201]);
    expect_location(check, &done);
    run.passed(check);
    run.expect_blob_readable(&repo, &blob, &done).await;

    let check = "POST /blobs/uploads/?digest= with the blob: 201 (one request) or 202 then PUT 201";
    let blob = Blob::patterned("blobs/single-post", 700);
    let posted = run.c.post_blob(&repo, &blob.digest, blob.data.clone()).await;
    expect_status(check, &posted, &[201, 202]);
    let created = if posted.status == 202 {
        let upload = expect_location(check, &posted);
        let done = run.c.put_upload(&upload, &blob.digest, blob.data.clone()).await;
        expect_status(check, &done, &[201]);
        done
    } else {
        posted
    };
    expect_location(check, &created);
    run.passed(check);
    run.expect_blob_readable(&repo, &blob, &created).await;

    chunked(&mut run, &repo).await;
    out_of_order(&mut run, &repo).await;

    let check = "PUT ?digest= with a digest the bytes do not have: 400 DIGEST_INVALID";
    let blob = Blob::patterned("blobs/wrong-digest", 300);
    let other = Blob::patterned("blobs/wrong-digest/other", 300);
    let upload = run.start(check, &repo).await;
    let refused = run.c.put_upload(&upload, &other.digest, blob.data.clone()).await;
    expect_error(check, &refused, 400, "DIGEST_INVALID");
    run.passed(check);

    let check = "DELETE <upload> cancels (2xx), then GET <upload> is 404 BLOB_UPLOAD_UNKNOWN";
    let blob = Blob::patterned("blobs/cancelled", 400);
    let upload = run.start(check, &repo).await;
    let patched = run.c.patch_chunk(&upload, 0, blob.data.clone()).await;
    expect_status(check, &patched, &[202]);
    let upload = expect_location(check, &patched);
    let cancelled = run.c.cancel_upload(&upload).await;
    expect_status(check, &cancelled, CANCELLED);
    let status = run.c.upload_status(&upload).await;
    expect_error(check, &status, 404, "BLOB_UPLOAD_UNKNOWN");
    run.passed(check);

    let check = "sha512: PUT ?digest=sha512:... 201, the blob served under that digest";
    if t.supports_sha512 {
        let blob = Blob::patterned("blobs/sha512", 900);
        let digest = sha512_digest(&blob.data);
        let upload = run.start(check, &repo).await;
        let done = run.c.put_upload(&upload, &digest, blob.data.clone()).await;
        expect_status(check, &done, &[201]);
        expect_location(check, &done);
        expect_digest_header(check, &done, &digest);
        let got = run.c.blob(Method::GET, &repo, &digest).await;
        expect_status(check, &got, &[200]);
        expect_digest_header(check, &got, &digest);
        if got.body != blob.data {
            fail(check, "the pushed bytes", &got);
        }
        run.passed(check);
    } else {
        run.skipped(check, "supports_sha512");
    }
    run.report
}

/// Three chunks by PATCH, each answered 202 with the new `Range`, a status GET after each, then
/// a PUT with no body completing the upload.
async fn chunked(run: &mut Run<'_>, repo: &str) {
    let check = "chunked PATCH in order: 202 with Location and Range 0-<end>; GET status 204 with the same; PUT completes 201";
    let (mut upload, chunk) = run.start_chunked(check, repo).await;
    let blob = Blob::patterned("blobs/chunked", 3 * chunk);
    for start in (0..blob.data.len()).step_by(chunk) {
        let end = start + chunk;
        let patched = run
            .c
            .patch_chunk(&upload, start, blob.data.slice(start..end))
            .await;
        expect_status(check, &patched, &[202]);
        upload = expect_location(check, &patched);
        expect_range(check, &patched, end - 1);
        let status = run.c.upload_status(&upload).await;
        expect_status(check, &status, &[204]);
        upload = expect_location(check, &status);
        expect_range(check, &status, end - 1);
    }
    let done = run.c.put_upload(&upload, &blob.digest, Bytes::new()).await;
    expect_status(check, &done, &[201]);
    expect_location(check, &done);
    run.passed(check);
    run.expect_blob_readable(repo, &blob, &done).await;
}

/// A chunk leaving a gap after the first one MUST be refused with 416.
async fn out_of_order(run: &mut Run<'_>, repo: &str) {
    let check = "PATCH of a chunk not starting where the upload ends: 416";
    if !run.t.checks_chunk_ranges {
        run.skipped(check, "checks_chunk_ranges");
        return;
    }
    let (upload, chunk) = run.start_chunked(check, repo).await;
    let blob = Blob::patterned("blobs/out-of-order", 3 * chunk);
    let first = run.c.patch_chunk(&upload, 0, blob.data.slice(0..chunk)).await;
    expect_status(check, &first, &[202]);
    let upload = expect_location(check, &first);
    let gap = run
        .c
        .patch_chunk(&upload, 2 * chunk, blob.data.slice(2 * chunk..))
        .await;
    expect_status(check, &gap, &[416]);
    run.passed(check);
    // The session is useless now; a registry keeps it until it expires otherwise.
    run.c.cancel_upload(&upload).await;
}

/// Cross-repository mount: from a repository holding the blob (201), of a digest nobody has
/// (fallback to a 202 upload), and without `from` (either, the spec lets the registry choose).
pub async fn blob_mount(t: &Target) -> Report {
    let mut run = Run::new(t);
    let (repo, other) = (t.repo.clone(), t.other_repo.clone());

    let check = "POST ?mount=<digest>&from=<repo holding it>: 201 with Location, the blob then readable";
    let blob = Blob::patterned("mount/source", 1200);
    run.push_blob(check, &other, &blob).await;
    let mounted = run.c.mount(&repo, &blob.digest, Some(&other)).await;
    expect_status(check, &mounted, &[201]);
    expect_location(check, &mounted);
    run.passed(check);
    run.expect_blob_readable(&repo, &blob, &mounted).await;

    let check = "POST ?mount=<unknown digest>&from=<repo>: falls back to an upload, 202 with Location";
    let unknown = Blob::patterned("mount/never-pushed", 64);
    let fallback = run.c.mount(&repo, &unknown.digest, Some(&other)).await;
    expect_status(check, &fallback, &[202]);
    let upload = expect_location(check, &fallback);
    // Not completed: the digest must stay unknown to the registry for the next run.
    let cancelled = run.c.cancel_upload(&upload).await;
    expect_status(check, &cancelled, CANCELLED);
    run.passed(check);

    let check = "POST ?mount=<digest> without from: 201 mounted, or 202 with an upload Location";
    let blob = Blob::patterned("mount/no-from", 500);
    run.push_blob(check, &other, &blob).await;
    let answer = run.c.mount(&repo, &blob.digest, None).await;
    expect_status(check, &answer, &[201, 202]);
    let location = expect_location(check, &answer);
    if answer.status == 201 {
        run.passed(&format!("{check} (answered 201)"));
        run.expect_blob_readable(&repo, &blob, &answer).await;
    } else {
        let cancelled = run.c.cancel_upload(&location).await;
        expect_status(check, &cancelled, CANCELLED);
        run.passed(&format!("{check} (answered 202)"));
    }
    run.report
}

impl Run<'_> {
    /// Starts an upload for `check`: 202 with a Location, which is returned resolved.
    pub(super) async fn start(&self, check: &str, repo: &str) -> String {
        let start = self.c.start_upload(repo).await;
        expect_status(check, &start, &[202]);
        expect_location(check, &start)
    }

    /// Starts an upload for chunks: its Location and a chunk size of 1000 bytes, or the
    /// `OCI-Chunk-Min-Length` the registry asks for when larger (chunks smaller than that, but
    /// the last, may be refused).
    pub(super) async fn start_chunked(&self, check: &str, repo: &str) -> (String, usize) {
        let start = self.c.start_upload(repo).await;
        expect_status(check, &start, &[202]);
        let min = start
            .header("oci-chunk-min-length")
            .and_then(|m| m.trim().parse::<usize>().ok())
            .unwrap_or(0);
        (expect_location(check, &start), min.max(1000))
    }

    /// Pushes `blob` to `repo` monolithically, as setup for `check`.
    pub(super) async fn push_blob(&self, check: &str, repo: &str, blob: &Blob) {
        let upload = self.start(check, repo).await;
        let done = self.c.put_upload(&upload, &blob.digest, blob.data.clone()).await;
        expect_status(check, &done, &[201]);
    }

    /// After a 201 `created`: its Location and `GET /blobs/<digest>` both serve the bytes, and
    /// `HEAD` answers 200 with their length.
    pub(super) async fn expect_blob_readable(&mut self, repo: &str, blob: &Blob, created: &Answer) {
        let check = "a pushed blob is readable: GET its Location and GET /blobs/<digest> 200 with the bytes, HEAD 200 with Content-Length";
        let location = expect_location(check, created);
        for got in [
            self.c.fetch(Method::GET, &location, None).await,
            self.c.blob(Method::GET, repo, &blob.digest).await,
        ] {
            expect_status(check, &got, &[200]);
            if got.body != blob.data {
                fail(check, &format!("the {} bytes pushed", blob.data.len()), &got);
            }
        }
        let head = self.c.blob(Method::HEAD, repo, &blob.digest).await;
        expect_status(check, &head, &[200]);
        let length = blob.data.len().to_string();
        super::expect_header(check, &head, "content-length", &length);
        self.passed(check);
    }
}

/// The answer's `Range` (`0-<end>`, with or without the `bytes=` older drafts wrote) ends at
/// `end`.
fn expect_range(check: &str, answer: &Answer, end: usize) {
    let range = answer.header("range").unwrap_or_default();
    let range = range.strip_prefix("bytes=").unwrap_or(range);
    if range != format!("0-{end}") {
        fail(check, &format!("Range: 0-{end}"), answer);
    }
}

/// `Docker-Content-Digest`, when sent, is `digest`.
fn expect_digest_header(check: &str, answer: &Answer, digest: &str) {
    if let Some(sent) = answer.header("docker-content-digest") {
        if sent != digest {
            fail(check, &format!("Docker-Content-Digest: {digest}"), answer);
        }
    }
}
