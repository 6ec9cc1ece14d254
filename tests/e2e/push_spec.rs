//! The OCI push conformance suite (`support::push_spec`) run against the real CNCF distribution
//! registry (Debian's `docker-registry`, 2.8), without authentication and with deletion
//! enabled, so the suite is seen passing a real registry before it is pointed at
//! regcache's hosted repositories. The target's flags record where distribution 2.8 departs
//! from OCI Distribution 1.1; the checks those flags skip are printed. Needs `docker-registry`
//! on PATH: without it the test prints a loud notice and passes, except when `CI` is set. The
//! checks distribution cannot reach run against an in-process reference registry instead.

use crate::support::e2e::registry::{Registry, REGISTRY_BIN};
use crate::support::push_spec::{self, Target};
use crate::support::reference_registry;
use crate::support::tools;

/// What distribution 2.8 does not do, each found by running the suite with the flag set.
fn distribution_2_8(base_url: &str) -> Target {
    Target {
        // No referrers API (404 page not found) and no `OCI-Subject` on a manifest PUT.
        supports_referrers: false,
        // It takes `digest=sha512:...` and serves the blob under it, but answers the sha256
        // digest in `Docker-Content-Digest`, and refuses a manifest PUT by sha512 digest
        // (400 DIGEST_INVALID).
        supports_sha512: false,
        // `Content-Range` on PATCH is ignored: a chunk leaving a gap is appended (202).
        checks_chunk_ranges: false,
        // Tags come in storage order, and `n` and `last` are ignored (n=0 lists everything).
        sorts_tags: false,
        paginates_tags: false,
        // DELETE by tag is refused (400 DIGEST_INVALID), which the spec allows.
        deletes_tags: false,
        ..Target::conformant(base_url, "spec/push", "spec/mount-source")
    }
}

#[tokio::test]
async fn push_spec_against_distribution() {
    if tools::find(REGISTRY_BIN).is_none() {
        tools::missing(
            "push_spec_against_distribution",
            &[REGISTRY_BIN.to_string()],
            "Install it with: apt-get install -y docker-registry",
        );
        return;
    }
    let started = std::time::Instant::now();
    let registry = Registry::start_open().await.expect("docker-registry");
    let target = distribution_2_8(&registry.url());
    let report = push_spec::run_all(&target).await;
    // A second run against the same registry: the suite must not depend on a fresh one, since
    // it will be pointed at long-lived registries too.
    let again = push_spec::run_all(&target).await;
    assert_eq!(again.ran, report.ran, "a rerun ran different checks");
    eprintln!(
        "{report}push spec against distribution: two runs in {:.2}s (registry log {})",
        started.elapsed().as_secs_f64(),
        registry.log_path().display()
    );
}

/// The suite with every flag set against the in-process reference registry, which implements
/// all it checks: the checks distribution cannot reach are run, and pass, somewhere.
#[tokio::test]
async fn push_spec_against_the_reference_registry() {
    let base_url = reference_registry::start().await;
    let target = Target::conformant(&base_url, "spec/push", "spec/mount-source");
    let report = push_spec::run_all(&target).await;
    assert!(report.skipped.is_empty(), "{report}");
    let again = push_spec::run_all(&target).await;
    assert_eq!(again.ran, report.ran, "a rerun ran different checks");
    eprintln!("{report}");
}

/// One workflow of the suite, to run in a task that may panic.
#[derive(Clone, Copy, Debug)]
enum Workflow {
    Blobs,
    Manifests,
    Tags,
    Referrers,
    Management,
}

/// Runs `workflow` against `target`; the panic message when it fails.
async fn failure_of(workflow: Workflow, target: Target) -> Option<String> {
    let task = tokio::spawn(async move {
        match workflow {
            Workflow::Blobs => push_spec::blob_upload(&target).await,
            Workflow::Manifests => push_spec::manifest_push(&target).await,
            Workflow::Tags => push_spec::tag_listing(&target).await,
            Workflow::Referrers => push_spec::referrers(&target).await,
            Workflow::Management => push_spec::content_management(&target).await,
        }
    });
    let panic = task.await.err()?.into_panic();
    Some(
        panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default(),
    )
}

/// Each flag of [`distribution_2_8`] flipped makes the workflow it gates fail against
/// distribution, on the check it names: what the flags skip would really have caught
/// distribution's deviations, so a registry that lacks them cannot pass with the flags set.
#[tokio::test]
async fn each_distribution_flag_hides_a_failing_check() {
    if tools::find(REGISTRY_BIN).is_none() {
        tools::missing(
            "each_distribution_flag_hides_a_failing_check",
            &[REGISTRY_BIN.to_string()],
            "Install it with: apt-get install -y docker-registry",
        );
        return;
    }
    let registry = Registry::start_open().await.expect("docker-registry");
    let base = distribution_2_8(&registry.url());
    type Flip = fn(&mut Target);
    let cases: [(&str, Flip, Workflow, &str); 8] = [
        (
            "checks_chunk_ranges",
            |t| t.checks_chunk_ranges = true,
            Workflow::Blobs,
            "PATCH of a chunk not starting",
        ),
        (
            "supports_sha512",
            |t| t.supports_sha512 = true,
            Workflow::Blobs,
            "sha512: PUT ?digest=sha512",
        ),
        (
            "supports_sha512",
            |t| t.supports_sha512 = true,
            Workflow::Manifests,
            "PUT /manifests/sha512",
        ),
        (
            "sorts_tags",
            |t| t.sorts_tags = true,
            Workflow::Tags,
            "tags in lexical order",
        ),
        (
            "paginates_tags",
            |t| t.paginates_tags = true,
            Workflow::Tags,
            "GET /tags/list?n=2:",
        ),
        (
            "supports_referrers",
            |t| t.supports_referrers = true,
            Workflow::Referrers,
            "OCI-Subject",
        ),
        (
            "deletes_tags",
            |t| t.deletes_tags = true,
            Workflow::Management,
            "DELETE /manifests/<tag>: 202",
        ),
        (
            "deletes_content",
            |t| t.deletes_content = false,
            Workflow::Management,
            "deletion is disabled",
        ),
    ];
    for (flag, flip, workflow, check) in cases {
        let mut target = base.clone();
        flip(&mut target);
        let message = failure_of(workflow, target)
            .await
            .unwrap_or_else(|| panic!("{flag} flipped: {workflow:?} passed against distribution"));
        assert!(
            message.contains(check),
            "{flag} flipped: {workflow:?} failed elsewhere than on {check:?}:\n{message}"
        );
        eprintln!("{flag} flipped: {workflow:?} fails on {check:?}, as expected");
    }
}
