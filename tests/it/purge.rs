//! `regcache cache purge IMAGE[:TAG]` and `POST /admin/purge?image=`: a purged tag is asked
//! upstream at the next pull however long its `tag_ttl`, a whole repository can be purged, the
//! command works on a stopped directory too, content by digest stays, and the endpoint is
//! guarded like gc.

use std::path::PathBuf;

use crate::support::commands::{command as regcache, stdout};
use crate::support::daemon::{Daemon, DaemonBuilder};
use crate::support::fake::{bytes_of, Fake};

/// The daemon's configuration as the operator's file has it.
fn config_file(d: &Daemon, up: &Fake) -> PathBuf {
    let config = d.dir.path().join("regcache.toml");
    let text = format!(
        "builtin_upstreams = false\n[admin]\nlisten = \"{}\"\n[cache]\ndir = \"{}\"\n\
         [[upstreams]]\nhost = \"docker.io\"\nurl = \"{}\"\ndefault = true\n",
        d.admin_addr,
        d.dir.path().display(),
        up.url()
    );
    std::fs::write(&config, text).unwrap();
    config
}

/// Upstream requests of any method whose path contains `part`.
fn asked(up: &Fake, part: &str) -> usize {
    up.requests().iter().filter(|l| l.path.contains(part)).count()
}

