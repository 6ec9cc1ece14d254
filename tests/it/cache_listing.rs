//! `regcache cache ls` and `GET /admin/cache/ls`: after an image and a multi-arch index are
//! pulled through the daemon, the listing names both tags with their digests, platforms, sizes
//! and cached blobs; a pinned manifest shows pinned; a manifest pulled by digest only is listed
//! under its repository; a prefix narrows; the endpoint is guarded like gc; and the command on
//! the stopped directory gives the same entries as the endpoint did.

use bytes::Bytes;
use serde_json::Value;

use crate::support::commands::{command as regcache, stdout};
use crate::support::daemon::{Daemon, DaemonBuilder};
use crate::support::fake::{bytes_of, Fake};

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

/// An untagged image for one platform: (manifest digest, manifest bytes, config + layer digests,
/// bytes of config and layer).
fn platform_image(
    up: &Fake,
    repo: &str,
    arch: &str,
    variant: Option<&str>,
    seed: u64,
) -> (String, Bytes, Vec<String>, u64) {
    let variant_field = variant.map_or(String::new(), |v| format!(",\"variant\":\"{v}\""));
    let config_bytes = format!("{{\"architecture\":\"{arch}\",\"os\":\"linux\"{variant_field}}}");
    let layer = bytes_of(3_000, seed);
    let config = up.add_blob(repo, config_bytes.clone());
    let l = up.add_blob(repo, layer.clone());
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{config}","size":{}}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"{l}","size":{}}}]}}"#,
        config_bytes.len(),
        layer.len()
    );
    let digest = up.add_manifest(repo, None, OCI_MANIFEST, manifest.clone());
    let blobs = (config_bytes.len() + layer.len()) as u64;
    (digest, manifest.into(), vec![config, l], blobs)
}

fn platform_desc(digest: &str, len: usize, arch: &str, variant: Option<&str>) -> String {
    let variant_field = variant.map_or(String::new(), |v| format!(",\"variant\":\"{v}\""));
    format!(
        r#"{{"mediaType":"{OCI_MANIFEST}","digest":"{digest}","size":{len},"platform":{{"architecture":"{arch}","os":"linux"{variant_field}}}}}"#
    )
}

struct Pulled {
    /// library/app:v1 (manifest digest, expected size).
    app: (String, u64),
    /// library/multi:latest (index digest, expected size).
    multi: (String, u64),
    /// A manifest of library/app pulled by digest only.
    by_digest: (String, u64),
}

async fn get_ok(d: &Daemon, path: &str) -> Bytes {
    let r = d.get(path).await;
    assert_eq!(r.status, 200, "{path}");
    r.bytes()
}

/// Puts an image, an index of two platforms (one pulled) and an untagged manifest on the fake
/// upstream and pulls them through the daemon.
async fn pull_everything(up: &Fake, d: &Daemon) -> Pulled {
    let (app, app_bytes, app_layers) =
        up.add_image("library/app", "v1", &[bytes_of(1_000, 1), bytes_of(2_000, 2)]);
    let doc: Value = serde_json::from_slice(&app_bytes).unwrap();
    let config = doc["config"]["digest"].as_str().unwrap().to_string();
    let config_len = r#"{"architecture":"amd64","os":"linux","tag":"v1"}"#.len() as u64;
    get_ok(d, "/v2/library/app/manifests/v1").await;
    for b in std::iter::once(&config).chain(&app_layers) {
        get_ok(d, &format!("/v2/library/app/blobs/{b}")).await;
        d.download_settled(b).await;
    }
    let app_size = app_bytes.len() as u64 + config_len + 3_000;

    let (amd, amd_bytes, amd_blobs, amd_blob_bytes) = platform_image(up, "library/multi", "amd64", None, 3);
    let (arm, arm_bytes, _, _) = platform_image(up, "library/multi", "arm64", Some("v8"), 4);
    let index = format!(
        r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","manifests":[{},{}]}}"#,
        platform_desc(&amd, amd_bytes.len(), "amd64", None),
        platform_desc(&arm, arm_bytes.len(), "arm64", Some("v8")),
    );
    let multi = up.add_manifest("library/multi", Some("latest"), OCI_INDEX, index.clone());
    get_ok(d, "/v2/library/multi/manifests/latest").await;
    get_ok(d, &format!("/v2/library/multi/manifests/{amd}")).await;
    for b in &amd_blobs {
        get_ok(d, &format!("/v2/library/multi/blobs/{b}")).await;
        d.download_settled(b).await;
    }
    let multi_size = index.len() as u64 + amd_bytes.len() as u64 + amd_blob_bytes;

    let untagged = format!(
        r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{},"layers":{},"annotations":{{"copy":"2"}}}}"#,
        doc["config"], doc["layers"]
    );
    let untagged_digest = up.add_manifest("library/app", None, OCI_MANIFEST, untagged.clone());
    get_ok(d, &format!("/v2/library/app/manifests/{untagged_digest}")).await;
    Pulled {
        app: (app, app_size),
        multi: (multi, multi_size),
        by_digest: (untagged_digest, untagged.len() as u64 + config_len + 3_000),
    }
}

