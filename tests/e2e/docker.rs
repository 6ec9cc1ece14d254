//! End-to-end test of regcache as what it is deployed as most: a Docker Engine `registry-mirrors`
//! entry. A private `dockerd` (Debian's docker.io) pulls Docker Hub names (`library/alpine`, the
//! multi-arch `library/multi`, the Docker schema2 `library/dockerv2` and a runnable
//! `library/busybox`) through regcache, which runs in-process in front of a local CNCF
//! distribution registry behind the Docker-Hub-like token server.
//!
//! dockerd silently falls back to registry-1.docker.io whenever the mirror errs, and the CLI's
//! message does not say which endpoint answered, so every pull is judged from dockerd's debug
//! log: the one endpoint tried must be regcache, with no fallback. The whole test runs inside
//! private network, mount and PID namespaces (`support/netns.rs`): a fallback finds no network
//! at all (no packet, not even a DNS query, leaves), dockerd's fixed paths under `/run` are a
//! private tmpfs, and every process and mount the test made dies with the namespaces.
//!
//! Checked: cold pulls (image ID = the pushed config digest, repo digest = the pushed manifest
//! digest), a negative control (a pull the mirror refuses is seen falling back), `docker run
//! --network none` of the busybox image, warm pulls after `docker rmi` with zero upstream
//! requests, and with every tag stale (regcache restarted with `tag_ttl = "0s"`) exactly one
//! upstream HEAD per pull and no GET.
//!
//! Needs root, `docker-registry`, `skopeo`, `dockerd` and a `docker` client, `busybox-static`,
//! and util-linux/iproute2 (`unshare`, `setpriv`, `mount`, `ip`). Without them the test prints a
//! loud notice and passes, except when `CI` is set, where it fails.

use crate::support::{docker_upstream, dockerd, e2e, netns, runnable_image};

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use docker_upstream::{expected_image_id, Upstream};
use dockerd::Dockerd;
use e2e::images::TestImage;
use e2e::Clock;

/// The test's name, which the namespaced re-run selects.
const TEST: &str = "docker::docker_pulls_through_mirror";
/// Prefix of the dockerd directory (and so of its cgroup parent): this test's own.
const DOCKERD_DIR: &str = "regcache-e2e-docker-mirror-";

/// True when every requirement is met; otherwise a loud notice, and a failure when CI is set.
fn requirements_present() -> bool {
    let mut missing: Vec<String> = e2e::missing_tools().iter().map(|t| t.to_string()).collect();
    missing.extend(netns::missing());
    missing.extend(dockerd::missing());
    if runnable_image::static_busybox().is_none() {
        missing.push(format!("a static {} (busybox-static)", runnable_image::BUSYBOX));
    }
    let install = "apt-get install -y docker-registry skopeo docker.io busybox-static";
    netns::requirements_met(TEST, &missing, install)
}

/// The name dockerd shows for a Docker Hub repository (`library/` dropped).
fn familiar(repo: &str) -> &str {
    repo.strip_prefix("library/").unwrap_or(repo)
}

/// Asserts that dockerd tried exactly one endpoint for the pull logged in `log`: the mirror.
fn assert_mirror_only(log: &str, mirror: SocketAddr, repo: &str) {
    let tried: Vec<&str> = log.lines().filter(|l| l.contains("Trying to pull ")).collect();
    let want = format!("Trying to pull {} from http://{mirror}/ v2", familiar(repo));
    assert!(
        tried.len() == 1 && tried[0].contains(&want),
        "{repo}: dockerd must try only the mirror ({want}); it tried: {tried:#?}"
    );
    assert!(
        !log.contains("registry-1.docker.io") && !log.contains("Attempting next endpoint"),
        "{repo}: dockerd fell back past the mirror:\n{log}"
    );
}

