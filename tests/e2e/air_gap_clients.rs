//! End-to-end air gap with the clients production hosts run: an offline site that imported a
//! bundle serves it to Docker Engine (`registry-mirrors`) and to containerd (`ctr images pull
//! --hosts-dir` with a `hosts.toml` mirror) with no upstream at all.
//!
//! The online site (regcache in-process, its upstream the local CNCF distribution registry
//! behind the Docker-Hub-like token server, as `docker.io`) prefetches the images the clients
//! pull, for the host's platform only, and exports them with the real `regcache` binary; then
//! it stops and the registry is killed. `regcache import` fills a fresh directory with no daemon
//! running, and regcache starts there with `offline = true`. dockerd pulls every image through
//! it (its debug log must show the mirror as the one endpoint tried; image ID = the pushed
//! config digest, repo digest = the pushed manifest digest), runs the busybox image with
//! `--network none`, and a pull of something not in the bundle is seen falling back (proof
//! that the log check would catch a fallback). containerd pulls the same images into a fresh
//! namespace: every request went to regcache with `?ns=docker.io`, and it stores exactly the
//! pushed digests, byte for byte. The offline regcache made no upstream request and the token
//! server was asked nothing.
//!
//! Runs in private network, mount and PID namespaces (`support/netns.rs`), as `docker.rs`
//! does. Needs root, `docker-registry`, `skopeo`, `dockerd`, a `docker` client, `containerd`,
//! `ctr`, `busybox-static`, util-linux and iproute2; without them the test prints a loud notice
//! and passes, unless `CI` is set.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use crate::air_gap::{ok, regcache_cli, site_config, start, upstream_requests};
use crate::containerd::daemon::{Containerd, CONTAINERD_BIN, CTR_BIN};
use crate::containerd::rounds::{docker_io_hosts_toml, pull_round, remove_images, PullSpec};
use crate::docker::{mirror_requests, Rig};
use crate::support::e2e::images::OCI_INDEX;
use crate::support::e2e::registry::free_port;
use crate::support::{docker_upstream, dockerd, e2e, netns, runnable_image, tools};
use e2e::Clock;

const TEST: &str = "air_gap_clients::docker_and_containerd_pull_an_imported_bundle_offline";
/// Prefix of the dockerd directory (and so of its cgroup parent): this test's own.
const DOCKERD_DIR: &str = "regcache-e2e-docker-offline-";

