//! `regcache prefetch` and `regcache unpin`, run as the binary against a daemon in-process (they
//! go through `POST /admin/prefetch` and `POST /admin/unpin`), and on the directory of a stopped
//! daemon: prefetched content is served with no upstream request, also while the upstream is
//! down; `--platform` takes only that platform of an index; a failed image fails the command
//! while the others are fetched; `--from-manifests` fetches what deployment manifests name;
//! `--pin` keeps content through a gc to nothing until unpinned.

use std::path::{Path, PathBuf};
use std::process::Output;

use crate::support::commands::{command as regcache, ok, operator_config, text};
use crate::support::daemon::{Daemon, DaemonBuilder};
use crate::support::fake::{bytes_of, Fake, Fault};

const INDEX: &str = "application/vnd.oci.image.index.v1+json";
const MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

/// The operator's config file for the daemon `d` (its admin listener, its cache directory and
/// the fake upstream as docker.io).
fn config_for(dir: &Path, admin: &str, up: &Fake) -> PathBuf {
    operator_config(dir, admin, &up.url(), false)
}

fn config(d: &Daemon, up: &Fake) -> PathBuf {
    config_for(d.dir.path(), &d.admin_addr.to_string(), up)
}

fn blob_file(dir: &Path, digest: &str) -> PathBuf {
    dir.join("blobs/sha256")
        .join(digest.trim_start_matches("sha256:"))
}

