//! End-to-end air gap: an online site prefetches, pins and exports; an offline site imports and
//! serves. Real parts: the CNCF distribution registry behind the Docker-Hub-like token server as
//! the upstream, the `regcache` binary for the operator commands, skopeo and podman as clients.
//!
//! Online site (regcache in-process, its upstream the registry as `docker.io`):
//! `regcache prefetch --platform linux/arm64 --pin multi:latest` fetches one platform of a
//! multi-arch image; an unpinned image pulled with skopeo beside it is evicted by `regcache cache
//! gc --to 0` while the pinned one stays whole; `regcache export` writes the bundle, which skopeo
//! reads as an `oci-archive:` by its full upstream reference.
//!
//! Offline site: a copy of the bundle with one flipped byte is refused by `regcache import`,
//! naming the bad blob and adding nothing; the good bundle imports into a fresh directory; the
//! registry is stopped; regcache starts there with `offline = true` and serves the image by tag
//! and by digest to skopeo and podman (whose only other source, the registry, is dead), byte for
//! byte what was pushed, with zero upstream requests.
//!
//! Runs in private network, mount and PID namespaces (`support/netns.rs`), since podman pulls
//! `docker.io/...` names. Needs root, `docker-registry`, `skopeo`, `podman`, util-linux and
//! iproute2; without them the test prints a loud notice and passes, unless `CI` is set.

use std::path::{Path, PathBuf};
use std::process::Output;

use crate::registry::Upstream;
use crate::support::e2e::images::{sha256_digest, TestImage};
use crate::support::e2e::podman::{self, Podman, PODMAN_BIN};
use crate::support::e2e::registry::free_port;
use crate::support::{e2e, netns, tools};
use e2e::Clock;

const TEST: &str = "air_gap::an_offline_site_serves_an_imported_bundle";

fn requirements_present() -> bool {
    let mut missing = e2e::missing_tools();
    if tools::find(PODMAN_BIN).is_none() {
        missing.push(PODMAN_BIN.to_string());
    }
    missing.extend(netns::missing());
    let install = "apt-get install -y docker-registry skopeo podman util-linux iproute2";
    netns::requirements_met(TEST, &missing, install)
}

/// A site's config: its cache, a fixed admin port (the CLI finds the daemon there), and the
/// registry as `docker.io`.
pub(crate) fn site_config(
    dir: &Path,
    cache: &Path,
    admin_port: u16,
    upstream: &str,
    offline: bool,
) -> (PathBuf, String) {
    let text = format!(
        "listen = \"127.0.0.1:0\"\nbuiltin_upstreams = false\n[admin]\nlisten = \"127.0.0.1:{admin_port}\"\n\
         [cache]\ndir = \"{}\"\n[[upstreams]]\nhost = \"docker.io\"\nurl = \"{upstream}\"\ndefault = true\n\
         offline = {offline}\n",
        cache.display()
    );
    let path = dir.join(format!("site-{admin_port}.toml"));
    std::fs::write(&path, &text).expect("write config");
    (path, text)
}

pub(crate) async fn start(text: &str) -> regcache::app::Running {
    let config = regcache::config::Config::from_toml_str(text).expect("regcache config");
    regcache::app::start(config).await.expect("start regcache")
}

/// `regcache <args> --config <config>`, off the async threads.
pub(crate) async fn regcache_cli(args: &[&str], config: &Path) -> Output {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_regcache"));
    cmd.args(args).arg("--config").arg(config);
    cmd.output().await.expect("regcache runs")
}

pub(crate) fn ok(o: &Output, what: &str) -> String {
    assert!(
        o.status.success(),
        "{what}: exit {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The digest of `image`'s child for `arch` (its index is the layout's `manifest.json`).
fn child_digest(image: &TestImage, arch: &str) -> String {
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(image.layout.join("manifest.json")).expect("index"))
            .expect("json");
    index["manifests"]
        .as_array()
        .expect("children")
        .iter()
        .find(|c| c["platform"]["architecture"] == arch)
        .and_then(|c| c["digest"].as_str())
        .expect("the child")
        .to_string()
}

/// A skopeo `dir:` copy holds `manifest` and blobs byte-identical to the pushed layout's.
fn same_as_pushed(copy: &Path, image: &TestImage, manifest: &str) -> usize {
    let top = std::fs::read(copy.join("manifest.json")).expect("manifest.json");
    assert_eq!(sha256_digest(&top), manifest, "{}", copy.display());
    let mut blobs = 0;
    for entry in std::fs::read_dir(copy).expect("copy").flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name == "manifest.json" || name == "version" {
            continue;
        }
        let bytes = std::fs::read(entry.path()).expect("blob");
        assert_eq!(sha256_digest(&bytes), format!("sha256:{name}"), "{name}");
        assert_eq!(
            std::fs::read(image.layout.join(&name)).expect("pushed blob"),
            bytes,
            "{name}"
        );
        blobs += 1;
    }
    blobs
}

