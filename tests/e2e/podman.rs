//! End-to-end test of regcache as a CRI-O/podman `[[registry.mirror]]`: podman (Debian's
//! `podman`, private storage and configuration: `support/e2e/podman.rs`) pulls Docker Hub names
//! whose `[[registry]]` location is the local CNCF distribution registry (behind the
//! Docker-Hub-like token server) and whose one mirror is regcache, in-process, at
//! `127.0.0.1:PORT/docker.io`: the path prefix CRI-O and podman send, which names the upstream.
//!
//! The registry's own address cannot be that prefix, although regcache has the registry
//! configured under it too and answers `/v2/127.0.0.1:PORT/<name>/...`: podman itself refuses
//! a mirror location `127.0.0.1:MIRROR/127.0.0.1:PORT` ("rewriting reference: invalid reference
//! format", as containers/image parses the rewritten reference with the distribution grammar,
//! where no path component holds a `:`), fails the pull without trying the registry, and so
//! never sends such a path. The test checks that refusal, so a podman that starts accepting
//! the form shows up here and the form can join the pulls.
//!
//! podman falls back to the registry's location whenever the mirror fails, and says so only in
//! its debug log, so each pull is judged twice: podman's log must show one source tried (the
//! mirror), and every request the registry logged during the pull must carry regcache's
//! User-Agent. A negative control (a mirror on a dead port) shows both checks catching a
//! fallback that succeeded. The test runs in private network, mount and PID namespaces
//! (`support/netns.rs`), so not even a mistaken `docker.io` lookup can leave the machine.
//!
//! Checked: pulls by tag (an OCI manifest, an OCI index) and by digest (Docker schema2) succeed
//! with podman's recorded digest equal to the pushed manifest's; regcache's metrics count the
//! manifest and blob requests; after `podman rmi` the same pulls reach the registry not once;
//! a `host:port` in the mirror path fails in podman before any request.
//!
//! Needs root, `docker-registry`, `skopeo`, `podman` and util-linux/iproute2. Without them the
//! test prints a loud notice and passes, except when `CI` is set, where it fails.

use std::time::{Duration, Instant};

use crate::registry::Upstream;
use crate::support::e2e::images::TestImage;
use crate::support::e2e::podman::{self, Podman, PODMAN_BIN};
use crate::support::e2e::registry::{free_port, Registry};
use crate::support::{e2e, netns, tools};
use e2e::Clock;

/// The test's name, which the namespaced re-run selects.
const TEST: &str = "podman::podman_pulls_through_the_mirror";
/// The User-Agent regcache sends upstream (`regcache/<version>`).
const REGCACHE_AGENT: &str = "regcache/";

fn requirements_present() -> bool {
    let mut missing = e2e::missing_tools();
    if tools::find(PODMAN_BIN).is_none() {
        missing.push(PODMAN_BIN.to_string());
    }
    missing.extend(netns::missing());
    let install = "apt-get install -y docker-registry skopeo podman util-linux iproute2";
    netns::requirements_met(TEST, &missing, install)
}

/// One pull: a Docker Hub reference by tag or by digest.
struct Pull<'a> {
    image: &'a TestImage,
    by_digest: bool,
}

impl Pull<'_> {
    /// `library/alpine:latest` or `library/dockerv2@sha256:…`.
    fn name(&self) -> String {
        match self.by_digest {
            true => format!("{}@{}", self.image.repo, self.image.digest),
            false => self.image.reference(),
        }
    }

    fn reference(&self) -> String {
        format!("docker.io/{}", self.name())
    }
}

/// Registry requests (method, URI, User-Agent) logged after the first `skip` log lines, once
/// the log has been quiet for a moment; refused requests included.
async fn registry_requests(registry: &Registry, skip: usize) -> Vec<(String, String, String)> {
    registry
        .settled_requests(Duration::from_millis(600), Duration::from_secs(10))
        .await;
    let text = std::fs::read_to_string(registry.log_path()).unwrap_or_default();
    text.lines()
        .skip(skip)
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|v| v["http.request.uri"].is_string())
        .map(|v| {
            let field = |name: &str| v[name].as_str().unwrap_or_default().to_string();
            (
                field("http.request.method"),
                field("http.request.uri"),
                field("http.request.useragent"),
            )
        })
        .collect()
}

fn log_lines(registry: &Registry) -> usize {
    let text = std::fs::read_to_string(registry.log_path()).unwrap_or_default();
    text.lines().count()
}