async fn ls(d: &Daemon, query: &str) -> Vec<Value> {
    let r = d.admin(&format!("/admin/cache/ls{query}")).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/json"));
    serde_json::from_slice(&r.bytes()).unwrap()
}

fn config_file(d: &Daemon) -> std::path::PathBuf {
    let config = d.dir.path().join("regcache.toml");
    let text = format!(
        "[admin]\nlisten = \"{}\"\n[cache]\ndir = \"{}\"\n",
        d.admin_addr,
        d.dir.path().display()
    );
    std::fs::write(&config, text).unwrap();
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_listing_names_tags_platforms_sizes_and_pins_and_the_command_agrees() {
    let up = Fake::start().await;
    let d = DaemonBuilder::new().upstream(&up).start().await;
    let p = pull_everything(&up, &d).await;
    let app_key = regcache::cache::Key::manifest(&p.app.0.parse().unwrap());
    d.cache().pin(app_key, true).unwrap();

    let all = ls(&d, "").await;
    assert_eq!(all.len(), 3, "two tags and one manifest by digest: {all:#?}");
    let (app, multi, by_digest) = (&all[0], &all[1], &all[2]);

    assert_eq!(app["kind"], "tag");
    assert_eq!(app["upstream"], "docker.io");
    assert_eq!(app["repository"], "library/app");
    assert_eq!(app["tag"], "v1");
    assert_eq!(app["digest"], p.app.0.as_str());
    assert_eq!(app["media_type"], OCI_MANIFEST);
    assert_eq!(app["manifest_cached"], true);
    assert_eq!(app["platforms"], serde_json::json!(["linux/amd64"]));
    assert_eq!(app["size"], p.app.1);
    assert_eq!(
        (app["blobs_cached"].as_u64(), app["blobs_total"].as_u64()),
        (Some(3), Some(3))
    );
    assert_eq!(
        (app["children_cached"].as_u64(), app["children_total"].as_u64()),
        (Some(0), Some(0))
    );
    assert_eq!(app["pinned"], true);
    assert_eq!(app["last_pulled_from"], "manifest");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let last = app["last_pulled_ms"].as_u64().unwrap();
    assert!(last <= now && now - last < 60_000, "{last} vs {now}");

    assert_eq!(multi["tag"], "latest");
    assert_eq!(multi["repository"], "library/multi");
    assert_eq!(multi["digest"], p.multi.0.as_str());
    assert_eq!(multi["media_type"], OCI_INDEX);
    assert_eq!(
        multi["platforms"],
        serde_json::json!(["linux/amd64", "linux/arm64/v8"])
    );
    assert_eq!(multi["size"], p.multi.1, "the index and its one cached child");
    assert_eq!(
        (
            multi["children_cached"].as_u64(),
            multi["children_total"].as_u64()
        ),
        (Some(1), Some(2))
    );
    assert_eq!(
        (multi["blobs_cached"].as_u64(), multi["blobs_total"].as_u64()),
        (Some(2), Some(2))
    );
    assert_eq!(multi["pinned"], false);

    assert_eq!(by_digest["kind"], "digest");
    assert_eq!(by_digest["repository"], "library/app");
    assert_eq!(by_digest["tag"], Value::Null);
    assert_eq!(by_digest["digest"], p.by_digest.0.as_str());
    assert_eq!(
        by_digest["size"], p.by_digest.1,
        "its config and layers are cached too"
    );
    assert_eq!(by_digest["platforms"], serde_json::json!(["linux/amd64"]));

    // A prefix narrows, by whole components.
    let narrowed = ls(&d, "?prefix=library/multi").await;
    assert_eq!(narrowed, vec![multi.clone()]);
    assert_eq!(ls(&d, "?prefix=docker.io/library").await, all);
    assert!(ls(&d, "?prefix=library/mul").await.is_empty());
    assert!(ls(&d, "?prefix=ghcr.io").await.is_empty());
    assert_eq!(d.admin_post("/admin/cache/ls").await.status, 405);

    // The command through the running daemon, and on the stopped directory: the same entries.
    let config = config_file(&d);
    let running: Vec<Value> =
        serde_json::from_str(&stdout(&regcache(&["cache", "ls", "--json"], &config))).unwrap();
    assert_eq!(running, all);
    let text = stdout(&regcache(&["cache", "ls", "library/multi"], &config));
    assert!(text.contains("docker.io/library/multi:latest"), "{text}");
    assert!(text.contains("linux/amd64,linux/arm64/v8"), "{text}");
    assert!(text.contains("1/2 images, 2/2 blobs"), "{text}");
    assert!(text.contains("running daemon"), "{text}");
    assert!(!text.contains("library/app"), "{text}");
    let _dir = d.stop().await;
    let stopped: Vec<Value> =
        serde_json::from_str(&stdout(&regcache(&["cache", "ls", "--json"], &config))).unwrap();
    assert_eq!(stopped, all, "the stopped directory lists what the daemon did");
    let text = stdout(&regcache(&["cache", "ls"], &config));
    let app_line = text
        .lines()
        .find(|l| l.starts_with("docker.io/library/app:v1"))
        .unwrap();
    assert!(
        app_line.contains("3/3 blobs") && app_line.ends_with("yes"),
        "{text}"
    );
    assert!(text.contains("docker.io/library/app (by digest)"), "{text}");
    assert!(text.contains("no daemon running"), "{text}");
    let filtered: Vec<Value> = serde_json::from_str(&stdout(&regcache(
        &["cache", "ls", "--json", "docker.io/library/app"],
        &config,
    )))
    .unwrap();
    assert_eq!(filtered, vec![app.clone(), by_digest.clone()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_listing_needs_the_admin_token() {
    let up = Fake::start().await;
    up.add_image("library/app", "v1", &[bytes_of(10, 1)]);
    let secrets = tempfile::tempdir().unwrap();
    let token_file = secrets.path().join("admin-token");
    std::fs::write(&token_file, "correct-horse-battery\n").unwrap();
    let d = DaemonBuilder::new()
        .upstream(&up)
        .admin_listen("0.0.0.0:0")
        .admin_token_file(&token_file)
        .start()
        .await;
    get_ok(&d, "/v2/library/app/manifests/v1").await;
    assert_eq!(d.admin("/admin/cache/ls").await.status, 401);
    let right = [("authorization", "Bearer correct-horse-battery")];
    let r = d.admin_with("GET", "/admin/cache/ls", &right).await;
    assert_eq!(r.status, 200);
    let entries: Vec<Value> = serde_json::from_slice(&r.bytes()).unwrap();
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0]["tag"], "v1");
    assert_eq!(entries[0]["blobs_cached"], 0, "no blob was pulled");
    assert_eq!(
        entries[0]["platforms"],
        serde_json::json!([]),
        "the config is not cached"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manifest_no_repository_links_is_listed_as_unreferenced() {
    let up = Fake::start().await;
    let (tagged, _, _) = up.add_image("library/app", "v1", &[bytes_of(10, 1)]);
    let d = DaemonBuilder::new().upstream(&up).start().await;
    get_ok(&d, "/v2/library/app/manifests/v1").await;
    let bytes = Bytes::from(format!(
        r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","manifests":[]}}"#
    ));
    let digest = regcache::oci::Digest::sha256_of(&bytes);
    let stored = regcache::cache::StoredManifest {
        digest: digest.clone(),
        media_type: OCI_INDEX.into(),
        bytes: bytes.clone(),
    };
    d.cache().put_manifest(&stored).await.unwrap();

    let all = ls(&d, "").await;
    assert_eq!(all.len(), 2, "{all:#?}");
    assert_eq!(all[0]["digest"], tagged.as_str());
    let lone = &all[1];
    assert_eq!(lone["kind"], "unreferenced");
    assert_eq!(
        (&lone["upstream"], &lone["repository"]),
        (&Value::Null, &Value::Null)
    );
    assert_eq!(lone["digest"], digest.to_string());
    assert_eq!(lone["media_type"], OCI_INDEX);
    assert_eq!(lone["size"], bytes.len() as u64);
    assert_eq!(
        ls(&d, "?prefix=library/app").await,
        vec![all[0].clone()],
        "a prefix leaves it out"
    );

    let config = config_file(&d);
    let _dir = d.stop().await;
    let text = stdout(&regcache(&["cache", "ls"], &config));
    let line = text
        .lines()
        .find(|l| l.starts_with("(unreferenced)"))
        .unwrap_or_default();
    assert!(line.contains(&digest.to_string()[..19]), "{text}");
}
