//! `regcache export` and `regcache import`, run as the binary: a bundle exported through a
//! running daemon imports into a fresh cache directory (on the directory, and through a running
//! offline daemon), whose daemon then serves the images by tag and by digest byte for byte with
//! no upstream request; a bundle with one flipped byte, or one that lacks a layer, is refused
//! whole, naming the blob, and adds nothing; a gzipped `docker save` archive and an OCI layout that
//! names its image only by a tag (what other tools write) import too; an image the cache does
//! not hold is not exported, and no file is left.

use std::path::{Path, PathBuf};

use crate::support::commands::{command as regcache, ok, operator_config, text};
use crate::support::daemon::{Daemon, DaemonBuilder};
use crate::support::fake::{bytes_of, sha256, Fake};

/// A config file for a cache in `dir` whose docker.io is `up` (offline when asked).
fn config_for(dir: &Path, admin: &str, up: &Fake, offline: bool) -> PathBuf {
    operator_config(dir, admin, &up.url(), offline)
}

fn config(d: &Daemon, up: &Fake) -> PathBuf {
    config_for(d.dir.path(), &d.admin_addr.to_string(), up, false)
}

/// Every file under the store's content and record directories, and what `tmp/` holds.
fn store_files(dir: &Path) -> Vec<PathBuf> {
    fn walk(p: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(p).into_iter().flatten().flatten() {
            let path = e.path();
            if path.is_dir() {
                walk(&path, out);
            } else {
                out.push(path);
            }
        }
    }
    let mut out = Vec::new();
    for sub in ["blobs", "manifests", "tags", "tmp"] {
        walk(&dir.join(sub), &mut out);
    }
    out.sort();
    out
}

/// An image `app:1` prefetched and exported through a running daemon; returns the bundle's path
/// (inside `keep`), the manifest digest and bytes, and the layers.
async fn exported(up: &Fake, keep: &Path) -> (PathBuf, String, Vec<u8>, Vec<String>) {
    let (digest, manifest, layers) =
        up.add_image("library/app", "1", &[bytes_of(60_000, 1), bytes_of(90_000, 2)]);
    let d = DaemonBuilder::new().upstream(up).start().await;
    ok(&regcache(&["prefetch", "app:1"], &config(&d, up)));
    let bundle = keep.join("bundle.tar");
    let out = ok(&regcache(
        &["export", "-o", bundle.to_str().unwrap(), "app:1"],
        &config(&d, up),
    ));
    assert!(out.contains("1 images, 1 manifests, 3 blobs"), "{out}");
    assert!(out.contains("running daemon"), "{out}");
    assert!(out.contains("docker.io/library/app:1"), "{out}");
    // The umask decides its mode, as for any file the operator writes (not a temp file's 0600).
    let mode =
        |p: &Path| std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(p).unwrap().permissions());
    let plain = keep.join("plain");
    std::fs::File::create(&plain).unwrap();
    assert_eq!(mode(&bundle) & 0o777, mode(&plain) & 0o777);
    std::fs::remove_file(&plain).unwrap();
    d.stop().await;
    (bundle, digest, manifest.to_vec(), layers)
}

