//! Hosted repositories (`[[hosted]]`): tag, push, pull on the same endpoint that mirrors an
//! upstream. A user with write access pushes blobs (monolithic, and in chunks) and manifests to
//! `local/...`, and everyone who may read pulls them back byte for byte, by tag and by digest;
//! tags are listed; a delete by digest makes the manifest unknown; pushes need write access
//! (anonymous: 401, a reader: 403), never reach a mirrored namespace (405), and follow the
//! namespace's policies (`create_on_push = false`, `immutable_tags`). Hosted content is pinned:
//! a gc to nothing keeps it. The distribution spec's push, discovery and management workflows
//! run in full (`hosted/push.rs`).

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
    builder(up, dir).start().await
}

/// The configuration of `daemon`, its users' file written to `dir`.
fn builder(up: &Fake, dir: &tempfile::TempDir) -> DaemonBuilder {
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

/// `POST /admin/repos?name=` (what `regcache repo create` sends).
async fn regcache_repo_create(d: &Daemon, name: &str) -> Reply {
    d.admin_post(&format!("/admin/repos?name={name}")).await
}

mod policies;
mod push;
mod storage;
