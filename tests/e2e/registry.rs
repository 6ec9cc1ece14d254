//! End-to-end tests of regcache against a real registry: a local CNCF
//! distribution (`docker-registry`) behind a Docker-Hub-like token server holds
//! deterministic test images; regcache runs in-process with that registry as
//! its only (`docker.io`, default) upstream; skopeo and a containerd-like
//! client pull through it using the dockerd, CRI-O/podman and containerd mirror
//! conventions, and every pulled byte is compared with a direct pull.
//!
//! Needs `docker-registry` and `skopeo` on PATH. Without them the tests print a
//! loud notice and pass, except when `CI` is set, where they fail.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::support::e2e::images::{self, TestImage};
use crate::support::e2e::registry::Registry;
use crate::support::e2e::token_server::TokenServer;
use crate::support::e2e::{self, tools_present, Clock, HttpClient, Skopeo};

/// The upstream side: token server, registry with the test images pushed,
/// and a direct (reference) `dir:` copy of every image.
struct Upstream {
    token: TokenServer,
    registry: Registry,
    images: Vec<TestImage>,
    skopeo: Skopeo,
    work: tempfile::TempDir,
}

impl Upstream {
    async fn start(clock: &Clock) -> Upstream {
        let token = TokenServer::start().await.expect("token server");
        let registry = Registry::start(&token).await.expect("docker-registry");
        clock.mark(&format!(
            "token server {} and registry {} up",
            token.addr(),
            registry.addr()
        ));

        let work = tempfile::Builder::new()
            .prefix("regcache-e2e-work-")
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
        clock.mark(&format!("built and pushed {} images", images.len()));
        Upstream {
            token,
            registry,
            images,
            skopeo,
            work,
        }
    }

    fn public(&self) -> impl Iterator<Item = &TestImage> {
        self.images.iter().filter(|i| i.public)
    }

    fn image(&self, repo: &str) -> &TestImage {
        self.images.iter().find(|i| i.repo == repo).expect("image")
    }

    /// `<work>/<round>/<short name>`, with its parent created.
    fn out_dir(&self, round: &str, image: &TestImage) -> PathBuf {
        let parent = self.work.path().join(round);
        std::fs::create_dir_all(&parent).expect("create output dir");
        parent.join(image.short_name())
    }

    /// The direct copy of `image` made by [`Upstream::pull_direct`].
    fn direct_dir(&self, image: &TestImage) -> PathBuf {
        self.out_dir("direct", image)
    }

    /// Copies every public image straight from the registry (as `reader`),
    /// checks the copy is identical to the pushed layout, and checks the
    /// access rules of the private repository.
    async fn pull_direct(&self, clock: &Clock) {
        let mut copies = tokio::task::JoinSet::new();
        for image in self.public() {
            let skopeo = self.skopeo.clone();
            let src = format!("docker://{}/{}", self.registry.host(), image.reference());
            let dst = self.direct_dir(image);
            copies.spawn(async move {
                let dst_ref = format!("dir:{}", dst.display());
                let result = skopeo
                    .copy(
                        &src,
                        &dst_ref,
                        &[
                            "--all",
                            "--src-tls-verify=false",
                            "--src-creds",
                            "reader:reader-secret",
                        ],
                        None,
                    )
                    .await;
                (src, result)
            });
        }
        while let Some(joined) = copies.join_next().await {
            let (src, result) = joined.expect("copy task");
            result.unwrap_or_else(|e| panic!("direct copy {src}: {e}"));
        }
        for image in self.public() {
            let direct = self.direct_dir(image);
            let files = e2e::compare_dirs(&image.layout, &direct).unwrap_or_else(|e| {
                panic!(
                    "direct copy of {} differs from the pushed layout: {e}",
                    image.reference()
                )
            });
            let manifest = std::fs::read(direct.join("manifest.json")).expect("manifest.json");
            assert_eq!(
                images::sha256_digest(&manifest),
                image.digest,
                "{}",
                image.reference()
            );
            eprintln!(
                "    direct {} ok: {files} files, {}",
                image.reference(),
                image.digest
            );
        }

        // The private repository: anonymous pulls are refused upstream, the
        // reader may pull it.
        let private = self.image("myorg/private");
        let src = format!("docker://{}/{}", self.registry.host(), private.reference());
        let anon = self
            .skopeo
            .copy(
                &src,
                &format!("dir:{}", self.out_dir("direct-anon", private).display()),
                &["--src-tls-verify=false", "--src-no-creds"],
                None,
            )
            .await;
        assert!(anon.is_err(), "anonymous pull of {src} must be refused upstream");
        self.skopeo
            .copy(
                &src,
                &format!("dir:{}", self.direct_dir(private).display()),
                &["--src-tls-verify=false", "--src-creds", "reader:reader-secret"],
                None,
            )
            .await
            .unwrap_or_else(|e| panic!("reader pull of {src}: {e}"));
        e2e::compare_dirs(&private.layout, &self.direct_dir(private)).expect("private copy");
        clock.mark("direct pulls verified");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_harness_serves_pushed_images() {
    if !tools_present("upstream_harness_serves_pushed_images") {
        return;
    }
    let clock = Clock::new("e2e");
    let body = async {
        let upstream = Upstream::start(&clock).await;
        upstream.pull_direct(&clock).await;

        // skopeo honours the mirror registries.conf: docker.io goes to the
        // mirror (here the registry itself), the dead primary is never needed.
        let conf = upstream.work.path().join("registries-self-mirror.conf");
        std::fs::write(&conf, e2e::mirror_registries_conf(&upstream.registry.host())).expect("write conf");
        let alpine = upstream.image("library/alpine");
        let dst = upstream.out_dir("self-mirror", alpine);
        upstream
            .skopeo
            .copy(
                "docker://docker.io/library/alpine:latest",
                &format!("dir:{}", dst.display()),
                &["--src-tls-verify=false", "--src-no-creds"],
                Some(&conf),
            )
            .await
            .expect("copy through registries.conf mirror");
        e2e::compare_dirs(&upstream.direct_dir(alpine), &dst).expect("mirror copy matches");

        // The containerd-like client works against the registry itself
        // (distribution ignores `?ns=`), so it can be trusted on regcache.
        let client = HttpClient::new();
        for image in upstream.public() {
            let stats = e2e::containerd_pull(
                &client,
                upstream.registry.addr(),
                "docker.io",
                image,
                &upstream.direct_dir(image),
            )
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "containerd-style pull of {} from the registry: {e}",
                    image.reference()
                )
            });
            eprintln!("    containerd-style {} ok: {stats:?}", image.reference());
        }