/// The JSON events `--json` printed.
fn events(o: &Output) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prefetched_image_is_pulled_without_the_upstream() {
    let up = Fake::start().await;
    let (_, _, layers) = up.add_image("library/app", "1", &[bytes_of(50_000, 1), bytes_of(70_000, 2)]);
    let d = DaemonBuilder::new().upstream(&up).start().await;
    let config = config(&d, &up);

    let out = ok(&regcache(&["prefetch", "app:1"], &config));
    assert!(out.contains("pulling app:1: 3/3 blobs"), "{out}");
    assert!(out.contains("done app:1: 3 blobs"), "{out}");
    assert!(out.contains("1 images, 0 failed"), "{out}");
    assert!(out.contains("running daemon"), "{out}");
    for l in &layers {
        assert_eq!(up.count("GET", l), 1, "{l} fetched once");
        assert!(blob_file(d.dir.path(), l).exists(), "{l} kept");
    }

    // Every later pull is served from the cache: not one upstream request.
    up.clear_log();
    d.pull("library/app", "1", &layers).await;
    assert_eq!(up.requests().len(), 0, "{:?}", up.requests());
    up.set_fault(Some(Fault::Down(503)));
    d.pull("library/app", "1", &layers).await;
    assert_eq!(up.requests().len(), 0, "{:?}", up.requests());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_asked_platform_of_an_index_is_fetched() {
    let up = Fake::start().await;
    let repo = "library/multi";
    let mut children = Vec::new();
    let mut layers = Vec::new();
    for (i, arch) in ["amd64", "arm64"].into_iter().enumerate() {
        let config = up.add_blob(repo, format!("{{\"architecture\":\"{arch}\",\"os\":\"linux\"}}"));
        let layer = up.add_blob(repo, bytes_of(40_000, 10 + i as u64));
        let manifest = format!(
            r#"{{"schemaVersion":2,"mediaType":"{MANIFEST}","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{config}","size":40}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"{layer}","size":40000}}]}}"#
        );
        let digest = up.add_manifest(repo, None, MANIFEST, manifest.clone());
        children.push(format!(
            r#"{{"mediaType":"{MANIFEST}","digest":"{digest}","size":{},"platform":{{"architecture":"{arch}","os":"linux"}}}}"#,
            manifest.len()
        ));
        layers.push((config, layer, digest));
    }
    let index = format!(
        r#"{{"schemaVersion":2,"mediaType":"{INDEX}","manifests":[{}]}}"#,
        children.join(",")
    );
    up.add_manifest(repo, Some("2"), INDEX, index);
    let d = DaemonBuilder::new().upstream(&up).start().await;
    let config = config(&d, &up);

    let o = regcache(
        &["prefetch", "--platform", "linux/arm64", "--json", "multi:2"],
        &config,
    );
    assert!(o.status.success(), "{}", text(&o));
    let events = events(&o);
    let done = events
        .iter()
        .find(|e| e["event"] == "done")
        .expect("a done event");
    assert_eq!(done["platforms"], serde_json::json!(["linux/arm64"]));
    assert_eq!(done["blobs"], 2);
    assert_eq!(events.last().unwrap()["event"], "summary");
    assert_eq!(events.last().unwrap()["failed"], 0);
    let (amd_config, amd_layer, amd_manifest) = &layers[0];
    let (arm_config, arm_layer, arm_manifest) = &layers[1];
    for b in [arm_config, arm_layer] {
        assert_eq!(up.count("GET", b), 1, "arm64's {b}");
        assert!(blob_file(d.dir.path(), b).exists());
    }
    for b in [amd_config, amd_layer, amd_manifest] {
        assert_eq!(up.count("GET", b), 0, "amd64's {b} is not fetched");
    }
    assert_eq!(up.count("GET", arm_manifest), 1);

    // A platform the index lacks is a failure that names what it offers.
    let o = regcache(&["prefetch", "--platform", "linux/s390x", "multi:2"], &config);
    assert!(!o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("linux/amd64, linux/arm64"), "{}", text(&o));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_image_fails_the_command_and_the_others_are_fetched() {
    let up = Fake::start().await;
    let (_, _, good) = up.add_image("library/good", "1", &[bytes_of(30_000, 3)]);
    let (_, _, also) = up.add_image("library/also", "1", &[bytes_of(30_000, 4)]);
    let d = DaemonBuilder::new().upstream(&up).start().await;
    let config = config(&d, &up);
    let list = d.dir.path().join("images.txt");
    std::fs::write(&list, "# the set\ngood:1\n\nnope:missing   # not there\n").unwrap();

    let o = regcache(
        &[
            "prefetch",
            "-f",
            list.to_str().unwrap(),
            "docker.io/library/also:1",
        ],
        &config,
    );
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(out.contains("failed nope:missing"), "{out}");
    assert!(out.contains("3 images, 1 failed"), "{out}");
    let failed_row = out
        .lines()
        .find(|l| l.starts_with("nope:missing"))
        .expect("a row");
    assert!(failed_row.contains("failed:"), "{out}");
    for l in good.iter().chain(&also) {
        assert!(blob_file(d.dir.path(), l).exists(), "{l} kept\n{out}");
    }
    let good_row = out.lines().find(|l| l.starts_with("good:1")).expect("a row");
    assert!(good_row.ends_with(" ok"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_images_of_deployment_manifests_are_fetched() {
    let up = Fake::start().await;
    let (_, _, web) = up.add_image("library/web", "1", &[bytes_of(20_000, 5)]);
    let (_, _, init) = up.add_image("org/init", "2", &[bytes_of(20_000, 6)]);
    let d = DaemonBuilder::new().upstream(&up).start().await;
    let config = config(&d, &up);
    let manifests = d.dir.path().join("deploy.yaml");
    std::fs::write(
        &manifests,
        "kind: Deployment\nspec:\n  template:\n    spec:\n      initContainers:\n      - name: init\n        \
         image: \"org/init:2\"\n      containers:\n      - image: web:1  # the app\n        name: web\n\
         ---\nservices:\n  web:\n    image: web:1\n  other:\n    image: \"{{ .Values.image }}\"\n",
    )
    .unwrap();

    let o = regcache(
        &["prefetch", "--from-manifests", manifests.to_str().unwrap()],
        &config,
    );
    assert!(o.status.success(), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("deploy.yaml: 2 images (1 unrendered template values skipped)"),
        "{err}"
    );
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(out.contains("2 images, 0 failed"), "{out}");
    for l in web.iter().chain(&init) {
        assert!(blob_file(d.dir.path(), l).exists(), "{l} kept\n{out}");
    }

    // A directory (a GitOps repository) stands for the manifest files below it.
    let repo = d.dir.path().join("gitops/apps");
    std::fs::create_dir_all(&repo).unwrap();
    std::fs::copy(&manifests, repo.join("web.yml")).unwrap();
    let top = d.dir.path().join("gitops");
    let o = regcache(&["prefetch", "--from-manifests", top.to_str().unwrap()], &config);
    assert!(o.status.success(), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("gitops: 2 images in 1 files"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pinned_content_survives_gc_until_unpinned() {
    let up = Fake::start().await;
    let (_, _, kept) = up.add_image("library/kept", "1", &[bytes_of(60_000, 5), bytes_of(20_000, 6)]);
    let (_, _, loose) = up.add_image("library/loose", "1", &[bytes_of(60_000, 7)]);
    let d = DaemonBuilder::new().upstream(&up).start().await;
    let config = config(&d, &up);

    let out = ok(&regcache(&["prefetch", "--pin", "kept:1"], &config));
    assert!(out.contains("ok, pinned"), "{out}");
    ok(&regcache(&["prefetch", "loose:1"], &config));
    assert_eq!(d.admin_post("/admin/gc?to=0").await.status, 200);
    for l in &kept {
        assert!(blob_file(d.dir.path(), l).exists(), "pinned {l} kept");
    }
    for l in &loose {
        assert!(!blob_file(d.dir.path(), l).exists(), "unpinned {l} evicted");
    }
    // The tag record and links stay with the pins: the image is served without the upstream.
    up.clear_log();
    up.set_fault(Some(Fault::Down(503)));
    d.pull("library/kept", "1", &kept).await;
    assert_eq!(up.requests().len(), 0, "{:?}", up.requests());

    let out = ok(&regcache(&["unpin", "kept:1"], &config));
    assert!(out.contains("unpinned docker.io/library/kept"), "{out}");
    assert!(out.contains("3 blobs"), "{out}");
    assert_eq!(d.admin_post("/admin/gc?to=0").await.status, 200);
    for l in &kept {
        assert!(!blob_file(d.dir.path(), l).exists(), "unpinned {l} evicted");
    }
    // An image with no cached tag record cannot be unpinned: a clear error.
    let o = regcache(&["unpin", "never:1"], &config);
    assert!(!o.status.success());
    assert!(text(&o).contains("no cached tag record"), "{}", text(&o));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_daemon_prefetch_fills_the_directory_itself() {
    let up = Fake::start().await;
    let (_, _, layers) = up.add_image("library/app", "1", &[bytes_of(50_000, 8)]);
    let d = DaemonBuilder::new().upstream(&up).start().await;
    let dir = d.stop().await;
    let config = config_for(dir.path(), "127.0.0.1:1", &up);

    let out = ok(&regcache(&["prefetch", "--pin", "app:1"], &config));
    assert!(out.contains("no daemon running"), "{out}");
    assert!(out.contains("ok, pinned"), "{out}");

    // An offline daemon on that directory serves the image.
    up.clear_log();
    let d = DaemonBuilder::new()
        .upstream(&up)
        .offline()
        .in_dir(dir)
        .start()
        .await;
    d.pull("library/app", "1", &layers).await;
    assert_eq!(up.requests().len(), 0, "{:?}", up.requests());
    assert_eq!(d.admin_post("/admin/gc?to=0").await.status, 200);
    assert!(blob_file(d.dir.path(), &layers[0]).exists(), "the pin persisted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn referrers_come_along_when_asked_for() {
    let up = Fake::start().await;
    let repo = "library/signed";
    let (digest, manifest, _) = up.add_image(repo, "1", &[bytes_of(20_000, 9)]);
    let sig_config = up.add_blob(repo, "{}");
    let sig_layer = up.add_blob(repo, bytes_of(500, 10));
    let signature = format!(
        r#"{{"schemaVersion":2,"mediaType":"{MANIFEST}","artifactType":"application/vnd.dev.cosign.artifact.sig.v1+json","config":{{"mediaType":"application/vnd.oci.empty.v1+json","digest":"{sig_config}","size":2}},"layers":[{{"mediaType":"application/vnd.dev.cosign.simplesigning.v1+json","digest":"{sig_layer}","size":500}}],"subject":{{"mediaType":"{MANIFEST}","digest":"{digest}","size":{}}}}}"#,
        manifest.len()
    );
    let sig = up.add_referrer(repo, MANIFEST, signature);
    let d = DaemonBuilder::new().upstream(&up).start().await;
    let config = config(&d, &up);

    ok(&regcache(&["prefetch", "signed:1"], &config));
    assert_eq!(up.count("GET", &sig_layer), 0, "no referrers unless asked for");
    let o = regcache(
        &["prefetch", "--referrers", "--pin", "--json", "signed:1"],
        &config,
    );
    assert!(o.status.success(), "{}", text(&o));
    let done = events(&o)
        .into_iter()
        .find(|e| e["event"] == "done")
        .expect("a done event");
    assert_eq!(done["manifests"], 2, "{done}");
    assert_eq!(up.count("GET", &sig), 1);
    assert_eq!(up.count("GET", &sig_layer), 1);
    assert_eq!(d.admin_post("/admin/gc?to=0").await.status, 200);
    assert!(
        blob_file(d.dir.path(), &sig_layer).exists(),
        "the signature is pinned too"
    );
}

#[tokio::test]
async fn the_endpoint_is_guarded_and_checks_its_body() {
    let secrets = tempfile::tempdir().unwrap();
    let token_file = secrets.path().join("admin-token");
    std::fs::write(&token_file, "s3cret\n").unwrap();
    let up = Fake::start().await;
    let d = DaemonBuilder::new()
        .upstream(&up)
        .admin_token_file(&token_file)
        .start()
        .await;
    assert_eq!(d.admin("/admin/prefetch").await.status, 405);
    assert_eq!(d.admin_post("/admin/prefetch").await.status, 401);
    assert_eq!(d.admin_post("/admin/unpin?image=app:1").await.status, 401);
    let auth = [("authorization", "Bearer s3cret")];
    let r = d.admin_with("POST", "/admin/prefetch", &auth).await;
    assert_eq!(r.status, 400, "an empty body is no request");
    let r = d.admin_with("POST", "/admin/unpin?image=app:1", &auth).await;
    assert_eq!(r.status, 404, "nothing cached to unpin");
    assert_eq!(up.requests().len(), 0);
}
