//! Deterministic test images for the end-to-end tests: this module owns their
//! content (seeded pseudo-random files packed with tar + gzip), their manifests
//! (OCI image manifest, OCI image index, Docker schema2), the skopeo `dir:`
//! layouts they are written to, and pushing them to the local registry with
//! `skopeo copy --all --preserve-digests`.
//!
//! The same seeds always give the same bytes, so digests are stable across runs.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use serde_json::json;
use sha2::{Digest as _, Sha256};

use super::Skopeo;

/// OCI image manifest media type.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image index media type.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// OCI image config media type.
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
/// OCI gzip layer media type.
pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
/// Docker schema2 manifest media type.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker manifest list media type.
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// Docker image config media type.
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
/// Docker gzip layer media type.
pub const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";

/// One test image, built locally as a skopeo `dir:` layout.
#[derive(Clone, Debug)]
pub struct TestImage {
    /// Repository path, e.g. `library/alpine`.
    pub repo: String,
    /// Tag, e.g. `latest`.
    pub tag: String,
    /// Digest of the top-level manifest (or index).
    pub digest: String,
    /// Media type of the top-level manifest (or index).
    pub media_type: String,
    /// Whether anonymous clients may pull it.
    pub public: bool,
    /// The `dir:` layout on disk.
    pub layout: PathBuf,
    /// Digests of every config and layer blob referenced.
    pub blobs: Vec<String>,
}

impl TestImage {
    /// `repo:tag`.
    pub fn reference(&self) -> String {
        format!("{}:{}", self.repo, self.tag)
    }

    /// The last path segment of the repository, e.g. `alpine`.
    pub fn short_name(&self) -> &str {
        self.repo.rsplit('/').next().unwrap_or(&self.repo)
    }
}

