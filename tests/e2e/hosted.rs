//! End-to-end pushes to hosted repositories (`[[hosted]]`) with real clients. regcache runs
//! in-process with hosted namespaces `local` (repositories made by the first push), `local2`
//! (`create_on_push = false`, `immutable_tags`) and `registry.internal` (a registry host as the
//! prefix), an htpasswd user `writer` who may push to all, anonymous read, and the local CNCF
//! distribution registry (behind the Docker-Hub-like token server) as its mirrored `docker.io`.
//!
//! skopeo pushes the kit's test images from their `dir:` layouts (an OCI image, the multi-arch
//! OCI index with `--all`, a Docker schema2 image) without `--preserve-digests`, so a refused
//! manifest that made skopeo convert it would show as a changed digest; each is pulled back
//! anonymously and must be byte for byte the pushed layout, its manifest digest the pushed one.
//! Tags are listed and a delete makes a manifest unknown. Beside the pushes a mirrored image
//! still pulls through the same endpoint, a push to a mirrored name is refused (405
//! UNSUPPORTED), and no hosted name and no write ever reaches the upstream. `local2` refuses a
//! repository nobody created (NAME_UNKNOWN, naming `regcache repo create`) until the
//! `regcache repo create` command (the binary) has created it through the daemon's admin
//! listener, and an immutable tag keeps its first content. `hosted/docker.rs` runs
//! Docker Engine's login, push and pull against the same kind of site.
//!
//! Needs `docker-registry` and `skopeo` on PATH; without them the test prints a loud notice and
//! passes, except when `CI` is set, where it fails.

mod docker;

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::registry::Upstream;
use crate::support::e2e::images::{sha256_digest, TestImage};
use crate::support::e2e::registry::{free_port, LoggedRequest};
use crate::support::e2e::{self, Clock, Skopeo};

/// The pushing user and password (in the site's htpasswd file).
pub(crate) const WRITER: (&str, &str) = ("writer", "writer-secret");

/// A site's configuration: hosted `local`, `local2` (strict) and `registry.internal`, `writer`
/// may push to all, everyone reads, and `upstream_url` is the mirrored `docker.io` (default).
/// The admin listener is on `admin_port` (0: any), where the CLI finds the daemon. Writes the
/// htpasswd file into `dir`.
pub(crate) fn site_config(dir: &Path, upstream_url: &str, admin_port: u16) -> String {
    let htpasswd = dir.join("htpasswd");
    // Cost 4, the lowest bcrypt allows: a test has no attacker to slow down.
    let hash = bcrypt::hash(WRITER.1, 4).expect("bcrypt");
    std::fs::write(&htpasswd, format!("{}:{hash}\n", WRITER.0)).expect("write htpasswd");
    let mut text = format!(
        r#"listen = "127.0.0.1:0"
builtin_upstreams = false
[admin]
listen = "127.0.0.1:{admin_port}"
[cache]
dir = "{cache}"
[auth]
htpasswd_file = "{htpasswd}"
[[upstreams]]
host = "docker.io"
url = "{upstream_url}"
default = true
[[hosted]]
prefix = "local"
[[hosted]]
prefix = "local2"
create_on_push = false
immutable_tags = true
[[hosted]]
prefix = "registry.internal"
"#,
        cache = dir.join("cache").display(),
        htpasswd = htpasswd.display(),
    );
    for namespace in ["local", "local2", "registry.internal"] {
        text.push_str(&format!(
            "[[access]]\nrepository = \"{namespace}/**\"\nread = [\"anonymous\"]\nwrite = [\"{}\"]\n",
            WRITER.0
        ));
    }
    text
}

/// regcache started in-process from `text`.
pub(crate) async fn start(text: &str) -> regcache::app::Running {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let config = regcache::config::Config::from_toml_str(text).expect("regcache config");
    regcache::app::start(config).await.expect("start regcache")
}

/// `regcache repo create NAME --config CONFIG` (the binary), which asks the running daemon on
/// the admin listener the config names.
async fn create_repository(config: &Path, admin: SocketAddr, name: &str) -> String {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_regcache"));
    command.args(["repo", "create", name]).arg("--config").arg(config);
    let (stdout, _) = e2e::run(command, "regcache repo create", Duration::from_secs(30))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let want = format!("created {name} (by the running daemon at {admin})");
    assert_eq!(stdout.trim(), want);
    want
}