fn requirements_present() -> bool {
    let mut missing = e2e::missing_tools();
    missing.extend(netns::missing());
    missing.extend(dockerd::missing());
    for tool in [CONTAINERD_BIN, CTR_BIN] {
        if tools::find(tool).is_none() {
            missing.push(tool.to_string());
        }
    }
    if runnable_image::static_busybox().is_none() {
        missing.push(format!("a static {} (busybox-static)", runnable_image::BUSYBOX));
    }
    let install =
        "apt-get install -y docker-registry skopeo docker.io containerd busybox-static util-linux iproute2";
    netns::requirements_met(TEST, &missing, install)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_and_containerd_pull_an_imported_bundle_offline() {
    let limits = (Duration::from_secs(150), Duration::from_secs(200));
    dockerd::namespaced_test(TEST, DOCKERD_DIR, limits, namespaced_body(), requirements_present).await;
}

/// The platform both clients pick on this host (dockerd: the daemon's; ctr: its default), the
/// only one of a multi-platform image the bundle carries.
fn host_platform() -> String {
    format!("linux/{}", runnable_image::host_arch())
}

async fn namespaced_body() {
    let clock = Clock::new("e2e-air-gap-clients");
    let mut upstream = docker_upstream::Upstream::start(&clock).await;
    let work = tempfile::Builder::new()
        .prefix("regcache-e2e-airgap-clients-")
        .tempdir()
        .expect("work dir");
    let w = work.path();
    let images: Vec<String> = upstream.pulled().iter().map(|i| i.reference()).collect();
    let images: Vec<&str> = images.iter().map(String::as_str).collect();

    // The online site: prefetch and export with the CLI, through the running daemon.
    let (online_cfg, text) = site_config(
        w,
        &w.join("online"),
        free_port().unwrap().port(),
        &upstream.registry.url(),
        false,
    );
    let online = start(&text).await;
    let platform = host_platform();
    let out = ok(
        &regcache_cli(
            &[&["prefetch", "--platform", &platform], &images[..]].concat(),
            &online_cfg,
        )
        .await,
        "prefetch",
    );
    let want = format!("{} images, 0 failed", images.len());
    assert!(out.contains(&want), "{out}");
    clock.mark(&format!("prefetched {platform} of {images:?}"));
    let bundle = w.join("bundle.tar");
    let out = ok(
        &regcache_cli(
            &[&["export", "-o", bundle.to_str().unwrap()], &images[..]].concat(),
            &online_cfg,
        )
        .await,
        "export",
    );
    assert!(out.contains(&format!("{} images,", images.len())), "{out}");
    assert_listed(&out, &upstream, &platform);
    online.shutdown().await;
    upstream.registry.kill();
    let tokens_asked = upstream.token.requests().len();
    clock.mark(&format!(
        "{}; online regcache stopped, registry killed",
        out.lines().next().unwrap_or_default()
    ));

    // The offline site: import with no daemon running, then serve with `offline = true`.
    let (offline_cfg, text) = site_config(
        w,
        &w.join("offline"),
        free_port().unwrap().port(),
        &upstream.registry.url(),
        true,
    );
    let out = ok(
        &regcache_cli(&["import", bundle.to_str().unwrap()], &offline_cfg).await,
        "import",
    );
    assert!(out.contains("; pinned"), "{out}");
    assert_listed(&out, &upstream, &platform);
    let offline = start(&text).await;
    let mirror = offline.local_addr();
    clock.mark(&format!(
        "imported into a fresh directory; offline regcache on {mirror}"
    ));

    let refused = docker_round(&upstream, &offline, &clock).await;
    containerd_round(&upstream, mirror, &clock).await;

    assert_eq!(
        upstream_requests(&offline),
        0.0,
        "the offline site asked no upstream"
    );
    assert_eq!(
        upstream.token.requests().len(),
        tokens_asked,
        "nobody asked for a token"
    );
    let hits = mirror_requests(&offline, "hit");
    assert!(hits > 0.0, "regcache served no cache hit");
    // Only the negative control's pull may have gone unanswered; nothing was fetched, joined or
    // served stale (all of which would mean an upstream was in play).
    let results: Vec<f64> = ["error", "miss", "coalesced", "stale"]
        .iter()
        .map(|r| mirror_requests(&offline, r))
        .collect();
    assert_eq!(results, [refused, 0.0, 0.0, 0.0], "error, miss, coalesced, stale");
    clock.mark(&format!(
        "0 upstream requests, 0 token requests; {hits} cache hits at the offline regcache"
    ));
    tokio::time::timeout(Duration::from_secs(30), offline.shutdown())
        .await
        .expect("regcache stopped in time");
}

/// `out` of `regcache export` or `import` lists every pulled image by its full upstream reference
/// and pushed digest, the multi-platform one with `platform` alone.
fn assert_listed(out: &str, upstream: &docker_upstream::Upstream, platform: &str) {
    for image in upstream.pulled() {
        let name = format!("docker.io/{}", image.reference());
        let line = out
            .lines()
            .find(|l| l.split_whitespace().next() == Some(name.as_str()))
            .unwrap_or_else(|| panic!("{name} not listed:\n{out}"));
        let cols: Vec<&str> = line.split_whitespace().collect();
        // A short digest: `sha256:` and at least 12 hex digits.
        assert!(
            cols[1].len() >= 19 && image.digest.starts_with(cols[1]),
            "{line}: want {}",
            image.digest
        );
        let platforms = (image.media_type == OCI_INDEX).then_some(platform);
        assert_eq!(cols.get(2).copied(), platforms, "{line}");
    }
}

/// dockerd with the offline regcache as its one registry mirror: every image pulled from it
/// alone, the busybox image run, and a pull of an image not in the bundle seen falling back.
/// Returns the requests regcache answered with an error, all the negative control's.
async fn docker_round(
    upstream: &docker_upstream::Upstream,
    offline: &regcache::app::Running,
    clock: &Clock,
) -> f64 {
    let mirror = offline.local_addr();
    let home = tempfile::Builder::new()
        .prefix(DOCKERD_DIR)
        .tempdir()
        .expect("dockerd dir");
    let daemon = dockerd::Dockerd::start(home.path(), mirror)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    clock.mark(&format!("dockerd up ({} storage)", daemon.storage_driver));
    let rig = Rig {
        daemon: &daemon,
        mirror,
        upstream,
        clock,
    };
    let layers = rig.pull_round("offline docker").await;
    assert!(layers > 0, "dockerd downloaded no layer");
    let took = rig.run_busybox().await;
    clock.mark(&format!(
        "docker run --network none: 2 containers in {:.2}s",
        took.as_secs_f64()
    ));
    let errors = || mirror_requests(offline, "error");
    assert_eq!(
        errors(),
        0.0,
        "regcache failed a request of a pull from the bundle"
    );
    rig.negative_control().await;
    clock.mark("negative control: a pull the offline site cannot serve is seen falling back");
    let left = daemon.shutdown();
    assert!(left.is_empty(), "dockerd left mounts behind: {left:?}");
    errors()
}

/// containerd pulls every image into a fresh namespace through a `hosts.toml` naming the offline
/// regcache as the one mirror, with ctr's default platform.
async fn containerd_round(upstream: &docker_upstream::Upstream, mirror: SocketAddr, clock: &Clock) {
    let daemon = Containerd::start().await.unwrap_or_else(|e| panic!("{e}"));
    let hosts_dir = daemon.dir().join("certs.d");
    write_hosts_toml(&hosts_dir, mirror);
    let platform = host_platform();
    let specs: Vec<PullSpec> = upstream
        .pulled()
        .into_iter()
        .map(|image| PullSpec {
            image,
            flags: &[],
            platform: Some(&platform),
        })
        .collect();
    let namespace = "regcache-offline";
    let round = pull_round(&daemon, namespace, &hosts_dir, mirror, &specs, clock).await;
    assert!(round.blob_gets > 0, "containerd downloaded nothing");
    remove_images(&daemon, namespace).await;
    let mounts = daemon.mounts();
    assert!(
        mounts.is_empty(),
        "mounts left under the containerd dir: {mounts:?}"
    );
}

fn write_hosts_toml(hosts_dir: &Path, mirror: SocketAddr) {
    let dir = hosts_dir.join("docker.io");
    std::fs::create_dir_all(&dir).expect("hosts dir");
    std::fs::write(dir.join("hosts.toml"), docker_io_hosts_toml(mirror)).expect("write hosts.toml");
}