/// What every round of pulls works with.
pub(crate) struct Rig<'a> {
    pub(crate) daemon: &'a Dockerd,
    /// regcache's address, dockerd's one registry mirror.
    pub(crate) mirror: SocketAddr,
    pub(crate) upstream: &'a Upstream,
    pub(crate) clock: &'a Clock,
}

impl Rig<'_> {
    /// `docker pull REPO:TAG` through the mirror, checked in dockerd's log and against what was
    /// pushed; returns the time taken and the number of layers dockerd downloaded.
    async fn pull(&self, image: &TestImage) -> (Duration, usize) {
        let reference = image.reference();
        let offset = self.daemon.log_offset();
        let started = Instant::now();
        self.daemon.docker_ok(&["pull", &reference]).await;
        let took = started.elapsed();
        let log = self.daemon.log_since(offset);
        assert_mirror_only(&log, self.mirror, &image.repo);
        let format = "{{.Id}} {{json .RepoDigests}}";
        let inspect = self
            .daemon
            .docker_ok(&["image", "inspect", "--format", format, &reference])
            .await;
        let (id, digests) = inspect.trim().split_once(' ').expect("inspect output");
        assert_eq!(id, expected_image_id(image), "{reference}: image ID");
        let repo_digest = format!("{}@{}", familiar(&image.repo), image.digest);
        let digests: Vec<String> = serde_json::from_str(digests).expect("RepoDigests json");
        assert!(
            digests.contains(&repo_digest),
            "{reference}: RepoDigests {digests:?}, want {repo_digest}"
        );
        (took, log.matches("pulling blob ").count())
    }

    /// Pulls every image in [`docker_upstream::PULLED`] once, a line per pull on the clock;
    /// returns the number of layers dockerd downloaded.
    pub(crate) async fn pull_round(&self, round: &str) -> usize {
        let mut total = 0;
        for image in self.upstream.pulled() {
            let (took, layers) = self.pull(image).await;
            let reference = image.reference();
            let secs = took.as_secs_f64();
            self.clock.mark(&format!(
                "{round}: docker pull {reference} in {secs:.2}s, {layers} layers downloaded"
            ));
            total += layers;
        }
        total
    }

    /// A pull the mirror cannot serve (the private repository, no credentials configured) must
    /// be seen falling back in the log: proof that [`assert_mirror_only`] would catch a fallback.
    pub(crate) async fn negative_control(&self) {
        let private = self.upstream.image("myorg/private");
        let offset = self.daemon.log_offset();
        let failed = self.daemon.docker(&["pull", &private.reference()]).await;
        let log = self.daemon.log_since(offset);
        assert!(
            failed.is_err(),
            "{}: anonymous pull must fail",
            private.reference()
        );
        let mirror = format!("Trying to pull {} from http://{}/ v2", private.repo, self.mirror);
        let hub = format!(
            "Trying to pull {} from https://registry-1.docker.io v2",
            private.repo
        );
        assert!(
            log.contains(&mirror) && log.contains(&hub),
            "expected the refused pull to go to the mirror, then fall back:\n{log}"
        );
    }

    /// `docker run --network none` of the busybox image; returns the time taken.
    pub(crate) async fn run_busybox(&self) -> Duration {
        let started = Instant::now();
        let image = format!("{}:latest", runnable_image::REPO);
        let run = ["run", "--rm", "--network", "none", &image];
        let output = self.daemon.docker_ok(&run).await;
        assert_eq!(output, runnable_image::GREETING, "output of the default command");
        let script = "echo $((6 * 7)); ls /sys/class/net";
        let output = self
            .daemon
            .docker_ok(&[&run[..], &["sh", "-c", script]].concat())
            .await;
        assert_eq!(
            output, "42\nlo\n",
            "a shell in the container, with only a loopback interface"
        );
        started.elapsed()
    }

    /// Removes every pulled image; dockerd is left with none.
    async fn remove_images(&self) {
        let refs: Vec<String> = self.upstream.pulled().iter().map(|i| i.reference()).collect();
        let mut args = vec!["rmi"];
        args.extend(refs.iter().map(String::as_str));
        self.daemon.docker_ok(&args).await;
        let left = self.daemon.docker_ok(&["images", "--all", "--quiet"]).await;
        assert_eq!(left.trim(), "", "images left after docker rmi");
    }

    /// After `docker rmi`, every image pulled again (every layer downloaded again) comes from
    /// regcache's cache: no upstream request.
    async fn warm_round(&self, regcache: &regcache::app::Running, cold_layers: usize) {
        self.remove_images().await;
        let before = self.upstream.seen().await;
        let (hits, misses) = (
            mirror_requests(regcache, "hit"),
            mirror_requests(regcache, "miss"),
        );
        let layers = self.pull_round("warm").await;
        assert_eq!(
            layers, cold_layers,
            "after docker rmi, every layer is downloaded again"
        );
        let after = self.upstream.seen().await;
        let (completed, refused, tokens) = after.since(&before);
        assert!(
            completed.is_empty() && refused.is_empty() && tokens == 0,
            "warm pulls went upstream: {completed:#?} {refused:#?}, {tokens} token requests"
        );
        assert_eq!(
            mirror_requests(regcache, "miss"),
            misses,
            "regcache missed its cache on a warm pull"
        );
        let served = mirror_requests(regcache, "hit") - hits;
        assert!(served > 0.0, "regcache served no cache hit");
        self.clock.mark(&format!(
            "warm round: 0 upstream requests, {served} cache hits at regcache"
        ));
    }

    /// Every tag is stale: the first round may fetch upstream tokens (a new regcache process),
    /// the second costs exactly one upstream HEAD per pull and nothing else.
    async fn stale_rounds(&self) {
        let before = self.upstream.seen().await;
        let layers = self.pull_round("stale 1").await;
        assert_eq!(layers, 0, "the images are still in dockerd's store");
        let middle = self.upstream.seen().await;
        let (completed, refused, tokens) = middle.since(&before);
        let head_only = completed.iter().all(|r| r.method == "HEAD" && r.is_manifest())
            && refused
                .iter()
                .all(|(m, uri)| m == "HEAD" && uri.contains("/manifests/"));
        assert!(
            head_only,
            "stale tags are revalidated with HEAD only: {completed:#?} {refused:#?}"
        );
        let (heads, refused) = (completed.len(), refused.len());
        self.clock.mark(&format!(
            "stale 1: {heads} upstream HEADs, {refused} refused for want of a token, {tokens} token requests"
        ));
        self.pull_round("stale 2").await;
        let last = self.upstream.seen().await;
        let (completed, refused, tokens) = last.since(&middle);
        let got: Vec<(&str, &str, u16)> = completed
            .iter()
            .map(|r| (r.method.as_str(), r.uri.as_str(), r.status))
            .collect();
        let pulled = self.upstream.pulled();
        let uris: Vec<String> = pulled
            .iter()
            .map(|i| format!("/v2/{}/manifests/{}", i.repo, i.tag))
            .collect();
        let want: Vec<(&str, &str, u16)> = uris.iter().map(|uri| ("HEAD", uri.as_str(), 200)).collect();
        assert_eq!(got, want, "one upstream HEAD per stale pull, nothing else");
        assert!(
            refused.is_empty() && tokens == 0,
            "cached tokens not reused: {refused:?}, {tokens} token requests"
        );
        self.clock.mark(&format!(
            "stale 2: exactly {} upstream requests, one HEAD per pull",
            got.len()
        ));
    }
}