/// What every step of the test works with.
struct Site<'a> {
    skopeo: &'a Skopeo,
    addr: SocketAddr,
    work: &'a Path,
    clock: &'a Clock,
}

impl Site<'_> {
    fn url(&self, name: &str) -> String {
        format!("docker://{}/{name}", self.addr)
    }

    /// skopeo pushes `image`'s layout to `name` as the writer.
    async fn push(&self, image: &TestImage, name: &str) -> Result<(), String> {
        let creds = format!("{}:{}", WRITER.0, WRITER.1);
        let mut args = vec!["--dest-tls-verify=false", "--dest-creds", &creds];
        if image.media_type == e2e::images::OCI_INDEX {
            args.push("--all");
        }
        let src = format!("dir:{}", image.layout.display());
        self.skopeo.copy(&src, &self.url(name), &args, None).await
    }

    /// skopeo pulls `name` anonymously (every platform of an index) and checks the copy is the
    /// pushed layout byte for byte and the registry's raw manifest has the pushed digest.
    async fn pull_back(&self, image: &TestImage, name: &str) {
        let out = self.work.join(name.replace(['/', ':'], "_"));
        let dst = format!("dir:{}", out.display());
        let mut args = vec!["--src-tls-verify=false"];
        if image.media_type == e2e::images::OCI_INDEX {
            args.push("--all");
        }
        let started = Instant::now();
        self.skopeo
            .copy(&self.url(name), &dst, &args, None)
            .await
            .unwrap_or_else(|e| panic!("pull {name}: {e}"));
        let files = e2e::compare_dirs(&image.layout, &out)
            .unwrap_or_else(|e| panic!("{name} pulled back differs from what was pushed: {e}"));
        let raw = self
            .skopeo
            .run(&["inspect", "--raw", "--tls-verify=false", &self.url(name)], None)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            sha256_digest(raw.as_bytes()),
            image.digest,
            "{name}: manifest digest"
        );
        self.clock.mark(&format!(
            "pulled {name} back in {:.2}s: {files} files as pushed, digest {}",
            started.elapsed().as_secs_f64(),
            image.digest
        ));
    }
}

/// The test's name, for the missing-tools notice.
const TEST: &str = "hosted::skopeo_pushes_to_hosted_repositories";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skopeo_pushes_to_hosted_repositories() {
    if !e2e::tools_present(TEST) {
        return;
    }
    tokio::time::timeout(Duration::from_secs(120), body())
        .await
        .expect("test timed out");
}