/// Pulls `app:1` by tag and by digest from `d` and checks every byte.
async fn serves_app(d: &Daemon, digest: &str, manifest: &[u8], layers: &[String]) {
    let by_tag = d.get("/v2/library/app/manifests/1").await;
    assert_eq!(by_tag.status, 200, "by tag");
    assert_eq!(by_tag.bytes().as_ref(), manifest);
    let by_digest = d.get(&format!("/v2/library/app/manifests/{digest}")).await;
    assert_eq!(by_digest.status, 200, "by digest");
    assert_eq!(by_digest.bytes().as_ref(), manifest);
    for l in layers {
        let r = d.get(&format!("/v2/library/app/blobs/{l}")).await;
        assert_eq!(r.status, 200, "{l}");
        assert_eq!(sha256(&r.bytes()), *l);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bundle_moves_an_image_to_an_offline_site() {
    let up = Fake::start().await;
    let keep = tempfile::tempdir().unwrap();
    let (bundle, digest, manifest, layers) = exported(&up, keep.path()).await;

    // The offline site: a fresh directory, no daemon yet; the import works on the directory.
    // The offline site: a fresh, empty directory and no daemon yet; the import makes the cache.
    let site = tempfile::tempdir().unwrap();
    let site_config = keep.path().join("site.toml");
    std::fs::write(
        &site_config,
        format!(
            "builtin_upstreams = false\n[cache]\ndir = \"{}\"\n[[upstreams]]\nhost = \"docker.io\"\n\
             url = \"{}\"\ndefault = true\noffline = true\n",
            site.path().display(),
            up.url()
        ),
    )
    .unwrap();
    let out = ok(&regcache(&["import", bundle.to_str().unwrap()], &site_config));
    assert!(out.contains("1 images; 4 blobs and manifests added"), "{out}");
    assert!(out.contains("pinned"), "{out}");
    assert!(out.contains("on the directory"), "{out}");
    assert!(
        std::fs::read_dir(site.path().join("tmp"))
            .unwrap()
            .next()
            .is_none(),
        "tmp/ is empty"
    );

    up.clear_log();
    let d = DaemonBuilder::new()
        .upstream(&up)
        .offline()
        .in_dir(site)
        .start()
        .await;
    serves_app(&d, &digest, &manifest, &layers).await;
    assert_eq!(up.requests().len(), 0, "{:?}", up.requests());

    // Pinned: a gc to nothing keeps it.
    let gc = ok(&regcache(
        &["cache", "gc", "--to", "0"],
        &config_for(d.dir.path(), &d.admin_addr.to_string(), &up, true),
    ));
    assert!(gc.contains("evicted 0"), "{gc}");
    serves_app(&d, &digest, &manifest, &layers).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_offline_daemon_imports_and_serves_at_once() {
    let up = Fake::start().await;
    let keep = tempfile::tempdir().unwrap();
    let (bundle, digest, manifest, layers) = exported(&up, keep.path()).await;
    up.clear_log();
    let d = DaemonBuilder::new().upstream(&up).offline().start().await;
    let site_config = config_for(d.dir.path(), &d.admin_addr.to_string(), &up, true);
    assert_eq!(
        d.get("/v2/library/app/manifests/1").await.status,
        404,
        "nothing cached yet"
    );
    let out = ok(&regcache(
        &["import", "--json", bundle.to_str().unwrap()],
        &site_config,
    ));
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["added"], 4, "{report}");
    assert_eq!(report["images"][0]["name"], "docker.io/library/app:1", "{report}");
    serves_app(&d, &digest, &manifest, &layers).await;
    // A second import of the same bundle adds nothing new.
    let again: serde_json::Value = serde_json::from_str(&ok(&regcache(
        &["import", "--json", bundle.to_str().unwrap()],
        &site_config,
    )))
    .unwrap();
    assert_eq!(
        (again["added"].as_u64(), again["present"].as_u64()),
        (Some(0), Some(4)),
        "{again}"
    );
    assert_eq!(up.requests().len(), 0, "{:?}", up.requests());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bundle_with_one_flipped_byte_adds_nothing() {
    let up = Fake::start().await;
    let keep = tempfile::tempdir().unwrap();
    let (bundle, _, _, layers) = exported(&up, keep.path()).await;
    // Flip one byte inside the second layer's content (found by its first bytes).
    let mut tar = std::fs::read(&bundle).unwrap();
    let needle = &bytes_of(90_000, 2)[..64];
    let at = tar
        .windows(64)
        .position(|w| w == needle)
        .expect("the layer is in the bundle");
    tar[at + 45_000] ^= 0x01;
    let bad = keep.path().join("flipped.tar");
    std::fs::write(&bad, &tar).unwrap();

    for running in [false, true] {
        let d = DaemonBuilder::new().upstream(&up).offline().start().await;
        let site_config = config_for(d.dir.path(), &d.admin_addr.to_string(), &up, true);
        let (d, dir) = match running {
            true => (Some(d), None),
            false => (None, Some(d.stop().await)),
        };
        let path = d.as_ref().map_or_else(
            || dir.as_ref().unwrap().path().to_path_buf(),
            |d| d.dir.path().to_path_buf(),
        );
        let before = store_files(&path);
        let o = regcache(&["import", bad.to_str().unwrap()], &site_config);
        assert!(!o.status.success(), "{}", text(&o));
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            err.contains(&format!("blob {} in the bundle is corrupt", layers[1])),
            "{err}"
        );
        let after: Vec<PathBuf> = store_files(&path)
            .into_iter()
            .filter(|p| !p.ends_with("index/recency"))
            .collect();
        assert_eq!(after, before, "nothing was added (running daemon: {running})");
        if let Some(d) = &d {
            assert_eq!(d.get("/v2/library/app/manifests/1").await.status, 404);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bundle_that_lacks_a_layer_is_refused_naming_it() {
    let up = Fake::start().await;
    let keep = tempfile::tempdir().unwrap();
    let (bundle, _, _, layers) = exported(&up, keep.path()).await;
    // Rewrite the archive without the first layer's file.
    let mut out = tar::Builder::new(Vec::new());
    let mut archive = tar::Archive::new(std::fs::File::open(&bundle).unwrap());
    let skip = format!("blobs/sha256/{}", layers[0].trim_start_matches("sha256:"));
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let path = entry.path().unwrap().to_string_lossy().into_owned();
        if path == skip {
            continue;
        }
        let mut header = entry.header().clone();
        out.append_data(&mut header, &path, &mut entry).unwrap();
    }
    let lacking = keep.path().join("lacking.tar");
    std::fs::write(&lacking, out.into_inner().unwrap()).unwrap();
    let d = DaemonBuilder::new().upstream(&up).offline().start().await;
    let site_config = config_for(d.dir.path(), &d.admin_addr.to_string(), &up, true);
    let before = store_files(d.dir.path());
    let o = regcache(&["import", lacking.to_str().unwrap()], &site_config);
    assert!(!o.status.success(), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains(&format!("blob {} of docker.io/library/app:1", layers[0])),
        "{err}"
    );
    assert!(err.contains("in neither the bundle nor the cache"), "{err}");
    assert_eq!(store_files(d.dir.path()), before);
}

/// A tar archive of `files` (path, bytes).
fn archive(files: &[(&str, Vec<u8>)]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (path, bytes) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(bytes.len() as u64);
        h.set_mode(0o644);
        b.append_data(&mut h, path, bytes.as_slice()).unwrap();
    }
    b.into_inner().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gzipped_docker_save_archive_is_served_by_its_tag() {
    let up = Fake::start().await;
    let config_json =
        br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#.to_vec();
    let layer = bytes_of(20_000, 7);
    let config_name = format!("{}.json", sha256(&config_json).trim_start_matches("sha256:"));
    let manifest_json =
        format!(r#"[{{"Config":"{config_name}","RepoTags":["widget:v1"],"Layers":["abc/layer.tar"]}}]"#);
    let saved = archive(&[
        ("manifest.json", manifest_json.into_bytes()),
        (&config_name, config_json.clone()),
        ("abc/layer.tar", layer.clone()),
        ("abc/VERSION", b"1.0".to_vec()),
    ]);
    // As `docker save widget:v1 | gzip` writes it.
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut gz, &saved).unwrap();
    let keep = tempfile::tempdir().unwrap();
    let path = keep.path().join("saved.tar.gz");
    std::fs::write(&path, gz.finish().unwrap()).unwrap();
    let d = DaemonBuilder::new().upstream(&up).offline().start().await;
    let site_config = config_for(d.dir.path(), &d.admin_addr.to_string(), &up, true);
    let out = ok(&regcache(&["import", path.to_str().unwrap()], &site_config));
    assert!(out.contains("docker.io/library/widget:v1"), "{out}");

    let m = d.get("/v2/library/widget/manifests/v1").await;
    assert_eq!(m.status, 200);
    let manifest: serde_json::Value = serde_json::from_slice(&m.bytes()).unwrap();
    assert_eq!(manifest["config"]["digest"], sha256(&config_json));
    assert_eq!(manifest["layers"][0]["digest"], sha256(&layer));
    assert_eq!(
        manifest["layers"][0]["mediaType"],
        "application/vnd.oci.image.layer.v1.tar"
    );
    let l = d
        .get(&format!("/v2/library/widget/blobs/{}", sha256(&layer)))
        .await;
    assert_eq!(l.bytes().as_ref(), layer.as_slice());
    assert_eq!(up.requests().len(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_layout_named_by_a_tag_alone_needs_its_repository() {
    let up = Fake::start().await;
    let config_json = br#"{"architecture":"arm64","os":"linux"}"#.to_vec();
    let layer = bytes_of(5_000, 9);
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{}","size":{}}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"{}","size":{}}}]}}"#,
        sha256(&config_json),
        config_json.len(),
        sha256(&layer),
        layer.len()
    );
    let md = sha256(manifest.as_bytes());
    let index = format!(
        r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{md}","size":{},"annotations":{{"org.opencontainers.image.ref.name":"v2"}}}}]}}"#,
        manifest.len()
    );
    let blob = |d: &str| format!("blobs/sha256/{}", d.trim_start_matches("sha256:"));
    let layout = archive(&[
        ("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec()),
        ("index.json", index.into_bytes()),
        (&blob(&md), manifest.clone().into_bytes()),
        (&blob(&sha256(&config_json)), config_json),
        (&blob(&sha256(&layer)), layer),
    ]);
    let keep = tempfile::tempdir().unwrap();
    let path = keep.path().join("layout.tar");
    std::fs::write(&path, layout).unwrap();
    let d = DaemonBuilder::new().upstream(&up).offline().start().await;
    let site_config = config_for(d.dir.path(), &d.admin_addr.to_string(), &up, true);

    let o = regcache(&["import", path.to_str().unwrap()], &site_config);
    assert!(!o.status.success(), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("only by the tag \"v2\""),
        "{}",
        text(&o)
    );
    let out = ok(&regcache(
        &[
            "import",
            "--repository",
            "docker.io/team/tool",
            path.to_str().unwrap(),
        ],
        &site_config,
    ));
    assert!(out.contains("docker.io/team/tool:v2"), "{out}");
    let m = d.get("/v2/team/tool/manifests/v2").await;
    assert_eq!(m.status, 200);
    assert_eq!(m.bytes().as_ref(), manifest.as_bytes());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_image_not_cached_is_not_exported() {
    let up = Fake::start().await;
    up.add_image("library/app", "1", &[bytes_of(1_000, 1)]);
    let d = DaemonBuilder::new().upstream(&up).start().await;
    let keep = tempfile::tempdir().unwrap();
    let bundle = keep.path().join("bundle.tar");
    let o = regcache(
        &["export", "-o", bundle.to_str().unwrap(), "app:1"],
        &config(&d, &up),
    );
    assert!(!o.status.success(), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("no tag record"),
        "{}",
        text(&o)
    );
    assert_eq!(
        std::fs::read_dir(keep.path()).unwrap().count(),
        0,
        "no file is left"
    );
    assert_eq!(up.requests().len(), 0, "an export never asks the upstream");
}