/// Sum of `regcache_requests_total` samples with `result="<result>"`.
pub(crate) fn mirror_requests(regcache: &regcache::app::Running, result: &str) -> f64 {
    let label = format!("result=\"{result}\"");
    let text = regcache.metrics().render();
    text.lines()
        .filter(|l| l.starts_with("regcache_requests_total{") && l.contains(&label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_pulls_through_mirror() {
    let limits = (Duration::from_secs(240), Duration::from_secs(300));
    dockerd::namespaced_test(TEST, DOCKERD_DIR, limits, namespaced_body(), requirements_present).await;
}

/// regcache in-process on `cache`, with the local registry as `docker.io` (default).
async fn start_mirror(upstream: &Upstream, cache: &Path, ttl: &str) -> (regcache::app::Running, SocketAddr) {
    let running = e2e::start_mirror(&upstream.registry.url(), cache, ttl).await;
    let addr = running.local_addr();
    (running, addr)
}

/// `dockerd` on `home`, with `mirror` as its registry mirror; returns it and its start-up time.
async fn start_dockerd(home: &Path, mirror: SocketAddr) -> (Dockerd, Duration) {
    let started = Instant::now();
    let daemon = Dockerd::start(home, mirror)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    (daemon, started.elapsed())
}

/// The test proper, inside the namespaces.
async fn namespaced_body() {
    let clock = Clock::new("e2e-docker");
    let upstream = Upstream::start(&clock).await;
    let cache = tempfile::Builder::new()
        .prefix("regcache-e2e-docker-cache-")
        .tempdir()
        .expect("cache dir");
    let home = tempfile::Builder::new()
        .prefix(DOCKERD_DIR)
        .tempdir()
        .expect("dockerd dir");
    let (regcache, mirror) = start_mirror(&upstream, cache.path(), "5m").await;
    let (daemon, took) = start_dockerd(home.path(), mirror).await;
    let versions = daemon
        .docker_ok(&["version", "--format", dockerd::VERSIONS_FORMAT])
        .await;
    clock.mark(&format!(
        "regcache on {mirror}; dockerd ready in {:.2}s ({} storage; {}: {})",
        took.as_secs_f64(),
        daemon.storage_driver,
        daemon.cli().display(),
        versions.trim()
    ));
    let rig = Rig {
        daemon: &daemon,
        mirror,
        upstream: &upstream,
        clock: &clock,
    };

    // Cold: everything comes from upstream through regcache.
    let before = upstream.seen().await;
    let cold_layers = rig.pull_round("cold").await;
    let after = upstream.seen().await;
    let cold_gets = after.since(&before).0.iter().filter(|r| r.is_blob_get()).count();
    assert!(cold_gets > 0, "a cold pull must fetch blobs upstream");
    clock.mark(&format!("cold round: {cold_gets} upstream blob GETs"));
    rig.negative_control().await;
    clock.mark("negative control: a pull the mirror refuses is seen falling back");
    let took = rig.run_busybox().await;
    clock.mark(&format!(
        "docker run --network none: 2 containers in {:.2}s",
        took.as_secs_f64()
    ));
    rig.warm_round(&regcache, cold_layers).await;

    // Stale: a restarted regcache with tag_ttl 0s revalidates every tag it is asked for.
    let left = daemon.shutdown();
    assert!(left.is_empty(), "dockerd left mounts behind: {left:?}");
    tokio::time::timeout(Duration::from_secs(30), regcache.shutdown())
        .await
        .expect("regcache stopped in time");
    let (regcache, mirror) = start_mirror(&upstream, cache.path(), "0s").await;
    let (daemon, took) = start_dockerd(home.path(), mirror).await;
    let secs = took.as_secs_f64();
    clock.mark(&format!(
        "regcache restarted on {mirror} with tag_ttl 0s; dockerd on the same data root in {secs:.2}s"
    ));
    let rig = Rig {
        daemon: &daemon,
        mirror,
        upstream: &upstream,
        clock: &clock,
    };
    rig.stale_rounds().await;

    let left = daemon.shutdown();
    assert!(left.is_empty(), "dockerd left mounts behind: {left:?}");
    tokio::time::timeout(Duration::from_secs(30), regcache.shutdown())
        .await
        .expect("regcache stopped in time");
    clock.mark("done: dockerd stopped, no mount left");
}