async fn body() {
    let clock = Clock::new("e2e-hosted-skopeo");
    let upstream = Upstream::start(&clock).await;
    let work = tempfile::Builder::new()
        .prefix("regcache-e2e-hosted-")
        .tempdir()
        .expect("work dir");
    let before = settled(&upstream).await.len();
    let admin_port = free_port().expect("a free port").port();
    let text = site_config(work.path(), &upstream.registry.url(), admin_port);
    let config = work.path().join("regcache.toml");
    std::fs::write(&config, &text).expect("write config");
    let running = start(&text).await;
    let site = Site {
        skopeo: &upstream.skopeo,
        addr: running.local_addr(),
        work: work.path(),
        clock: &clock,
    };
    let image = |repo: &str| {
        upstream
            .public()
            .find(|i| i.repo == repo)
            .expect("test image")
            .clone()
    };
    let images = [
        image("library/alpine"),
        image("library/multi"),
        image("library/dockerv2"),
    ];

    for pushed in &images {
        let name = format!("local/team/{}:v1", pushed.short_name());
        let started = Instant::now();
        site.push(pushed, &name)
            .await
            .unwrap_or_else(|e| panic!("push {name}: {e}"));
        clock.mark(&format!(
            "pushed {name} ({}) in {:.2}s",
            pushed.media_type,
            started.elapsed().as_secs_f64()
        ));
        site.pull_back(pushed, &name).await;
    }

    // A registry host as the prefix; tags listed; a delete (by digest, which skopeo resolves).
    let alpine = &images[0];
    let internal = "registry.internal/team/app:v1";
    site.push(alpine, internal)
        .await
        .unwrap_or_else(|e| panic!("push {internal}: {e}"));
    site.pull_back(alpine, internal).await;
    let tags = site
        .skopeo
        .run(
            &["list-tags", "--tls-verify=false", &site.url("local/team/alpine")],
            None,
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let tags: serde_json::Value = serde_json::from_str(&tags).expect("list-tags json");
    assert_eq!(tags["Tags"], serde_json::json!(["v1"]), "{tags}");
    let creds = format!("{}:{}", WRITER.0, WRITER.1);
    let gone = site.url("local/team/dockerv2:v1");
    let delete = ["delete", "--tls-verify=false", "--creds", &creds, &gone];
    site.skopeo
        .run(&delete, None)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let after = site
        .skopeo
        .run(&["inspect", "--raw", "--tls-verify=false", &gone], None)
        .await
        .expect_err("a deleted manifest is unknown");
    assert!(after.contains("manifest unknown"), "{after}");
    clock.mark("registry.internal/team/app pushed and pulled; tags listed; dockerv2:v1 deleted");

    // Mirrored names are unaffected: a pull goes through to the registry, a push is refused.
    site.pull_back(alpine, &alpine.reference()).await;
    let refused = site
        .push(alpine, "library/x:v1")
        .await
        .expect_err("a push to a mirrored name must fail");
    // skopeo names the error code (UNSUPPORTED, the 405's) and the message, not the status.
    assert!(
        refused.contains("unsupported: ") && refused.contains("read-only"),
        "{refused}"
    );
    clock.mark(&format!(
        "a push to the mirrored library/x: {}",
        last_words(&refused)
    ));

    strict_namespace(&site, &images, &config, running.admin_addr()).await;
    // The upstream sees reads of mirrored names only (skopeo's blob HEADs before the refused
    // push to library/x are reads, and go through); no hosted name, no write.
    let leaked: Vec<String> = settled(&upstream).await[before..]
        .iter()
        .filter(|r| r.uri.starts_with("/v2/local") || !matches!(r.method.as_str(), "GET" | "HEAD"))
        .map(|r| format!("{} {}", r.method, r.uri))
        .collect();
    assert!(
        leaked.is_empty(),
        "hosted names or writes reached the upstream: {leaked:#?}"
    );
    running.shutdown().await;
}

/// Every request the registry has answered, once its log has been quiet for a moment.
async fn settled(upstream: &Upstream) -> Vec<LoggedRequest> {
    let (quiet, max_wait) = (Duration::from_millis(300), Duration::from_secs(5));
    upstream.registry.settled_requests(quiet, max_wait).await
}

/// skopeo's message without the command line before it.
fn last_words(error: &str) -> &str {
    error.rsplit("msg=").next().unwrap_or(error)
}

/// `local2`: no push before the repository is created; a tag, once pushed, never moves.
async fn strict_namespace(site: &Site<'_>, images: &[TestImage], config: &Path, admin: SocketAddr) {
    let (first, other) = (&images[0], &images[2]);
    let refused = site
        .push(first, "local2/app:v1")
        .await
        .expect_err("a push to a repository never created must fail");
    assert!(
        refused.contains("name unknown: ") && refused.contains("regcache repo create local2/app"),
        "{refused}"
    );
    site.clock
        .mark(&format!("local2/app, never created: {}", last_words(&refused)));

    let created = create_repository(config, admin, "local2/app").await;
    site.clock.mark(&created);
    site.push(first, "local2/app:v1")
        .await
        .unwrap_or_else(|e| panic!("push after create: {e}"));
    site.pull_back(first, "local2/app:v1").await;
    // The same content again is no move of the tag.
    site.push(first, "local2/app:v1")
        .await
        .unwrap_or_else(|e| panic!("the same push again: {e}"));
    let moved = site
        .push(other, "local2/app:v1")
        .await
        .expect_err("other content under an immutable tag must be refused");
    // skopeo tries other manifest formats after a refusal; none may move the tag either.
    let refusal = format!(
        "tag invalid: tag v1 of local2/app is immutable and names {}",
        first.digest
    );
    assert!(moved.contains(&refusal), "{moved}");
    site.clock.mark(&format!(
        "other content under the immutable local2/app:v1: {refusal}"
    ));
    site.pull_back(first, "local2/app:v1").await;
}
