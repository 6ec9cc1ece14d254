//! End-to-end test of regcache with the real containerd client, the way
//! production hosts pull: a private `containerd` daemon (started by the test
//! as a child process, its root, state and socket in a tempdir, the CRI plugin
//! off, `isolated` content sharing) and `ctr images pull --hosts-dir` with a
//! `docker.io/hosts.toml` that names regcache as the only working mirror (the
//! `server` is a dead loopback port, so containerd can never fall back to the
//! internet). regcache runs in-process in front of a local CNCF distribution
//! registry behind the test token server. The test pulls the OCI image, the
//! multi-arch index and the Docker schema2 image, checks the digests and bytes
//! containerd stored against what was pushed, checks every request carried
//! `?ns=docker.io`, and pulls again in a fresh namespace (which downloads every
//! blob again) to check that regcache served it all without one upstream blob
//! GET.
//!
//! Layers are unpacked into the overlayfs snapshotter (the native one where
//! overlayfs is unavailable); the images are removed again, garbage collected
//! and no mount is left behind.
//!
//! Needs `docker-registry`, `skopeo`, `containerd` and `ctr` on PATH, and root
//! (containerd's snapshotters mount). Without them the test prints a loud notice
//! and passes, except when `CI` is set, where it fails.

pub(crate) mod daemon;
mod http_dump;
pub(crate) mod rounds;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use crate::support::e2e::images::{self, TestImage};
use crate::support::e2e::registry::Registry;
use crate::support::e2e::token_server::TokenServer;
use crate::support::e2e::{self, Clock, HttpClient, Skopeo};
use crate::support::tools;
use daemon::{Containerd, CONTAINERD_BIN, CTR_BIN};
use rounds::{docker_io_hosts_toml, pull_round, remove_images, PullSpec};

/// True when every external tool is present (and we are root, which the
/// overlayfs snapshotter needs). Otherwise prints a loud notice and returns
/// false (the test skips), or panics when running under CI.
fn tools_present(test: &str) -> bool {
    let mut missing = e2e::missing_tools();
    for tool in [CONTAINERD_BIN, CTR_BIN] {
        if tools::find(tool).is_none() {
            missing.push(tool.to_string());
        }
    }
    if !running_as_root() {
        missing.push("root (uid 0)".to_string());
    }
    if missing.is_empty() {
        return true;
    }
    tools::missing(
        test,
        &missing,
        "Install the tools with: apt-get install -y docker-registry skopeo containerd\n\
         !! and run the test as root (it starts a private containerd daemon).",
    );
    false
}

/// True when the effective user is root (`Uid:` line of /proc/self/status).
fn running_as_root() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|status| {
        status
            .lines()
            .find_map(|line| line.strip_prefix("Uid:"))
            .and_then(|ids| ids.split_whitespace().nth(1))
            == Some("0")
    })
}

/// The upstream side: token server and registry with the test images pushed.
struct Upstream {
    _token: TokenServer,
    registry: Registry,
    images: Vec<TestImage>,
    _work: tempfile::TempDir,
}

impl Upstream {
    async fn start(clock: &Clock) -> Upstream {
        let token = TokenServer::start().await.expect("token server");
        let registry = Registry::start(&token).await.expect("docker-registry");
        let work = tempfile::Builder::new()
            .prefix("regcache-e2e-ctrd-work-")
            .tempdir()
            .expect("work dir");
        let layouts = work.path().join("layouts");
        let images = tokio::task::spawn_blocking(move || images::build_all(&layouts))
            .await
            .expect("build task")
            .expect("build images");
        let skopeo = Skopeo::new().expect("skopeo setup");
        images::push_all(&skopeo, &images, &registry.host())
            .await
            .unwrap_or_else(|e| panic!("{e}\nregistry log: {}", registry.log_path().display()));

        // The digests the registry answers are the ones built locally.
        let client = HttpClient::new();
        for image in images.iter().filter(|i| i.public) {
            let url = format!("{}/v2/{}/manifests/{}", registry.url(), image.repo, image.tag);
            let head = client
                .pull_request(hyper::Method::HEAD, &url, e2e::CONTAINERD_ACCEPT)
                .await
                .unwrap_or_else(|e| panic!("HEAD {url}: {e}"));
            assert_eq!(head.status, 200, "HEAD {url}");
            assert_eq!(
                head.header("docker-content-digest"),
                Some(image.digest.as_str()),
                "registry digest of {}",
                image.reference()
            );
        }
        clock.mark(&format!(
            "registry {} up, {} images pushed",
            registry.addr(),
            images.len()
        ));
        Upstream {
            _token: token,
            registry,
            images,
            _work: work,
        }
    }

