//! Hosted repositories (`[[hosted]]`): tag, push, pull on the same endpoint that mirrors an
//! upstream. A user with write access pushes blobs (monolithic, and in chunks) and manifests to
//! `local/...`, and everyone who may read pulls them back byte for byte, by tag and by digest;
//! tags are listed; a delete by digest makes the manifest unknown; pushes need write access
//! (anonymous: 401, a reader: 403), never reach a mirrored namespace (405), and follow the
//! namespace's policies (`create_on_push = false`, `immutable_tags`). Hosted content is pinned:
//! a gc to nothing keeps it. The distribution spec's push, discovery and management workflows
//! run in full in `hosted/spec.rs`.

use base64::Engine as _;
use toml::{Table, Value};

use crate::support::daemon::{Daemon, DaemonBuilder, Reply};
use crate::support::fake::{bytes_of, sha256, Fake};

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

fn basic(user: &str, password: &str) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    format!("Basic {b64}")
}

/// A daemon with the fake upstream as docker.io and hosted namespaces `local` (create on push)
/// `strict` (`create_on_push = false`, `immutable_tags`) and `small` (`max_size` 50,000 bytes);
/// `writer` may push to all, `reader` only read; anonymous clients read.
async fn daemon(up: &Fake, dir: &tempfile::TempDir) -> Daemon {
    let htpasswd = dir.path().join("htpasswd");
    let lines: Vec<String> = ["writer", "reader"]
        .iter()
        .map(|u| format!("{u}:{}", bcrypt::hash(format!("{u}-pw"), 4).unwrap()))
        .collect();
    std::fs::write(&htpasswd, lines.join("\n") + "\n").unwrap();
    let auth = Table::from_iter([(
        "htpasswd_file".to_string(),
        Value::from(htpasswd.display().to_string()),
    )]);
    let rule = |ns: &str| {
        Value::from(Table::from_iter([
            ("repository".to_string(), Value::from(format!("{ns}/**"))),
            ("read".to_string(), Value::from(vec!["anonymous"])),
            ("write".to_string(), Value::from(vec!["writer"])),
        ]))
    };
    let hosted = |prefix: &str, strict: bool| {
        Value::from(Table::from_iter([
            ("prefix".to_string(), Value::from(prefix)),
            ("create_on_push".to_string(), Value::from(!strict)),
            ("immutable_tags".to_string(), Value::from(strict)),
        ]))
    };
    let mut small = Table::from_iter([("prefix".to_string(), Value::from("small"))]);
    small.insert("max_size".to_string(), Value::from(50_000));
    DaemonBuilder::new()
        .upstream(up)
        .toml_entry("auth", auth)
        .toml_entry("access", vec![rule("local"), rule("strict"), rule("small")])
        .toml_entry(
            "hosted",
            vec![hosted("local", false), hosted("strict", true), Value::from(small)],
        )
        .start()
        .await
}

const WRITER: (&str, &str) = ("writer", "writer-pw");

async fn push_blob(d: &Daemon, repo: &str, bytes: &[u8]) -> Reply {
    let auth = basic(WRITER.0, WRITER.1);
    let path = format!("/v2/{repo}/blobs/uploads/?digest={}", sha256(bytes));
    d.request_body("POST", &path, &[("authorization", &auth)], bytes.to_vec())
        .await
}

/// An OCI image manifest of `config` and `layers` (bytes).
fn manifest(config: &[u8], layers: &[&[u8]]) -> String {
    let layers: Vec<String> = layers
        .iter()
        .map(|l| {
            format!(
                r#"{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"{}","size":{}}}"#,
                sha256(l),
                l.len()
            )
        })
        .collect();
    format!(
        r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{}","size":{}}},"layers":[{}]}}"#,
        sha256(config),
        config.len(),
        layers.join(",")
    )
}