/// Every file under a cache's content and record directories.
fn store_files(cache: &Path) -> usize {
    fn count(p: &Path) -> usize {
        std::fs::read_dir(p)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| if e.path().is_dir() { count(&e.path()) } else { 1 })
            .sum()
    }
    ["blobs", "manifests", "tags"]
        .iter()
        .map(|d| count(&cache.join(d)))
        .sum()
}

/// The sum of `regcache_upstream_requests_total`.
pub(crate) fn upstream_requests(running: &regcache::app::Running) -> f64 {
    running
        .metrics()
        .render()
        .lines()
        .filter(|l| l.starts_with("regcache_upstream_requests_total"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offline_site_serves_an_imported_bundle() {
    netns::namespaced_test(TEST, namespaced_body(), requirements_present).await;
}

async fn namespaced_body() {
    let clock = Clock::new("e2e-air-gap");
    let mut upstream = Upstream::start(&clock).await;
    let work = tempfile::Builder::new()
        .prefix("regcache-e2e-airgap-")
        .tempdir()
        .expect("work dir");
    let w = work.path();
    let image = |repo: &str| {
        upstream
            .public()
            .find(|i| i.repo == repo)
            .expect("test image")
            .clone()
    };
    let (multi, alpine) = (image("library/multi"), image("library/alpine"));
    let arm64 = child_digest(&multi, "arm64");

    // The online site.
    let online_cache = w.join("online");
    let (online_cfg, text) = site_config(
        w,
        &online_cache,
        free_port().unwrap().port(),
        &upstream.registry.url(),
        false,
    );
    let online = start(&text).await;
    let out = ok(
        &regcache_cli(
            &["prefetch", "--platform", "linux/arm64", "--pin", "multi:latest"],
            &online_cfg,
        )
        .await,
        "prefetch",
    );
    assert!(out.contains("1 images, 0 failed"), "{out}");
    clock.mark("prefetched linux/arm64 of multi:latest, pinned");
    let src = format!("docker://{}/library/alpine:latest", online.local_addr());
    let pulled = w.join("alpine-online");
    upstream
        .skopeo
        .copy(
            &src,
            &format!("dir:{}", pulled.display()),
            &["--src-tls-verify=false"],
            None,
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    ok(
        &regcache_cli(&["cache", "gc", "--to", "0"], &online_cfg).await,
        "gc",
    );
    let listed: Vec<serde_json::Value> = serde_json::from_str(&ok(
        &regcache_cli(&["cache", "ls", "--json"], &online_cfg).await,
        "ls",
    ))
    .expect("ls json");
    let entry = |repo: &str| {
        listed
            .iter()
            .find(|e| e["repository"] == repo && e["kind"] == "tag")
            .unwrap_or_else(|| panic!("{repo} in {listed:#?}"))
    };
    let m = entry("library/multi");
    assert_eq!(
        (m["pinned"].as_bool(), m["manifest_cached"].as_bool()),
        (Some(true), Some(true)),
        "{m}"
    );
    assert_eq!(m["blobs_cached"], m["blobs_total"], "{m}");
    assert_eq!(
        (m["children_cached"].as_u64(), m["children_total"].as_u64()),
        (Some(1), Some(2)),
        "{m}"
    );
    assert!(
        !listed
            .iter()
            .any(|e| e["repository"] == "library/alpine" && e["blobs_cached"] != 0),
        "alpine was evicted: {listed:#?}"
    );
    for b in &alpine.blobs {
        let file = online_cache
            .join("blobs/sha256")
            .join(b.trim_start_matches("sha256:"));
        assert!(!file.exists(), "{b} of the unpinned image was evicted");
    }
    clock.mark("gc to 0: the unpinned image went, the pinned one stayed whole");

    let bundle = w.join("bundle.tar");
    let out = ok(
        &regcache_cli(
            &["export", "-o", bundle.to_str().unwrap(), "multi:latest"],
            &online_cfg,
        )
        .await,
        "export",
    );
    assert!(out.contains("1 images, 2 manifests, 3 blobs"), "{out}");
    assert!(
        out.contains("1 platforms of multi-platform images left out"),
        "{out}"
    );
    online.shutdown().await;
    let read_back = w.join("from-archive");
    upstream
        .skopeo
        .copy(
            &format!("oci-archive:{}:docker.io/library/multi:latest", bundle.display()),
            &format!("dir:{}", read_back.display()),
            &["--override-arch", "arm64", "--override-variant", "v8"],
            None,
        )
        .await
        .unwrap_or_else(|e| panic!("skopeo reads the bundle: {e}"));
    same_as_pushed(&read_back, &multi, &arm64);
    clock.mark(&format!(
        "exported {} bytes; skopeo reads it as an oci-archive",
        std::fs::metadata(&bundle).unwrap().len()
    ));

    // The offline site: a bundle with one flipped byte adds nothing.
    let offline_cache = w.join("offline");
    let (offline_cfg, text) = site_config(
        w,
        &offline_cache,
        free_port().unwrap().port(),
        &upstream.registry.url(),
        true,
    );
    let (bad, bad_blob) = flipped(&bundle, &multi, w);
    let refused = regcache_cli(&["import", bad.to_str().unwrap()], &offline_cfg).await;
    assert!(!refused.status.success(), "a corrupt bundle must be refused");
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(
        err.contains(&format!("blob {bad_blob} in the bundle is corrupt")),
        "{err}"
    );
    assert_eq!(store_files(&offline_cache), 0, "nothing was added");
    clock.mark(&format!("a flipped byte is refused: {}", err.trim()));

    let out = ok(
        &regcache_cli(&["import", bundle.to_str().unwrap()], &offline_cfg).await,
        "import",
    );
    assert!(out.contains("docker.io/library/multi:latest"), "{out}");
    upstream.registry.kill();
    let offline = start(&text).await;
    clock.mark("imported into a fresh directory; the registry is stopped; offline regcache up");

    // skopeo, by tag and by digest, byte for byte.
    for (n, reference) in [
        "library/multi:latest".to_string(),
        format!("library/multi@{}", multi.digest),
    ]
    .iter()
    .enumerate()
    {
        let dst = w.join(format!("offline-{n}"));
        upstream
            .skopeo
            .copy(
                &format!("docker://{}/{reference}", offline.local_addr()),
                &format!("dir:{}", dst.display()),
                &[
                    "--src-tls-verify=false",
                    "--override-arch",
                    "arm64",
                    "--override-variant",
                    "v8",
                ],
                None,
            )
            .await
            .unwrap_or_else(|e| panic!("offline skopeo pull of {reference}: {e}"));
        let blobs = same_as_pushed(&dst, &multi, &arm64);
        clock.mark(&format!(
            "offline skopeo {reference}: manifest and {blobs} blobs as pushed"
        ));
    }

    // podman, whose only other source is the stopped registry.
    let mirror = format!("{}/docker.io", offline.local_addr());
    let podman = Podman::new(&podman::registries_conf(
        "docker.io",
        &upstream.registry.host(),
        &mirror,
    ))
    .expect("podman setup");
    podman
        .pull_with(
            &["--arch", "arm64", "--variant", "v8"],
            "docker.io/library/multi:latest",
        )
        .await
        .unwrap_or_else(|e| panic!("offline podman pull: {e}"));
    let digest = podman
        .digest("docker.io/library/multi:latest")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(digest, multi.digest, "podman's digest");
    clock.mark("offline podman pull of docker.io/library/multi:latest");
    assert_eq!(
        upstream_requests(&offline),
        0.0,
        "the offline site asked no upstream"
    );
    offline.shutdown().await;
}

/// A copy of `bundle` with one byte flipped inside an arm64 layer; returns it and that layer.
fn flipped(bundle: &Path, multi: &TestImage, w: &Path) -> (PathBuf, String) {
    let mut archive = tar::Archive::new(std::fs::File::open(bundle).expect("bundle"));
    let mut target = None;
    for entry in archive.entries().expect("entries") {
        let entry = entry.expect("entry");
        let path = entry.path().expect("path").to_string_lossy().into_owned();
        let Some(hex) = path.strip_prefix("blobs/sha256/") else {
            continue;
        };
        let digest = format!("sha256:{hex}");
        if multi.blobs.contains(&digest) && entry.size() > 100_000 {
            target = Some((entry.raw_file_position(), entry.size(), digest));
            break;
        }
    }
    let (at, size, digest) = target.expect("a layer in the bundle");
    let mut bytes = std::fs::read(bundle).expect("bundle");
    bytes[(at + size / 2) as usize] ^= 0x01;
    let bad = w.join("flipped.tar");
    std::fs::write(&bad, bytes).expect("write");
    (bad, digest)
}