    fn image(&self, repo: &str) -> &TestImage {
        self.images.iter().find(|i| i.repo == repo).expect("image")
    }

    /// Upstream blob GETs once the registry log has been quiet for a moment.
    async fn settled_blob_gets(&self) -> usize {
        self.registry
            .settled_requests(Duration::from_millis(600), Duration::from_secs(10))
            .await
            .iter()
            .filter(|r| r.is_blob_get())
            .count()
    }
}

/// regcache running in-process with the local registry as its only upstream
/// (`docker.io`, default).
struct Mirror {
    running: regcache::app::Running,
    addr: SocketAddr,
    _cache: tempfile::TempDir,
}

impl Mirror {
    async fn start(registry: &Registry) -> Mirror {
        let cache = tempfile::Builder::new()
            .prefix("regcache-e2e-ctrd-cache-")
            .tempdir()
            .expect("cache dir");
        let running = e2e::start_mirror(&registry.url(), cache.path(), "5m").await;
        let addr = running.local_addr();
        Mirror {
            running,
            addr,
            _cache: cache,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn containerd_pulls_through_mirror() {
    if !tools_present("containerd_pulls_through_mirror") {
        return;
    }
    let clock = Clock::new("e2e-containerd");
    let body = async {
        let upstream = Upstream::start(&clock).await;
        let mirror = Mirror::start(&upstream.registry).await;
        let daemon = Containerd::start().await.unwrap_or_else(|e| panic!("{e}"));
        clock.mark(&format!(
            "regcache on {}, containerd on {} ({} snapshotter)",
            mirror.addr,
            daemon.socket.display(),
            daemon.snapshotter
        ));
        let hosts_dir = daemon.dir().join("certs.d");
        std::fs::create_dir_all(hosts_dir.join("docker.io")).expect("hosts dir");
        std::fs::write(
            hosts_dir.join("docker.io").join("hosts.toml"),
            docker_io_hosts_toml(mirror.addr),
        )
        .expect("write hosts.toml");
        cold_then_warm(&upstream, &daemon, &hosts_dir, mirror.addr, &clock).await;

        // Clean up: images, snapshots, and no mount left behind.
        for namespace in ["regcache-cold", "regcache-warm"] {
            remove_images(&daemon, namespace).await;
        }
        let mounts = daemon.mounts();
        assert!(
            mounts.is_empty(),
            "mounts left under the containerd dir: {mounts:?}"
        );
        drop(daemon);
        tokio::time::timeout(Duration::from_secs(30), mirror.running.shutdown())
            .await
            .expect("regcache shut down in time");
        clock.mark("done");
    };
    tokio::time::timeout(Duration::from_secs(120), body)
        .await
        .expect("test timed out");
}

/// Round 1 pulls every image (every platform of the index) on a cold cache; round 2 pulls
/// them again into a fresh namespace, which downloads every blob again, all from the cache.
async fn cold_then_warm(
    upstream: &Upstream,
    daemon: &Containerd,
    hosts_dir: &Path,
    mirror: SocketAddr,
    clock: &Clock,
) {
    let spec = |repo: &str, flags: &'static [&'static str], platform| PullSpec {
        image: upstream.image(repo),
        flags,
        platform,
    };
    let before = upstream.settled_blob_gets().await;

    // Round 1, cold cache: every platform of the index.
    let cold = [
        spec("library/alpine", &[], None),
        spec("library/multi", &["--all-platforms"], None),
        spec("library/dockerv2", &[], None),
    ];
    let round1 = pull_round(daemon, "regcache-cold", hosts_dir, mirror, &cold, clock).await;
    let after_round1 = upstream.settled_blob_gets().await;
    clock.mark(&format!(
        "cold round: {round1:?} to regcache, {} upstream blob GETs",
        after_round1 - before
    ));
    assert!(after_round1 > before, "a cold pull must fetch blobs upstream");

    // Round 2, warm cache, fresh namespace: isolated content sharing makes
    // containerd download every blob again, all from regcache's cache.
    let warm = [
        spec("library/alpine", &[], None),
        spec(
            "library/multi",
            &["--platform", "linux/amd64"],
            Some("linux/amd64"),
        ),
        spec("library/dockerv2", &[], None),
    ];
    let round2 = pull_round(daemon, "regcache-warm", hosts_dir, mirror, &warm, clock).await;
    let after_round2 = upstream.settled_blob_gets().await;
    clock.mark(&format!(
        "warm round: {round2:?} to regcache, {} upstream blob GETs",
        after_round2 - after_round1
    ));
    assert!(round2.blob_gets > 0, "the warm round downloaded nothing");
    assert_eq!(
        after_round2, after_round1,
        "warm pulls fetched blobs upstream again"
    );
}