/// The requests among `requests` that did not come from regcache (by their User-Agent).
fn past_regcache(requests: &[(String, String, String)]) -> Vec<&(String, String, String)> {
    requests
        .iter()
        .filter(|(_, _, agent)| !agent.starts_with(REGCACHE_AGENT))
        .collect()
}

/// `Ok(registry requests)` when podman tried only `mirror` (its log) and every request that
/// reached the registry came from regcache; otherwise what gave the fallback away.
async fn served_by_mirror_only(
    log: &str,
    mirror: &str,
    registry: &Registry,
    skip: usize,
) -> Result<usize, String> {
    let tried = podman::sources_tried(log);
    if tried != [mirror] {
        return Err(format!("podman tried {tried:?}, not only the mirror {mirror}"));
    }
    let requests = registry_requests(registry, skip).await;
    let direct = past_regcache(&requests);
    if !direct.is_empty() {
        return Err(format!(
            "requests reached the registry past regcache: {direct:#?}"
        ));
    }
    Ok(requests.len())
}

/// Sum of `regcache_requests_total` samples of `kind` whose result is one of `results`.
fn mirror_requests(regcache: &regcache::app::Running, kind: &str, results: &[&str]) -> f64 {
    let kind = format!("kind=\"{kind}\"");
    regcache
        .metrics()
        .render()
        .lines()
        .filter(|l| l.starts_with("regcache_requests_total{") && l.contains(&kind))
        .filter(|l| results.iter().any(|r| l.contains(&format!("result=\"{r}\""))))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Pulls each of `pulls` through the mirror, checks where it came from and podman's digest;
/// returns the registry requests the round cost.
async fn pull_round(
    podman: &Podman,
    pulls: &[Pull<'_>],
    mirror: &str,
    registry: &Registry,
    clock: &Clock,
    round: &str,
) -> usize {
    let mut upstream = 0;
    for pull in pulls {
        let skip = log_lines(registry);
        let started = Instant::now();
        let log = podman
            .pull(&pull.reference())
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let took = started.elapsed().as_secs_f64();
        let source = format!("{mirror}/{}", pull.name());
        let requests = served_by_mirror_only(&log, &source, registry, skip)
            .await
            .unwrap_or_else(|e| panic!("{}: {e}\npodman log:\n{log}", pull.reference()));
        let digest = podman
            .digest(&pull.reference())
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(digest, pull.image.digest, "{}: podman's digest", pull.reference());
        clock.mark(&format!(
            "{round}: podman pull {} in {took:.2}s from the mirror, {requests} registry requests",
            pull.reference()
        ));
        upstream += requests;
    }
    upstream
}

/// A mirror on a dead port: podman falls back to the registry and the pull succeeds, and
/// [`served_by_mirror_only`] must say so, on both counts.
async fn negative_control(upstream: &Upstream, pull: &Pull<'_>, clock: &Clock) {
    let registry = &upstream.registry;
    let dead = format!("{}/docker.io", free_port().expect("a free port"));
    let conf = podman::registries_conf("docker.io", &registry.host(), &dead);
    let podman = Podman::new(&conf).expect("podman setup");
    let skip = log_lines(registry);
    let log = podman
        .pull(&pull.reference())
        .await
        .unwrap_or_else(|e| panic!("the fallback pull must succeed: {e}"));
    let tried = podman::sources_tried(&log);
    let direct = format!("{}/{}", registry.host(), pull.name());
    assert_eq!(tried, [format!("{dead}/{}", pull.name()), direct], "{log}");
    let caught = served_by_mirror_only(&log, &format!("{dead}/{}", pull.name()), registry, skip)
        .await
        .expect_err("the fallback must be noticed");
    // The registry log alone must also give it away: podman's own User-Agent.
    let requests = registry_requests(registry, skip).await;
    assert!(
        !past_regcache(&requests).is_empty(),
        "the registry log shows no direct request: {requests:#?}"
    );
    clock.mark(&format!("negative control: a fallback pull is caught ({caught})"));
}

/// The registry named by its own `127.0.0.1:PORT`, mirrored at `127.0.0.1:MIRROR/127.0.0.1:PORT`
/// (the form regcache serves for an upstream configured under that host): podman refuses the
/// mirror location itself, fails the pull, and neither regcache nor the registry is asked.
async fn port_in_mirror_path(
    upstream: &Upstream,
    regcache: &regcache::app::Running,
    pull: &Pull<'_>,
    clock: &Clock,
) {
    let registry = &upstream.registry;
    let mirror = format!("{}/{}", regcache.local_addr(), registry.host());
    let conf = podman::registries_conf(&registry.host(), &registry.host(), &mirror);
    let podman = Podman::new(&conf).expect("podman setup");
    let all = ["miss", "hit", "coalesced", "stale"];
    let asked = mirror_requests(regcache, "manifest", &all) + mirror_requests(regcache, "blob", &all);
    let skip = log_lines(registry);
    let reference = format!("{}/{}", registry.host(), pull.name());
    let refused = podman
        .pull(&reference)
        .await
        .expect_err("podman 4.3 refuses a host:port in a mirror's path; if it pulls now, test the form");
    assert!(
        refused.contains("rewriting reference: invalid reference format"),
        "{refused}"
    );
    let asked = mirror_requests(regcache, "manifest", &all) + mirror_requests(regcache, "blob", &all) - asked;
    assert_eq!(asked, 0.0, "regcache was asked");
    let requests = registry_requests(registry, skip).await;
    assert!(requests.is_empty(), "the registry was asked: {requests:#?}");
    clock.mark(&format!(
        "mirror location {mirror}: podman refuses it before any request"
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn podman_pulls_through_the_mirror() {
    netns::namespaced_test(TEST, namespaced_body(), requirements_present).await;
}

/// The test proper, inside the namespaces.
async fn namespaced_body() {
    let clock = Clock::new("e2e-podman");
    let upstream = Upstream::start(&clock).await;
    let registry = &upstream.registry;
    let cache = tempfile::Builder::new()
        .prefix("regcache-e2e-podman-cache-")
        .tempdir()
        .expect("cache dir");
    let own_host = registry.host();
    let regcache = e2e::start_mirror_also_as(&registry.url(), cache.path(), "5m", &[own_host.as_str()]).await;
    let mirror = format!("{}/docker.io", regcache.local_addr());
    let conf = podman::registries_conf("docker.io", &registry.host(), &mirror);
    let podman = Podman::new(&conf).expect("podman setup");
    let version = podman.run(&["--version"]).await.unwrap_or_else(|e| panic!("{e}"));
    clock.mark(&format!("regcache mirror {mirror}; {}", version.trim()));

    let image = |repo: &str| {
        upstream
            .public()
            .find(|i| i.repo == repo)
            .unwrap_or_else(|| panic!("{repo} is a test image"))
    };
    let pulls = [
        Pull {
            image: image("library/alpine"),
            by_digest: false,
        },
        Pull {
            image: image("library/multi"),
            by_digest: false,
        },
        Pull {
            image: image("library/dockerv2"),
            by_digest: true,
        },
    ];
    let (manifests, blobs) = (
        mirror_requests(&regcache, "manifest", &["miss", "hit", "coalesced", "stale"]),
        mirror_requests(&regcache, "blob", &["miss", "hit", "coalesced", "stale"]),
    );
    let cold = pull_round(&podman, &pulls, &mirror, registry, &clock, "cold").await;
    assert!(cold > 0, "a cold pull must reach the registry (through regcache)");
    let manifests =
        mirror_requests(&regcache, "manifest", &["miss", "hit", "coalesced", "stale"]) - manifests;
    let blobs = mirror_requests(&regcache, "blob", &["miss", "hit", "coalesced", "stale"]) - blobs;
    assert!(
        manifests >= pulls.len() as f64 && blobs >= 2.0 * pulls.len() as f64,
        "regcache counted {manifests} manifest and {blobs} blob requests"
    );
    clock.mark(&format!(
        "cold round: regcache served {manifests} manifest and {blobs} blob requests"
    ));

    podman.remove_all().await.unwrap_or_else(|e| panic!("{e}"));
    let hits = mirror_requests(&regcache, "blob", &["hit"]);
    let warm = pull_round(&podman, &pulls, &mirror, registry, &clock, "warm").await;
    assert_eq!(
        warm, 0,
        "after podman rmi, every pull is served from regcache's cache"
    );
    let hits = mirror_requests(&regcache, "blob", &["hit"]) - hits;
    assert!(hits > 0.0, "the warm round's blobs are cache hits");
    clock.mark(&format!(
        "warm round: 0 registry requests, {hits} blob cache hits"
    ));

    negative_control(&upstream, &pulls[0], &clock).await;
    port_in_mirror_path(&upstream, &regcache, &pulls[0], &clock).await;
    tokio::time::timeout(Duration::from_secs(30), regcache.shutdown())
        .await
        .expect("regcache stopped in time");
}
