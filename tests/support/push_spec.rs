//! A conformance suite for the OCI Distribution Spec's push, content discovery and content
//! management workflows, runnable against any registry base URL. A [`Target`] names the
//! registry, two repositories on it and what the registry is expected to lack; each workflow
//! function checks every MUST of its group, asserts exact status codes and error codes, and
//! panics with the request and answer on the first one broken. A check the target's flags say
//! it lacks is skipped and listed as skipped in the returned [`Report`], never silently
//! weakened: where the spec allows a registry to refuse (tag deletion, deletion at all), the
//! refusal's own MUST is checked instead. Workflows push their own deterministic content, so
//! each runs alone, in any order, and again against the same registry.
//!
//! Two checks go beyond the spec's MUSTs, to what clients rely on: a manifest PUT answers the
//! digest of the bytes sent in `Docker-Content-Digest`, and every pushed object reads back
//! byte for byte. Error codes (`DIGEST_INVALID`, ...) are checked whenever a 4xx body is JSON;
//! the spec lets a 4xx body be in any format, but a JSON one be only an error document.
//!
//! Use: `push_spec::run_all(&Target { auth_header: Some(..), ..Target::conformant(url, "a/b",
//! "a/c") }).await`, printing the returned report so skipped checks show.

mod blobs;
mod discovery;
mod fixtures;
mod management;
mod manifests;

use std::fmt;

use super::oci_push::{Answer, PushClient};

pub use blobs::{blob_mount, blob_upload};
pub use discovery::{referrers, tag_listing};
pub use management::content_management;
pub use manifests::manifest_push;

/// The registry under test and what it is expected to support. Each `false` flag skips the
/// checks of one optional or commonly missing feature, and the report says so.
#[derive(Clone, Debug)]
pub struct Target {
    /// `http://host:port` (no `/v2`).
    pub base_url: String,
    /// The repository pushed to.
    pub repo: String,
    /// A second repository on the same registry, the source of cross-repository mounts.
    pub other_repo: String,
    /// A whole `Authorization` header value sent with every request.
    pub auth_header: Option<String>,
    /// The referrers API (`GET /v2/<name>/referrers/<digest>`) and the `OCI-Subject` header.
    pub supports_referrers: bool,
    /// sha512 digests: blobs and manifests pushed and served under their sha512 digest.
    pub supports_sha512: bool,
    /// A chunk whose `Content-Range` does not start where the upload ends is refused with 416
    /// (a MUST; some registries ignore `Content-Range`).
    pub checks_chunk_ranges: bool,
    /// A manifest naming a blob the repository lacks is refused (400 `MANIFEST_BLOB_UNKNOWN`).
    /// The spec lets a registry accept it, so this is a MAY checked only when set.
    pub refuses_missing_blobs: bool,
    /// The tag list is in lexical order (a MUST).
    pub sorts_tags: bool,
    /// The tag list honours `n` and `last` (MUSTs).
    pub paginates_tags: bool,
    /// `DELETE /v2/<name>/manifests/<tag>` removes the tag (202); otherwise the spec's refusal,
    /// 400 or 405, is checked.
    pub deletes_tags: bool,
    /// Manifests and blobs can be deleted (202); otherwise the refusal, 400 or 405, is checked.
    pub deletes_content: bool,
}

impl Target {
    /// A registry expected to implement everything the suite checks (OCI Distribution 1.1).
    pub fn conformant(base_url: &str, repo: &str, other_repo: &str) -> Target {
        Target {
            base_url: base_url.to_string(),
            repo: repo.to_string(),
            other_repo: other_repo.to_string(),
            auth_header: None,
            supports_referrers: true,
            supports_sha512: true,
            checks_chunk_ranges: true,
            refuses_missing_blobs: true,
            sorts_tags: true,
            paginates_tags: true,
            deletes_tags: true,
            deletes_content: true,
        }
    }
}

/// What a run checked, and what it skipped and why.
#[derive(Clone, Debug, Default)]
pub struct Report {
    /// Checks that ran and passed, in order.
    pub ran: Vec<String>,
    /// Checks skipped, each with the [`Target`] flag that skipped it.
    pub skipped: Vec<(String, &'static str)>,
}

impl Report {
    /// Records a passed check once: the read-back checks pass after every push.
    fn passed(&mut self, check: &str) {
        if !self.ran.iter().any(|c| c == check) {
            self.ran.push(check.to_string());
        }
    }

    fn merge(&mut self, other: Report) {
        for check in &other.ran {
            self.passed(check);
        }
        self.skipped.extend(other.skipped);
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "OCI push spec: {} checks passed", self.ran.len())?;
        for check in &self.ran {
            writeln!(f, "  ok    {check}")?;
        }
        writeln!(
            f,
            "OCI push spec: {} checks skipped by the target's flags",
            self.skipped.len()
        )?;
        for (check, flag) in &self.skipped {
            writeln!(f, "  SKIP  {check}  (Target.{flag} is false)")?;
        }
        Ok(())
    }
}

/// Runs every workflow against `target`: blob uploads, mounts, manifest pushes, tag listing,
/// referrers and content management. Panics on the first MUST broken.
pub async fn run_all(target: &Target) -> Report {
    let mut report = Report::default();
    report.merge(blob_upload(target).await);
    report.merge(blob_mount(target).await);
    report.merge(manifest_push(target).await);
    report.merge(tag_listing(target).await);
    report.merge(referrers(target).await);
    report.merge(content_management(target).await);
    report
}

/// One workflow's run: the client, the target and the report being filled.
struct Run<'t> {
    t: &'t Target,
    c: PushClient,
    report: Report,
}

impl<'t> Run<'t> {
    fn new(t: &'t Target) -> Self {
        Run {
            t,
            c: PushClient::new(&t.base_url, t.auth_header.clone()),
            report: Report::default(),
        }
    }

    fn passed(&mut self, check: &str) {
        self.report.passed(check);
    }

    fn skipped(&mut self, check: &str, flag: &'static str) {
        self.report.skipped.push((check.to_string(), flag));
    }
}

/// Fails `check`: what was expected, then the whole exchange.
fn fail(check: &str, expected: &str, answer: &Answer) -> ! {
    panic!(
        "OCI push spec check failed: {check}\n  expected: {expected}\n{}",
        answer.describe()
    )
}

/// The answer's status is one of `codes`.
fn expect_status(check: &str, answer: &Answer, codes: &[u16]) {
    if !codes.contains(&answer.status) {
        fail(check, &format!("status in {codes:?}"), answer);
    }
}

/// The answer has status `status` and, when its body is JSON, an OCI error body listing
/// `code` (a 4xx body MAY be in any format, but a JSON one MUST be an error document).
fn expect_error(check: &str, answer: &Answer, status: u16, code: &str) {
    expect_status(check, answer, &[status]);
    if answer.json().is_some() && !answer.error_codes().iter().any(|c| c == code) {
        fail(check, &format!("an error body with code {code}"), answer);
    }
}

/// The answer's `Location`, resolved; fails `check` when it is missing.
fn expect_location(check: &str, answer: &Answer) -> String {
    answer
        .location()
        .unwrap_or_else(|| fail(check, "a Location header", answer))
}

/// The answer's header `name` equals `value`.
fn expect_header(check: &str, answer: &Answer, name: &str, value: &str) {
    if answer.header(name) != Some(value) {
        fail(check, &format!("header {name}: {value}"), answer);
    }
}