/// `sha256:<hex>` of some bytes.
pub fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex(&Sha256::digest(bytes)))
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A small seeded PRNG (splitmix64), enough for incompressible test content.
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator for `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next 64 pseudo-random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// `len` pseudo-random bytes.
    pub fn bytes(&mut self, len: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(len + 8);
        while out.len() < len {
            out.extend_from_slice(&self.next_u64().to_le_bytes());
        }
        out.truncate(len);
        out
    }
}

/// A gzip-compressed layer and the digest of its uncompressed tar.
pub struct Layer {
    /// The compressed bytes (the blob).
    pub gz: Vec<u8>,
    /// `sha256:` of the uncompressed tar (the config's diff_id).
    pub diff_id: String,
}

/// Builds a deterministic layer: one directory holding `files` of pseudo-random
/// bytes (name, size) seeded by `seed`.
pub fn build_layer(seed: u64, dir: &str, files: &[(&str, usize)]) -> std::io::Result<Layer> {
    let mut rng = SplitMix64::new(seed);
    let mut builder = tar::Builder::new(Vec::new());
    builder.mode(tar::HeaderMode::Deterministic);

    let mut header = tar::Header::new_gnu();
    header.set_entry_type(tar::EntryType::Directory);
    header.set_size(0);
    header.set_mode(0o755);
    header.set_mtime(0);
    header.set_uid(0);
    header.set_gid(0);
    builder.append_data(&mut header, format!("{dir}/"), std::io::empty())?;

    for (name, size) in files {
        let content = rng.bytes(*size);
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Regular);
        header.set_size(content.len() as u64);
        header.set_mode(0o644);
        header.set_mtime(0);
        header.set_uid(0);
        header.set_gid(0);
        builder.append_data(&mut header, format!("{dir}/{name}"), content.as_slice())?;
    }
    let tar_bytes = builder.into_inner()?;
    let diff_id = sha256_digest(&tar_bytes);

    let mut encoder = flate2::GzBuilder::new()
        .mtime(0)
        .write(Vec::new(), flate2::Compression::default());
    encoder.write_all(&tar_bytes)?;
    let gz = encoder.finish()?;
    Ok(Layer { gz, diff_id })
}

/// A skopeo `dir:` layout being written.
struct DirLayout {
    path: PathBuf,
}

impl DirLayout {
    fn create(path: PathBuf) -> std::io::Result<Self> {
        std::fs::create_dir_all(&path)?;
        std::fs::write(path.join("version"), "Directory Transport Version: 1.1\n")?;
        Ok(Self { path })
    }

    /// Stores a blob and returns its descriptor.
    fn blob(&self, media_type: &str, bytes: &[u8]) -> std::io::Result<serde_json::Value> {
        let digest = sha256_digest(bytes);
        std::fs::write(self.path.join(digest.trim_start_matches("sha256:")), bytes)?;
        Ok(json!({"mediaType": media_type, "digest": digest, "size": bytes.len()}))
    }

    /// Stores the top-level manifest; returns its digest.
    fn top_manifest(&self, bytes: &[u8]) -> std::io::Result<String> {
        std::fs::write(self.path.join("manifest.json"), bytes)?;
        Ok(sha256_digest(bytes))
    }

    /// Stores a child manifest of an index; returns its digest.
    fn instance_manifest(&self, bytes: &[u8]) -> std::io::Result<String> {
        let digest = sha256_digest(bytes);
        let file = format!("{}.manifest.json", digest.trim_start_matches("sha256:"));
        std::fs::write(self.path.join(file), bytes)?;
        Ok(digest)
    }
}

fn config_json(arch: &str, variant: Option<&str>, diff_ids: &[&str], label: &str) -> Vec<u8> {
    let mut config = json!({
        "architecture": arch,
        "os": "linux",
        "created": "1970-01-01T00:00:00Z",
        "config": {
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            "Cmd": ["/bin/sh"],
            "Labels": {"org.regcache.e2e": label},
        },
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": diff_ids
            .iter()
            .map(|_| json!({"created": "1970-01-01T00:00:00Z", "created_by": "regcache e2e"}))
            .collect::<Vec<_>>(),
    });
    if let Some(variant) = variant {
        config["variant"] = json!(variant);
    }
    serde_json::to_vec(&config).expect("config json")
}

/// Writes one single-platform image manifest (config + layers) into `layout`;
/// returns (manifest bytes, blob digests).
fn image_manifest(
    layout: &DirLayout,
    docker: bool,
    arch: &str,
    variant: Option<&str>,
    layers: &[&Layer],
    label: &str,
) -> std::io::Result<(Vec<u8>, Vec<String>)> {
    let (manifest_type, config_type, layer_type) = if docker {
        (DOCKER_MANIFEST, DOCKER_CONFIG, DOCKER_LAYER_GZIP)
    } else {
        (OCI_MANIFEST, OCI_CONFIG, OCI_LAYER_GZIP)
    };
    let diff_ids: Vec<&str> = layers.iter().map(|l| l.diff_id.as_str()).collect();
    let config = layout.blob(config_type, &config_json(arch, variant, &diff_ids, label))?;
    let mut blobs = vec![config["digest"].as_str().expect("digest").to_string()];
    let mut layer_descs = Vec::new();
    for layer in layers {
        let desc = layout.blob(layer_type, &layer.gz)?;
        blobs.push(desc["digest"].as_str().expect("digest").to_string());
        layer_descs.push(desc);
    }
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": manifest_type,
        "config": config,
        "layers": layer_descs,
    });
    Ok((
        serde_json::to_vec_pretty(&manifest).expect("manifest json"),
        blobs,
    ))
}

/// Builds every test image under `root` (one `dir:` layout each):
/// `library/alpine` (OCI manifest, 3 layers), `library/multi` (OCI index with
/// linux/amd64 and linux/arm64), `library/dockerv2` (Docker schema2 sharing a
/// layer with alpine) and `myorg/private` (not anonymously pullable).
pub fn build_all(root: &Path) -> std::io::Result<Vec<TestImage>> {
    let base = build_layer(1, "base", &[("a.bin", 40_000), ("b.bin", 9_000)])?;
    let mid = build_layer(2, "mid", &[("m.bin", 300_000)])?;
    let big = build_layer(3, "big", &[("x.bin", 700_000), ("y.bin", 300_000)])?;
    let amd_1 = build_layer(11, "amd64", &[("one.bin", 200_000)])?;
    let amd_2 = build_layer(12, "amd64-extra", &[("two.bin", 350_000)])?;
    let arm_1 = build_layer(21, "arm64", &[("one.bin", 220_000)])?;
    let arm_2 = build_layer(22, "arm64-extra", &[("two.bin", 400_000)])?;
    let docker_own = build_layer(31, "dockerv2", &[("d.bin", 150_000)])?;
    let private = build_layer(41, "private", &[("secret.bin", 64_000)])?;

    let mut images = Vec::new();

    // (a) library/alpine: OCI image manifest, three gzip layers.
    let layout = DirLayout::create(root.join("alpine"))?;
    let (manifest, blobs) = image_manifest(&layout, false, "amd64", None, &[&base, &mid, &big], "alpine")?;
    images.push(TestImage {
        repo: "library/alpine".into(),
        tag: "latest".into(),
        digest: layout.top_manifest(&manifest)?,
        media_type: OCI_MANIFEST.into(),
        public: true,
        layout: layout.path,
        blobs,
    });

    // (b) library/multi: OCI image index, linux/amd64 + linux/arm64/v8.
    let layout = DirLayout::create(root.join("multi"))?;
    let mut blobs = Vec::new();
    let mut descs = Vec::new();
    for (arch, variant, layers) in [
        ("amd64", None, [&amd_1, &amd_2]),
        ("arm64", Some("v8"), [&arm_1, &arm_2]),
    ] {
        let (manifest, b) = image_manifest(&layout, false, arch, variant, &layers, "multi")?;
        blobs.extend(b);
        let digest = layout.instance_manifest(&manifest)?;
        let mut platform = json!({"architecture": arch, "os": "linux"});
        if let Some(variant) = variant {
            platform["variant"] = json!(variant);
        }
        descs.push(json!({
            "mediaType": OCI_MANIFEST,
            "digest": digest,
            "size": manifest.len(),
            "platform": platform,
        }));
    }
    let index = json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": descs});
    let index = serde_json::to_vec_pretty(&index).expect("index json");
    images.push(TestImage {
        repo: "library/multi".into(),
        tag: "latest".into(),
        digest: layout.top_manifest(&index)?,
        media_type: OCI_INDEX.into(),
        public: true,
        layout: layout.path,
        blobs,
    });

    // (c) library/dockerv2: Docker schema2, shares the base layer with alpine.
    let layout = DirLayout::create(root.join("dockerv2"))?;
    let (manifest, blobs) = image_manifest(&layout, true, "amd64", None, &[&base, &docker_own], "dockerv2")?;
    images.push(TestImage {
        repo: "library/dockerv2".into(),
        tag: "latest".into(),
        digest: layout.top_manifest(&manifest)?,
        media_type: DOCKER_MANIFEST.into(),
        public: true,
        layout: layout.path,
        blobs,
    });

    // (d) myorg/private: anonymous pulls are refused by the token server.
    let layout = DirLayout::create(root.join("private"))?;
    let (manifest, blobs) = image_manifest(&layout, false, "amd64", None, &[&private], "private")?;
    images.push(TestImage {
        repo: "myorg/private".into(),
        tag: "latest".into(),
        digest: layout.top_manifest(&manifest)?,
        media_type: OCI_MANIFEST.into(),
        public: false,
        layout: layout.path,
        blobs,
    });

    Ok(images)
}

/// Pushes every image to `registry_host` (`127.0.0.1:PORT`, plain HTTP) as
/// `admin`, preserving digests; all pushes run concurrently.
pub async fn push_all(skopeo: &Skopeo, images: &[TestImage], registry_host: &str) -> Result<(), String> {
    let mut pushes = tokio::task::JoinSet::new();
    for image in images {
        let skopeo = skopeo.clone();
        let src = format!("dir:{}", image.layout.display());
        let dst = format!("docker://{registry_host}/{}", image.reference());
        let name = image.reference();
        pushes.spawn(async move {
            skopeo
                .copy(
                    &src,
                    &dst,
                    &[
                        "--all",
                        "--preserve-digests",
                        "--dest-tls-verify=false",
                        "--dest-creds",
                        "admin:admin-secret",
                    ],
                    None,
                )
                .await
                .map_err(|e| format!("push {name}: {e}"))
        });
    }
    while let Some(result) = pushes.join_next().await {
        result.map_err(|e| format!("push task: {e}"))??;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layers_are_deterministic() {
        let a = build_layer(7, "d", &[("f", 1000)]).unwrap();
        let b = build_layer(7, "d", &[("f", 1000)]).unwrap();
        let c = build_layer(8, "d", &[("f", 1000)]).unwrap();
        assert_eq!(a.gz, b.gz);
        assert_eq!(a.diff_id, b.diff_id);
        assert_ne!(a.gz, c.gz);
    }

    #[test]
    fn images_are_deterministic() {
        let one = tempfile::tempdir().unwrap();
        let two = tempfile::tempdir().unwrap();
        let a = build_all(one.path()).unwrap();
        let b = build_all(two.path()).unwrap();
        let digests = |v: &[TestImage]| v.iter().map(|i| i.digest.clone()).collect::<Vec<_>>();
        assert_eq!(digests(&a), digests(&b));
        let alpine = &a[0];
        let docker = &a[2];
        // The first layer is shared between alpine and dockerv2.
        assert_eq!(alpine.blobs[1], docker.blobs[1]);
    }
}
