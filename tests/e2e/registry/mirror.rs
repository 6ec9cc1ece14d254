//! regcache in front of the registry: every public image pulled through it every way clients
//! do (dockerd's default route, a short Docker Hub name, the CRI-O/podman `registries.conf`
//! mirror, containerd's `?ns=`, and the registry's own `127.0.0.1:PORT` as the leading path
//! segment, an upstream configured under a host with a port), byte for byte equal to a direct
//! pull; a warm cache fetches no
//! blob upstream; a private image without credentials is refused cleanly; and with the
//! upstream stopped, a restarted mirror still serves everything it cached.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::Upstream;
use crate::support::e2e::images::TestImage;
use crate::support::e2e::registry::Registry;
use crate::support::e2e::{self, tools_present, Clock, HttpClient, Skopeo};

/// regcache running in-process with the local registry as its upstream, twice: as `docker.io`
/// (the default) and under its own `127.0.0.1:PORT`.
struct Mirror {
    running: regcache::app::Running,
    addr: SocketAddr,
    _cache: tempfile::TempDir,
}

impl Mirror {
    async fn start(registry: &Registry) -> Mirror {
        let cache = tempfile::Builder::new()
            .prefix("regcache-e2e-cache-")
            .tempdir()
            .expect("cache dir");
        Mirror::start_on(registry, cache, "5m").await
    }

    /// A mirror on an existing cache directory with the given tag TTL.
    async fn start_on(registry: &Registry, cache: tempfile::TempDir, tag_ttl: &str) -> Mirror {
        let own_host = registry.host();
        let running =
            e2e::start_mirror_also_as(&registry.url(), cache.path(), tag_ttl, &[own_host.as_str()]).await;
        let addr = running.local_addr();
        Mirror {
            running,
            addr,
            _cache: cache,
        }
    }

    fn host(&self) -> String {
        self.addr.to_string()
    }
}

/// Everything one image pull through the mirror needs, owned so pulls of
/// different images can run concurrently.
#[derive(Clone)]
struct PullJob {
    skopeo: Skopeo,
    client: HttpClient,
    mirror: SocketAddr,
    /// The registry's own `127.0.0.1:PORT`, an upstream host of the mirror.
    registry_host: String,
    image: TestImage,
    direct: PathBuf,
    out: PathBuf,
    registries_conf: PathBuf,
}

impl PullJob {
    async fn copy_and_compare(&self, what: &str, src: &str, conf: Option<&Path>) -> Result<(), String> {
        let dst = self.out.join(what);
        let args = ["--all", "--src-tls-verify=false", "--src-no-creds"];
        self.skopeo
            .copy(src, &format!("dir:{}", dst.display()), &args, conf)
            .await
            .map_err(|e| format!("{what}: {e}"))?;
        let files = e2e::compare_dirs(&self.direct, &dst).map_err(|e| format!("{what}: {src}: {e}"))?;
        eprintln!(
            "    {what} {} ok ({files} files identical)",
            self.image.reference()
        );
        Ok(())
    }