        // Tokens carrying the certificate in `x5c` are accepted as well.
        upstream.token.set_x5c(true);
        let x5c_client = HttpClient::new();
        let manifest_url = format!("{}/v2/library/alpine/manifests/latest", upstream.registry.url());
        let ok = x5c_client
            .pull_request(hyper::Method::GET, &manifest_url, e2e::CONTAINERD_ACCEPT)
            .await
            .expect("manifest with x5c token");
        assert_eq!(ok.status, 200, "x5c token refused");
        upstream.token.set_x5c(false);

        // Short-lived tokens really expire (the token server takes
        // distribution's 60 s leeway off `exp`).
        upstream.token.set_expires_in(2);
        let short_client = HttpClient::new();
        let ok = short_client
            .pull_request(hyper::Method::GET, &manifest_url, e2e::CONTAINERD_ACCEPT)
            .await
            .expect("manifest with short token");
        assert_eq!(ok.status, 200, "fresh short-lived token refused");
        let token = short_client.bearer_token().expect("token obtained");
        upstream.token.set_expires_in(300);
        tokio::time::sleep(Duration::from_millis(3_200)).await;
        let bearer = format!("Bearer {token}");
        let expired = short_client
            .request_with(
                hyper::Method::GET,
                &manifest_url,
                &[("accept", e2e::CONTAINERD_ACCEPT), ("authorization", &bearer)],
            )
            .await
            .expect("manifest with expired token");
        assert_eq!(expired.status, 401, "expired token still accepted");
        clock.mark("x5c and token expiry verified");

        // Token server behaviour seen from the outside.
        let realm = upstream.token.realm();
        let bad = client
            .request_with(
                hyper::Method::GET,
                &format!("{realm}?service=registry.docker.io&scope=repository:library/alpine:pull"),
                &[("authorization", "Basic YWRtaW46d3Jvbmc=")],
            )
            .await
            .expect("token request");
        assert_eq!(bad.status, 401, "wrong password must be refused");
        let counts = upstream.token.counts();
        assert!(counts.authenticated > 0, "{counts:?}");
        assert!(counts.rejected > 0, "{counts:?}");
        let blob_gets = upstream.registry.blob_gets();
        assert!(blob_gets > 0, "registry log shows no blob GETs");
        assert_eq!(
            upstream
                .registry
                .count_requests("GET", e2e::registry::is_blob_uri),
            blob_gets
        );
        eprintln!("    token counts {counts:?}, registry blob GETs {blob_gets}");
        clock.mark("done");
    };
    tokio::time::timeout(Duration::from_secs(180), body)
        .await
        .expect("test timed out");
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
            .prefix("regcache-e2e-cache-")
            .tempdir()
            .expect("cache dir");
        Mirror::start_on(registry, cache, "5m").await
    }

    /// A mirror on an existing cache directory with the given tag TTL.
    async fn start_on(registry: &Registry, cache: tempfile::TempDir, tag_ttl: &str) -> Mirror {
        let running = e2e::start_mirror(&registry.url(), cache.path(), tag_ttl).await;
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
        let before_mirror = settled_blob_gets(&upstream.registry).await;
        let token_requests_before = upstream.token.requests().len();

        let mirror = Mirror::start(&upstream.registry).await;
        clock.mark(&format!("regcache listening on {}", mirror.addr));
        let client = HttpClient::new();

        // Round 1: cold cache.
        pull_round(&upstream, &mirror, "round1", &client).await;
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
        pull_round(&upstream, &mirror, "round2", &client).await;
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

        // A private repository without configured credentials fails cleanly.
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