async fn put_manifest(d: &Daemon, repo: &str, reference: &str, body: &str, who: (&str, &str)) -> Reply {
    let auth = basic(who.0, who.1);
    d.request_body(
        "PUT",
        &format!("/v2/{repo}/manifests/{reference}"),
        &[("authorization", &auth), ("content-type", OCI_MANIFEST)],
        body.to_string(),
    )
    .await
}

/// Pushes a one-layer image to `repo:tag`; returns (manifest, layer).
async fn push_image(d: &Daemon, repo: &str, tag: &str, seed: u64) -> (String, Vec<u8>) {
    let config = format!(r#"{{"architecture":"amd64","os":"linux","seed":{seed}}}"#).into_bytes();
    let layer = bytes_of(30_000, seed);
    for b in [&config, &layer] {
        let r = push_blob(d, repo, b).await;
        assert_eq!(r.status, 201, "{:?}", r.body);
        assert_eq!(r.header("docker-content-digest"), Some(sha256(b).as_str()));
    }
    let m = manifest(&config, &[&layer]);
    let r = put_manifest(d, repo, tag, &m, WRITER).await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    assert_eq!(
        r.header("docker-content-digest"),
        Some(sha256(m.as_bytes()).as_str())
    );
    (m, layer)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_then_pull_by_tag_and_digest() {
    let (up, dir) = (Fake::start().await, tempfile::tempdir().unwrap());
    let d = daemon(&up, &dir).await;
    let (m, layer) = push_image(&d, "local/team/app", "v1", 1).await;
    let digest = sha256(m.as_bytes());

    let by_tag = d.get("/v2/local/team/app/manifests/v1").await;
    assert_eq!(by_tag.status, 200);
    assert_eq!(by_tag.bytes(), m.as_bytes());
    assert_eq!(by_tag.header("content-type"), Some(OCI_MANIFEST));
    let by_digest = d.get(&format!("/v2/local/team/app/manifests/{digest}")).await;
    assert_eq!(by_digest.bytes(), m.as_bytes());
    let blob = d
        .get(&format!("/v2/local/team/app/blobs/{}", sha256(&layer)))
        .await;
    assert_eq!(blob.status, 200);
    assert_eq!(blob.bytes(), layer);
    let tags = d.get("/v2/local/team/app/tags/list").await;
    let tags: serde_json::Value = serde_json::from_slice(&tags.bytes()).unwrap();
    assert_eq!(tags["tags"], serde_json::json!(["v1"]), "{tags}");
    assert_eq!(up.requests().len(), 0, "a hosted name never reaches the upstream");

    // Pinned: a gc to nothing keeps hosted content.
    assert_eq!(d.admin_post("/admin/gc?to=0").await.status, 200);
    assert_eq!(
        d.get("/v2/local/team/app/manifests/v1").await.bytes(),
        m.as_bytes()
    );
    assert_eq!(
        d.get(&format!("/v2/local/team/app/blobs/{}", sha256(&layer)))
            .await
            .bytes(),
        layer
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunked_upload_is_checked_in_order_and_by_digest() {
    let (up, dir) = (Fake::start().await, tempfile::tempdir().unwrap());
    let d = daemon(&up, &dir).await;
    let auth = basic(WRITER.0, WRITER.1);
    let blob = bytes_of(100_000, 9);
    let started = d
        .request_body(
            "POST",
            "/v2/local/app/blobs/uploads/",
            &[("authorization", &auth)],
            Vec::new(),
        )
        .await;
    assert_eq!(started.status, 202, "{:?}", started.body);
    let location = started.header("location").unwrap().to_string();
    let chunk = |from: usize, to: usize| {
        let range = format!("{from}-{}", to - 1);
        (blob[from..to].to_vec(), range)
    };
    let (first, range) = chunk(0, 60_000);
    let r = d
        .request_body(
            "PATCH",
            &location,
            &[("authorization", &auth), ("content-range", &range)],
            first,
        )
        .await;
    assert_eq!(r.status, 202, "{:?}", r.body);
    assert_eq!(r.header("range"), Some("0-59999"));
    // Out of order: refused, and the upload goes on from where it stands.
    let (skipped, range) = chunk(70_000, 100_000);
    let r = d
        .request_body(
            "PATCH",
            &location,
            &[("authorization", &auth), ("content-range", &range)],
            skipped,
        )
        .await;
    assert_eq!(r.status, 416, "{:?}", r.body);
    let status = d.request("GET", &location, &[("authorization", &auth)]).await;
    assert_eq!(
        (status.status.as_u16(), status.header("range")),
        (204, Some("0-59999"))
    );
    let (rest, range) = chunk(60_000, 100_000);
    let r = d
        .request_body(
            "PATCH",
            &location,
            &[("authorization", &auth), ("content-range", &range)],
            rest,
        )
        .await;
    assert_eq!(r.status, 202);
    // A wrong digest is refused; a right one finishes (in another upload: a refused one ends).
    let wrong = format!("{location}?digest={}", sha256(b"other"));
    let r = d
        .request_body("PUT", &wrong, &[("authorization", &auth)], Vec::new())
        .await;
    assert_eq!(r.status, 400);
    assert!(r.error_code().contains("DIGEST_INVALID"), "{:?}", r.body);
    let r = push_blob(&d, "local/app", &blob).await;
    assert_eq!(r.status, 201);
    assert_eq!(
        d.get(&format!("/v2/local/app/blobs/{}", sha256(&blob)))
            .await
            .bytes(),
        blob
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushes_need_write_access_and_a_hosted_namespace() {
    let (up, dir) = (Fake::start().await, tempfile::tempdir().unwrap());
    let d = daemon(&up, &dir).await;
    let blob = b"hello".to_vec();
    let path = format!("/v2/local/app/blobs/uploads/?digest={}", sha256(&blob));
    let anonymous = d.request_body("POST", &path, &[], blob.clone()).await;
    assert_eq!(anonymous.status, 401);
    let reader = basic("reader", "reader-pw");
    let r = d
        .request_body("POST", &path, &[("authorization", &reader)], blob.clone())
        .await;
    assert_eq!(r.status, 403);
    // A mirrored namespace is read-only whoever asks.
    let writer = basic(WRITER.0, WRITER.1);
    let mirror = format!("/v2/library/app/blobs/uploads/?digest={}", sha256(&blob));
    let r = d
        .request_body("POST", &mirror, &[("authorization", &writer)], blob.clone())
        .await;
    assert_eq!(r.status, 405);
    assert_eq!(up.requests().len(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespace_policies_hold() {
    let (up, dir) = (Fake::start().await, tempfile::tempdir().unwrap());
    let d = daemon(&up, &dir).await;
    // `create_on_push = false`: no such repository until it is created.
    let r = push_blob(&d, "strict/app", b"layer").await;
    assert_eq!(r.status, 404, "{:?}", r.body);
    assert!(r.error_code().contains("NAME_UNKNOWN"), "{:?}", r.body);
    assert!(
        String::from_utf8_lossy(&r.bytes()).contains("regcache repo create strict/app"),
        "{:?}",
        r.body
    );
    // A manifest with a blob the repository does not hold is refused.
    let (m, _) = push_image(&d, "local/app", "v1", 2).await;
    let elsewhere = put_manifest(&d, "local/other", "v1", &m, WRITER).await;
    assert_eq!(elsewhere.status, 400);
    assert!(
        elsewhere.error_code().contains("MANIFEST_BLOB_UNKNOWN"),
        "{:?}",
        elsewhere.body
    );
    // Deleting by digest makes the manifest unknown, by tag and by digest.
    let digest = sha256(m.as_bytes());
    let writer = basic(WRITER.0, WRITER.1);
    let r = d
        .request(
            "DELETE",
            &format!("/v2/local/app/manifests/{digest}"),
            &[("authorization", &writer)],
        )
        .await;
    assert_eq!(r.status, 202);
    for reference in ["v1", digest.as_str()] {
        let r = d.get(&format!("/v2/local/app/manifests/{reference}")).await;
        assert_eq!(r.status, 404, "{reference}");
        assert!(r.error_code().contains("MANIFEST_UNKNOWN"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn immutable_tags_never_move() {
    let (up, dir) = (Fake::start().await, tempfile::tempdir().unwrap());
    let d = daemon(&up, &dir).await;
    // `regcache repo create`, the binary, through the running daemon.
    let config = d.dir.path().join("cli.toml");
    std::fs::write(
        &config,
        format!(
            "builtin_upstreams = false\n[admin]\nlisten = \"{}\"\n[cache]\ndir = \"{}\"\n\
             [[upstreams]]\nhost = \"docker.io\"\nurl = \"{}\"\ndefault = true\n",
            d.admin_addr,
            d.dir.path().display(),
            up.url()
        ),
    )
    .unwrap();
    let out = crate::support::commands::command(&["repo", "create", "strict/app"], &config);
    assert!(out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("created strict/app"),
        "{out:?}"
    );
    // A name outside every hosted namespace is refused.
    let r = regcache_repo_create(&d, "library/app").await;
    assert_eq!(r.status, 400, "{:?}", r.body);
    let (first, _) = push_image(&d, "strict/app", "v1", 3).await;
    // The same content again is fine; other content under the tag is refused.
    assert_eq!(
        put_manifest(&d, "strict/app", "v1", &first, WRITER).await.status,
        201
    );
    let config = br#"{"architecture":"amd64","os":"linux","seed":4}"#;
    let layer = bytes_of(30_000, 4);
    push_blob(&d, "strict/app", config).await;
    push_blob(&d, "strict/app", &layer).await;
    let other = manifest(config, &[&layer]);
    let r = put_manifest(&d, "strict/app", "v1", &other, WRITER).await;
    assert_eq!(r.status, 400, "{:?}", r.body);
    assert!(r.error_code().contains("TAG_INVALID"), "{:?}", r.body);
    assert_eq!(
        d.get("/v2/strict/app/manifests/v1").await.bytes(),
        first.as_bytes()
    );
    assert_eq!(
        put_manifest(&d, "strict/app", "v2", &other, WRITER).await.status,
        201
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_distribution_spec_push_discovery_and_management_workflows_pass() {
    use crate::support::push_spec::{run_all, Target};
    let (up, dir) = (Fake::start().await, tempfile::tempdir().unwrap());
    let d = daemon(&up, &dir).await;
    let target = Target {
        auth_header: Some(basic(WRITER.0, WRITER.1)),
        ..Target::conformant(&format!("http://{}", d.addr), "local/spec/one", "local/spec/two")
    };
    let report = run_all(&target).await;
    println!("{report}");
    assert_eq!(up.requests().len(), 0, "a hosted name never reaches the upstream");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gc_hosted_deletes_what_no_repository_holds_and_spares_uploads() {
    let (up, dir) = (Fake::start().await, tempfile::tempdir().unwrap());
    let (_, _, mirrored) = up.add_image("library/base", "1", &[bytes_of(20_000, 50)]);
    let d = daemon(&up, &dir).await;
    d.pull("library/base", "1", &mirrored).await;
    let (old, old_layer) = push_image(&d, "local/app", "v1", 5).await;
    let (new, new_layer) = push_image(&d, "local/app", "v2", 6).await;
    let writer = basic(WRITER.0, WRITER.1);
    // An upload in progress, its first chunk in.
    let started = d
        .request_body(
            "POST",
            "/v2/local/app/blobs/uploads/",
            &[("authorization", &writer)],
            Vec::new(),
        )
        .await;
    let upload = started.header("location").unwrap().to_string();
    let pending = bytes_of(10_000, 7);
    let r = d
        .request_body(
            "PATCH",
            &upload,
            &[("authorization", &writer), ("content-range", "0-4999")],
            pending[..5000].to_vec(),
        )
        .await;
    assert_eq!(r.status, 202);
    // v1 goes: its manifest, and its layer (the config too: only v1 named it).
    let old_config = serde_json::from_str::<serde_json::Value>(&old).unwrap()["config"]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    for path in [
        format!("/v2/local/app/manifests/{}", sha256(old.as_bytes())),
        format!("/v2/local/app/blobs/{}", sha256(&old_layer)),
        format!("/v2/local/app/blobs/{old_config}"),
    ] {
        assert_eq!(
            d.request("DELETE", &path, &[("authorization", &writer)])
                .await
                .status,
            202,
            "{path}"
        );
    }
    let gc = d.admin_post("/admin/gc?hosted=true").await;
    assert_eq!(gc.status, 200);
    let report: serde_json::Value = serde_json::from_slice(&gc.bytes()).unwrap();
    assert_eq!(report["released"]["deleted"], 3, "{report}");
    let file = |digest: &str| {
        d.dir
            .path()
            .join("blobs/sha256")
            .join(digest.trim_start_matches("sha256:"))
    };
    assert!(
        !file(&sha256(&old_layer)).exists(),
        "the deleted layer's file is gone"
    );
    assert!(file(&sha256(&new_layer)).exists());
    assert_eq!(d.get("/v2/local/app/manifests/v2").await.bytes(), new.as_bytes());
    assert_eq!(
        d.get(&format!("/v2/local/app/blobs/{}", sha256(&new_layer)))
            .await
            .bytes(),
        new_layer
    );
    d.pull("library/base", "1", &mirrored).await;
    // The upload goes on where it stood.
    let done = format!("{upload}?digest={}", sha256(&pending));
    let r = d
        .request_body(
            "PUT",
            &done,
            &[("authorization", &writer), ("content-range", "5000-9999")],
            pending[5000..].to_vec(),
        )
        .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    assert_eq!(
        d.get(&format!("/v2/local/app/blobs/{}", sha256(&pending)))
            .await
            .bytes(),
        pending
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gc_hosted_unlinks_blobs_no_manifest_names_once_idle() {
    let (up, dir) = (Fake::start().await, tempfile::tempdir().unwrap());
    let d = daemon(&up, &dir).await;
    let (old, old_layer) = push_image(&d, "local/app", "v1", 8).await;
    let (new, new_layer) = push_image(&d, "local/app", "v2", 9).await;
    let orphan = bytes_of(7_000, 10);
    assert_eq!(push_blob(&d, "local/app", &orphan).await.status, 201);
    let writer = basic(WRITER.0, WRITER.1);
    let path = format!("/v2/local/app/manifests/{}", sha256(old.as_bytes()));
    assert_eq!(
        d.request("DELETE", &path, &[("authorization", &writer)])
            .await
            .status,
        202
    );
    // Within the grace period the unreferenced blobs stay: they may be a push in progress.
    let gc: serde_json::Value =
        serde_json::from_slice(&d.admin_post("/admin/gc?hosted=true").await.bytes()).unwrap();
    assert_eq!(gc["released"]["deleted"], 1, "only the deleted manifest: {gc}");
    assert_eq!(
        d.get(&format!("/v2/local/app/blobs/{}", sha256(&orphan)))
            .await
            .status,
        200
    );
    // Past it, every blob no manifest names goes: v1's config and layer, and the orphan.
    let gc: serde_json::Value =
        serde_json::from_slice(&d.admin_post("/admin/gc?hosted=true&grace=0s").await.bytes()).unwrap();
    assert_eq!(gc["released"]["deleted"], 3, "{gc}");
    for gone in [sha256(&old_layer), sha256(&orphan)] {
        assert_eq!(
            d.get(&format!("/v2/local/app/blobs/{gone}")).await.status,
            404,
            "{gone}"
        );
    }
    assert_eq!(d.get("/v2/local/app/manifests/v2").await.bytes(), new.as_bytes());
    assert_eq!(
        d.get(&format!("/v2/local/app/blobs/{}", sha256(&new_layer)))
            .await
            .bytes(),
        new_layer
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_namespace_quota_refuses_the_push_that_would_pass_it() {
    let (up, dir) = (Fake::start().await, tempfile::tempdir().unwrap());
    let d = daemon(&up, &dir).await;
    push_image(&d, "small/app", "v1", 11).await;
    // The same layer again, in another repository of the namespace, costs nothing.
    let (_, layer) = push_image(&d, "small/copy", "v1", 11).await;
    assert_eq!(layer, bytes_of(30_000, 11));
    let r = push_blob(&d, "small/app", &bytes_of(30_000, 12)).await;
    assert_eq!(r.status, 403, "{:?}", r.body);
    assert!(r.error_code().contains("DENIED"), "{:?}", r.body);
    let text = String::from_utf8_lossy(&r.bytes()).to_string();
    assert!(
        text.contains("max_size") && text.contains("gc --hosted"),
        "{text}"
    );
    // Nothing of the refused push is kept or linked.
    assert_eq!(
        d.get(&format!("/v2/small/app/blobs/{}", sha256(&bytes_of(30_000, 12))))
            .await
            .status,
        404
    );
}

/// `POST /admin/repos?name=` (what `regcache repo create` sends).
async fn regcache_repo_create(d: &Daemon, name: &str) -> Reply {
    d.admin_post(&format!("/admin/repos?name={name}")).await
}

/// A site with users challenges anonymous clients on `GET /v2/` (so `docker login` checks the
/// password) with the token flow alone. Docker Engine's client runs the handler of every
/// challenge it knows; with `Basic` beside `Bearer` its Basic handler failed each request of an
/// anonymous dockerd ("no basic auth credentials") before sending it, so a `registry-mirrors`
/// pull through a site that hosts repositories fell back to Docker Hub.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anonymous_clients_are_offered_only_the_token_flow() {
    let (up, dir) = (Fake::start().await, tempfile::tempdir().unwrap());
    let d = daemon(&up, &dir).await;
    for path in ["/v2/", "/v2/local/app/blobs/uploads/"] {
        let method = if path == "/v2/" { "GET" } else { "POST" };
        let r = d.request(method, path, &[]).await;
        assert_eq!(r.status, 401, "{method} {path}");
        let all: Vec<&str> = r
            .headers
            .get_all("www-authenticate")
            .iter()
            .map(|v| v.to_str().unwrap())
            .collect();
        assert_eq!(all.len(), 1, "{method} {path}: {all:?}");
        assert!(all[0].starts_with("Bearer realm=\"http://"), "{all:?}");
    }
    // The anonymous token dockerd fetches then reads hosted content; Basic still pushes.
    let token = d
        .get("/token?service=regcache&scope=repository:local/app:pull")
        .await;
    assert_eq!(token.status, 200);
    let token: serde_json::Value = serde_json::from_slice(&token.bytes()).unwrap();
    let bearer = format!("Bearer {}", token["token"].as_str().unwrap());
    push_image(&d, "local/app", "v1", 5).await;
    let r = d
        .request("GET", "/v2/local/app/manifests/v1", &[("authorization", &bearer)])
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hosted_images_travel_in_bundles_too() {
    let (up, dir) = (Fake::start().await, tempfile::tempdir().unwrap());
    let d = daemon(&up, &dir).await;
    let (m, layer) = push_image(&d, "local/team/app", "v1", 13).await;
    let config =
        crate::support::commands::operator_config(d.dir.path(), &d.admin_addr.to_string(), &up.url(), false);
    let bundle = dir.path().join("bundle.tar");
    let out = crate::support::commands::command(
        &["export", "-o", bundle.to_str().unwrap(), "local/team/app:v1"],
        &config,
    );
    assert!(out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("local/team/app:v1"),
        "{out:?}"
    );

    // Another site with the same hosted namespace imports it: pinned, served as pushed.
    let other_dir = tempfile::tempdir().unwrap();
    let other = daemon(&up, &other_dir).await;
    let config = crate::support::commands::operator_config(
        other.dir.path(),
        &other.admin_addr.to_string(),
        &up.url(),
        false,
    );
    let out = crate::support::commands::command(&["import", bundle.to_str().unwrap()], &config);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        other.get("/v2/local/team/app/manifests/v1").await.bytes(),
        m.as_bytes()
    );
    assert_eq!(
        other
            .get(&format!("/v2/local/team/app/blobs/{}", sha256(&layer)))
            .await
            .bytes(),
        layer
    );
    let tags: serde_json::Value =
        serde_json::from_slice(&other.get("/v2/local/team/app/tags/list").await.bytes()).unwrap();
    assert_eq!(tags["tags"], serde_json::json!(["v1"]));
    assert_eq!(up.requests().len(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unpinning_a_mirrored_image_keeps_a_layer_a_hosted_image_shares() {
    let (up, dir) = (Fake::start().await, tempfile::tempdir().unwrap());
    let shared = bytes_of(30_000, 14);
    let (_, _, mirrored) = up.add_image("library/base", "1", std::slice::from_ref(&shared));
    let d = daemon(&up, &dir).await;
    let config =
        crate::support::commands::operator_config(d.dir.path(), &d.admin_addr.to_string(), &up.url(), false);
    let out = crate::support::commands::command(&["prefetch", "--pin", "base:1"], &config);
    assert!(out.status.success(), "{out:?}");
    // The same layer pushed to a hosted repository: one copy in the store.
    let (m, layer) = push_image(&d, "local/app", "v1", 14).await;
    assert_eq!(layer, shared);
    let out = crate::support::commands::command(&["unpin", "base:1"], &config);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(d.admin_post("/admin/gc?to=0").await.status, 200);
    // The mirrored image's own config went; the shared layer stayed for the hosted image.
    let file = |digest: &str| {
        d.dir
            .path()
            .join("blobs/sha256")
            .join(digest.trim_start_matches("sha256:"))
    };
    assert!(
        file(&sha256(&shared)).exists(),
        "the shared layer is still pinned"
    );
    assert_eq!(d.get("/v2/local/app/manifests/v1").await.bytes(), m.as_bytes());
    assert_eq!(
        d.get(&format!("/v2/local/app/blobs/{}", sha256(&shared)))
            .await
            .bytes(),
        shared
    );
    assert!(
        mirrored.iter().all(|l| *l == sha256(&shared)),
        "the fake image's one layer is the shared one"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_catalog_lists_hosted_repositories_page_by_page() {
    let (up, dir) = (Fake::start().await, tempfile::tempdir().unwrap());
    let (_, _, mirrored) = up.add_image("library/base", "1", &[bytes_of(1_000, 20)]);
    let d = daemon(&up, &dir).await;
    d.pull("library/base", "1", &mirrored).await;
    for repo in ["local/b", "local/a", "local/team/c"] {
        push_image(&d, repo, "v1", 21).await;
    }
    assert_eq!(regcache_repo_create(&d, "strict/empty").await.status, 200);
    let all: serde_json::Value = serde_json::from_slice(&d.get("/v2/_catalog").await.bytes()).unwrap();
    assert_eq!(
        all["repositories"],
        serde_json::json!(["local/a", "local/b", "local/team/c", "strict/empty"]),
        "hosted repositories only, sorted: {all}"
    );
    let first = d.get("/v2/_catalog?n=2").await;
    let page: serde_json::Value = serde_json::from_slice(&first.bytes()).unwrap();
    assert_eq!(page["repositories"], serde_json::json!(["local/a", "local/b"]));
    assert_eq!(
        first.header("link"),
        Some("</v2/_catalog?n=2&last=local%2Fb>; rel=\"next\"")
    );
    let next: serde_json::Value =
        serde_json::from_slice(&d.get("/v2/_catalog?n=2&last=local%2Fb").await.bytes()).unwrap();
    assert_eq!(
        next["repositories"],
        serde_json::json!(["local/team/c", "strict/empty"])
    );
}