    /// Pulls the image through the mirror every supported way and checks
    /// each result against the direct copy.
    async fn run(self) -> Result<(), String> {
        std::fs::create_dir_all(&self.out).map_err(|e| e.to_string())?;
        let reference = self.image.reference();

        // (ii) default-upstream route, what dockerd's registry-mirrors sends.
        let src = format!("docker://{}/{reference}", self.mirror);
        self.copy_and_compare("default-route", &src, None).await?;

        // One-segment Docker Hub names get `library/` added.
        if let Some(short) = reference.strip_prefix("library/") {
            let src = format!("docker://{}/{short}", self.mirror);
            self.copy_and_compare("short-name", &src, None).await?;
        }

        // (iii) CRI-O / podman mirror convention: `HOST/docker.io` prefix.
        let src = format!("docker://docker.io/{reference}");
        self.copy_and_compare("registries-conf", &src, Some(&self.registries_conf))
            .await?;

        // (iv) containerd convention: `?ns=docker.io` on every request.
        let stats = e2e::containerd_pull(&self.client, self.mirror, "docker.io", &self.image, &self.direct)
            .await
            .map_err(|e| format!("containerd-style ?ns=docker.io: {e}"))?;
        eprintln!("    containerd-style {reference} ok: {stats:?}");

        // (v) The registry by its own address as the leading path segment, as a hand-built URL
        // or a mirror location `<mirror>/127.0.0.1:PORT` sends it (podman cannot: podman.rs).
        let stats = e2e::prefixed_pull(
            &self.client,
            self.mirror,
            &self.registry_host,
            &self.image,
            &self.direct,
        )
        .await
        .map_err(|e| format!("host:port prefix {}: {e}", self.registry_host))?;
        eprintln!("    {}/{reference} ok: {stats:?}", self.registry_host);
        Ok(())
    }
}

/// Pulls every public image through the mirror, all images concurrently.
async fn pull_round(upstream: &Upstream, mirror: &Mirror, round: &str, client: &HttpClient) {
    let conf = upstream.work.path().join(format!("registries-{round}.conf"));
    let mirror_location = format!("{}/docker.io", mirror.host());
    std::fs::write(&conf, e2e::mirror_registries_conf(&mirror_location)).expect("write registries.conf");
    let mut jobs = tokio::task::JoinSet::new();
    for image in upstream.public() {
        let job = PullJob {
            skopeo: upstream.skopeo.clone(),
            client: client.clone(),
            mirror: mirror.addr,
            registry_host: upstream.registry.host(),
            image: image.clone(),
            direct: upstream.direct_dir(image),
            out: upstream.out_dir(round, image),
            registries_conf: conf.clone(),
        };
        jobs.spawn(async move {
            let name = job.image.reference();
            job.run().await.map_err(|e| format!("{name}: {e}"))
        });
    }
    while let Some(joined) = jobs.join_next().await {
        if let Err(e) = joined.expect("pull task") {
            panic!("{round}: pull through regcache failed: {e}");
        }
    }
}