/// The digest a client's `HEAD` of `repo:tag` is answered with.
async fn head_digest(d: &Daemon, repo: &str, tag: &str) -> String {
    let r = d.head(&format!("/v2/{repo}/manifests/{tag}")).await;
    assert_eq!(r.status, 200);
    r.header("docker-content-digest").unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_purged_tag_is_asked_upstream_at_the_next_pull() {
    let up = Fake::start().await;
    let (old, old_bytes, layers) = up.add_image("library/app", "latest", &[bytes_of(10, 1)]);
    let d = DaemonBuilder::new().upstream(&up).tag_ttl("1h").start().await;
    assert_eq!(d.pull("library/app", "latest", &layers).await, old_bytes);
    let (new, new_bytes, _) = up.add_image("library/app", "latest", &[bytes_of(10, 2)]);
    up.clear_log();
    let r = d.get("/v2/library/app/manifests/latest").await;
    assert_eq!(
        r.header("docker-content-digest"),
        Some(old.as_str()),
        "fresh within tag_ttl"
    );
    assert_eq!(asked(&up, "/manifests/"), 0);

    let config = config_file(&d, &up);
    let text = stdout(&regcache(&["cache", "purge", "app:latest"], &config));
    assert!(
        text.contains("dropped 1 tag records of docker.io/library/app:latest"),
        "{text}"
    );
    assert!(text.contains("answered by the running daemon at"), "{text}");
    assert!(!d
        .dir
        .path()
        .join("tags/docker.io/library/app/@tags/latest")
        .exists());

    // A client's pull: HEAD by tag, then GET by digest.
    up.clear_log();
    assert_eq!(head_digest(&d, "library/app", "latest").await, new);
    assert_eq!(up.count("HEAD", "/manifests/latest"), 1);
    let r = d.get(&format!("/v2/library/app/manifests/{new}")).await;
    assert_eq!(r.bytes(), new_bytes);
    assert_eq!(up.count("GET", "/manifests/latest"), 0);
    assert_eq!(
        asked(&up, "/manifests/"),
        2,
        "one HEAD, one GET of the new manifest"
    );

    // Content by digest stays: the old manifest and its layers cost nothing upstream.
    up.clear_log();
    assert_eq!(
        d.get(&format!("/v2/library/app/manifests/{old}")).await.bytes(),
        old_bytes
    );
    for l in &layers {
        assert_eq!(d.get(&format!("/v2/library/app/blobs/{l}")).await.status, 200);
    }
    assert_eq!(up.requests().len(), 0);

    // The tag is fresh again: no more upstream requests within tag_ttl.
    assert_eq!(head_digest(&d, "library/app", "latest").await, new);
    assert_eq!(up.requests().len(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_whole_repository_is_purged_and_others_stay_fresh() {
    let up = Fake::start().await;
    let (a1, _, _) = up.add_image("library/app", "v1", &[bytes_of(10, 1)]);
    let (a2, _, _) = up.add_image("library/app", "v2", &[bytes_of(10, 2)]);
    let (o1, _, _) = up.add_image("library/other", "v1", &[bytes_of(10, 3)]);
    let d = DaemonBuilder::new().upstream(&up).tag_ttl("1h").start().await;
    for (repo, tag, digest) in [("app", "v1", &a1), ("app", "v2", &a2), ("other", "v1", &o1)] {
        assert_eq!(head_digest(&d, &format!("library/{repo}"), tag).await, *digest);
    }
    let (b1, _, _) = up.add_image("library/app", "v1", &[bytes_of(10, 4)]);
    let (b2, _, _) = up.add_image("library/app", "v2", &[bytes_of(10, 5)]);
    up.add_image("library/other", "v1", &[bytes_of(10, 6)]);

    let r = d.admin_post("/admin/purge?image=docker.io%2Flibrary%2Fapp").await;
    assert_eq!(r.status, 200);
    let report: serde_json::Value = serde_json::from_slice(&r.bytes()).unwrap();
    assert_eq!(report["upstream"], "docker.io");
    assert_eq!(report["repository"], "library/app");
    assert_eq!(report["tag"], serde_json::Value::Null);
    assert_eq!(report["removed"], 2);

    up.clear_log();
    assert_eq!(head_digest(&d, "library/app", "v1").await, b1);
    assert_eq!(head_digest(&d, "library/app", "v2").await, b2);
    assert_eq!(head_digest(&d, "library/other", "v1").await, o1, "not purged");
    assert_eq!(up.count("HEAD", "/manifests/"), 2);
    assert_eq!(asked(&up, "/library/other/"), 0);

    assert_eq!(
        d.admin("/admin/purge?image=app").await.status,
        405,
        "purge wants POST"
    );
    assert_eq!(d.admin_post("/admin/purge").await.status, 400);
    assert_eq!(
        d.admin_post("/admin/purge?image=app%40sha256%3Aab").await.status,
        400
    );
    assert_eq!(d.admin_post("/admin/purge?image=quay.io%2Fapp").await.status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purge_on_a_stopped_directory() {
    let up = Fake::start().await;
    let (old, _, _) = up.add_image("library/app", "latest", &[bytes_of(10, 1)]);
    up.add_image("library/app", "stable", &[bytes_of(10, 2)]);
    let d = DaemonBuilder::new().upstream(&up).tag_ttl("1h").start().await;
    assert_eq!(head_digest(&d, "library/app", "latest").await, old);
    head_digest(&d, "library/app", "stable").await;
    let config = config_file(&d, &up);
    let dir = d.stop().await;

    let out = regcache(&["cache", "purge", "localhost:5000/app:latest"], &config);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no upstream is configured for host localhost:5000"),
        "{err}"
    );

    let out = stdout(&regcache(
        &["cache", "purge", "--json", "library/app:latest"],
        &config,
    ));
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["removed"], 1);
    assert_eq!(report["tag"], "latest");
    let text = stdout(&regcache(&["cache", "purge", "docker.io/app:latest"], &config));
    assert!(text.contains("dropped 0 tag records"), "{text}");
    assert!(text.contains("read from the directory"), "{text}");
    assert!(!dir
        .path()
        .join("tags/docker.io/library/app/@tags/latest")
        .exists());
    assert!(dir
        .path()
        .join("tags/docker.io/library/app/@tags/stable")
        .exists());

    let (new, _, _) = up.add_image("library/app", "latest", &[bytes_of(10, 3)]);
    let d = DaemonBuilder::new()
        .upstream(&up)
        .tag_ttl("1h")
        .in_dir(dir)
        .start()
        .await;
    up.clear_log();
    assert_eq!(head_digest(&d, "library/app", "latest").await, new);
    assert_eq!(up.count("HEAD", "/manifests/latest"), 1);
}

#[tokio::test]
async fn purge_is_guarded_like_gc() {
    let up = Fake::start().await;
    let d = DaemonBuilder::new()
        .upstream(&up)
        .admin_listen("0.0.0.0:0")
        .start()
        .await;
    let r = d.admin_post("/admin/purge?image=app").await;
    assert_eq!(r.status, 403);
    assert!(String::from_utf8_lossy(&r.bytes()).contains("token_file"));

    let secrets = tempfile::tempdir().unwrap();
    let token_file = secrets.path().join("admin-token");
    std::fs::write(&token_file, "correct-horse-battery\n").unwrap();
    let d = DaemonBuilder::new()
        .upstream(&up)
        .admin_listen("0.0.0.0:0")
        .admin_token_file(&token_file)
        .start()
        .await;
    assert_eq!(d.admin_post("/admin/purge?image=app").await.status, 401);
    let right = [("authorization", "Bearer correct-horse-battery")];
    let r = d.admin_with("POST", "/admin/purge?image=app", &right).await;
    assert_eq!(r.status, 200);
}
