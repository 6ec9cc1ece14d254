//! End-to-end tests of regcache against a real registry: a local CNCF
//! distribution (`docker-registry`) behind a Docker-Hub-like token server holds
//! deterministic test images; regcache runs in-process with that registry as
//! its only (`docker.io`, default) upstream; skopeo and a containerd-like
//! client pull through it using the dockerd, CRI-O/podman and containerd mirror
//! conventions, and every pulled byte is compared with a direct pull. This file
//! has the upstream side and the test that checks it alone; the pulls through
//! regcache are in `registry/mirror.rs`.
//!
//! Needs `docker-registry` and `skopeo` on PATH. Without them the tests print a
//! loud notice and pass, except when `CI` is set, where they fail.

mod mirror;

use std::path::PathBuf;
use std::time::Duration;

use crate::support::e2e::images::{self, TestImage};
use crate::support::e2e::registry::Registry;
use crate::support::e2e::token_server::TokenServer;
use crate::support::e2e::{self, tools_present, Clock, HttpClient, Skopeo};

/// The upstream side: token server, registry with the test images pushed,
/// and a direct (reference) `dir:` copy of every image.
pub(crate) struct Upstream {
    token: TokenServer,
    pub(crate) registry: Registry,
    images: Vec<TestImage>,
    pub(crate) skopeo: Skopeo,
    work: tempfile::TempDir,
}

impl Upstream {
    pub(crate) async fn start(clock: &Clock) -> Upstream {
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

    pub(crate) fn public(&self) -> impl Iterator<Item = &TestImage> {
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
    pub(crate) fn direct_dir(&self, image: &TestImage) -> PathBuf {
        self.out_dir("direct", image)
    }

    /// Copies every public image straight from the registry (as `reader`),
    /// checks the copy is identical to the pushed layout, and checks the
    /// access rules of the private repository.
    pub(crate) async fn pull_direct(&self, clock: &Clock) {
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
        copy_through_registries_conf(&upstream).await;
        let client = HttpClient::new();
        containerd_style_pulls_from_the_registry(&upstream, &client).await;
        x5c_and_short_lived_tokens(&upstream).await;
        clock.mark("x5c and token expiry verified");
        token_server_from_outside(&upstream, &client).await;
        clock.mark("done");
    };
    tokio::time::timeout(Duration::from_secs(180), body)
        .await
        .expect("test timed out");
}

/// skopeo honours the mirror registries.conf: docker.io goes to the mirror (here the registry
/// itself), the dead primary is never needed.
async fn copy_through_registries_conf(upstream: &Upstream) {
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
}

/// The containerd-like client works against the registry itself (distribution ignores
/// `?ns=`), so it can be trusted on regcache.
async fn containerd_style_pulls_from_the_registry(upstream: &Upstream, client: &HttpClient) {
    for image in upstream.public() {
        let stats = e2e::containerd_pull(
            client,
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
}

/// Tokens carrying the certificate in `x5c` are accepted as well, and short-lived tokens
/// really expire (the token server takes distribution's 60 s leeway off `exp`). The registry
/// checks `exp` against its own wall clock, so this waits in real time.
async fn x5c_and_short_lived_tokens(upstream: &Upstream) {
    upstream.token.set_x5c(true);
    let x5c_client = HttpClient::new();
    let manifest_url = format!("{}/v2/library/alpine/manifests/latest", upstream.registry.url());
    let ok = x5c_client
        .pull_request(hyper::Method::GET, &manifest_url, e2e::CONTAINERD_ACCEPT)
        .await
        .expect("manifest with x5c token");
    assert_eq!(ok.status, 200, "x5c token refused");
    upstream.token.set_x5c(false);

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
}

/// Token server behaviour seen from the outside, and the registry log the tests count from.
async fn token_server_from_outside(upstream: &Upstream, client: &HttpClient) {
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
}