/// Upstream blob GETs once the registry log has been quiet for a moment.
async fn settled_blob_gets(registry: &Registry) -> usize {
    registry
        .settled_requests(Duration::from_millis(600), Duration::from_secs(10))
        .await
        .iter()
        .filter(|r| r.is_blob_get())
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_through_mirror_end_to_end() {
    if !tools_present("pull_through_mirror_end_to_end") {
        return;
    }
    let clock = Clock::new("e2e");
    let body = async {
        let upstream = Upstream::start(&clock).await;
        upstream.pull_direct(&clock).await;
        let mirror = Mirror::start(&upstream.registry).await;
        clock.mark(&format!("regcache listening on {}", mirror.addr));
        let client = HttpClient::new();
        cold_then_warm(&upstream, &mirror, &client, &clock).await;
        private_refused(&upstream, &mirror, &client).await;
        clock.mark("private repository refused cleanly");
        tokio::time::timeout(Duration::from_secs(30), mirror.running.shutdown())
            .await
            .expect("regcache shut down in time");

        // Round 3: the upstream is down. A mirror restarted on the same cache, with every tag
        // stale, still serves every cached image (the failed revalidation falls back to the cache).
        let mut upstream = upstream;
        upstream.registry.kill();
        let mirror = Mirror::start_on(&upstream.registry, mirror._cache, "0s").await;
        pull_round(&upstream, &mirror, "round3-upstream-down", &client).await;
        clock.mark("round 3 (upstream stopped) verified: every cached image pulled");
        tokio::time::timeout(Duration::from_secs(30), mirror.running.shutdown())
            .await
            .expect("regcache shut down in time");
        clock.mark("done");
    };
    tokio::time::timeout(Duration::from_secs(180), body)
        .await
        .expect("test timed out");
}

/// Round 1 on a cold cache fetches blobs upstream, with anonymous tokens; round 2 on the warm
/// cache fetches no blob upstream again.
async fn cold_then_warm(upstream: &Upstream, mirror: &Mirror, client: &HttpClient, clock: &Clock) {
    let before_mirror = settled_blob_gets(&upstream.registry).await;
    let token_requests_before = upstream.token.requests().len();

    // Round 1: cold cache.
    pull_round(upstream, mirror, "round1", client).await;
    let after_round1 = settled_blob_gets(&upstream.registry).await;
    let distinct_blobs: std::collections::BTreeSet<&String> =
        upstream.public().flat_map(|i| i.blobs.iter()).collect();
    clock.mark(&format!(
        "round 1 (cold) verified: {} upstream blob GETs for {} distinct blobs",
        after_round1 - before_mirror,
        distinct_blobs.len()
    ));
    assert!(
        after_round1 > before_mirror,
        "a cold pull must fetch blobs upstream"
    );

    // regcache fetched its upstream tokens anonymously (no credentials
    // configured) for the registry's service.
    let mirror_tokens: Vec<_> = upstream.token.requests().split_off(token_requests_before);
    assert!(!mirror_tokens.is_empty(), "regcache never asked the token server");
    for record in &mirror_tokens {
        assert_eq!(record.user, None, "unexpected credentials: {record:?}");
        assert_eq!(
            record.service.as_deref(),
            Some(e2e::token_server::SERVICE),
            "{record:?}"
        );
    }

    // Round 2: warm cache, no blob may be fetched upstream again.
    let requests_before_round2 = upstream.registry.requests().len();
    pull_round(upstream, mirror, "round2", client).await;
    let after_round2 = settled_blob_gets(&upstream.registry).await;
    let round2_upstream: Vec<_> = upstream.registry.requests().split_off(requests_before_round2);
    clock.mark(&format!(
        "round 2 (warm) verified: {} upstream requests ({} manifest)",
        round2_upstream.len(),
        round2_upstream.iter().filter(|r| r.is_manifest()).count()
    ));
    assert_eq!(
        after_round2,
        after_round1,
        "warm pulls fetched blobs upstream again: {:?}",
        round2_upstream
            .iter()
            .filter(|r| r.is_blob_get())
            .collect::<Vec<_>>()
    );
}

/// A private repository without configured credentials fails cleanly.
async fn private_refused(upstream: &Upstream, mirror: &Mirror, client: &HttpClient) {
    let private = upstream.image("myorg/private");
    let failed = upstream
        .skopeo
        .copy(
            &format!("docker://{}/{}", mirror.host(), private.reference()),
            &format!(
                "dir:{}",
                upstream.out_dir("private-via-mirror", private).display()
            ),
            &["--src-tls-verify=false", "--src-no-creds"],
            None,
        )
        .await;
    assert!(
        failed.is_err(),
        "private image must not be pullable anonymously through regcache"
    );
    for path in [
        format!("/v2/{}/manifests/{}", private.repo, private.tag),
        format!("/v2/docker.io/{}/manifests/{}", private.repo, private.tag),
        format!("/v2/{}/manifests/{}?ns=docker.io", private.repo, private.tag),
        format!("/v2/{}/blobs/{}", private.repo, private.blobs[1]),
    ] {
        let url = format!("http://{}{path}", mirror.addr);
        let response = client
            .get(&url, Some(e2e::CONTAINERD_ACCEPT))
            .await
            .expect("GET private");
        let status = response.status.as_u16();
        assert!(
            matches!(status, 401 | 403 | 404),
            "GET {path}: want 401/403/404, got {status}: {}",
            String::from_utf8_lossy(&response.body)
        );
        assert!(
            e2e::is_oci_error_body(&response.body),
            "GET {path}: {status} without an OCI error body: {}",
            String::from_utf8_lossy(&response.body)
        );
        eprintln!("    private {path}: {status} with OCI error body");
    }
}
