//! Deterministic test images for the end-to-end tests: this module owns their
//! content (seeded pseudo-random files packed with tar + gzip), their manifests
//! (OCI image manifest, OCI image index, Docker schema2), the skopeo `dir:`
//! layouts they are written to, and pushing them to the local registry with
//! `skopeo copy --all --preserve-digests`.
//!
//! The same seeds always give the same bytes, so digests are stable across runs.

mod layer;
mod layout;

use std::path::{Path, PathBuf};

use serde_json::json;
use sha2::{Digest as _, Sha256};

use super::Skopeo;
use layer::{build_layer, Layer};
use layout::image_manifest;
pub use layout::DirLayout;

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

/// Builds every test image under `root` (one `dir:` layout each):
/// `library/alpine` (OCI manifest, 3 layers), `library/multi` (OCI index with
/// linux/amd64 and linux/arm64), `library/dockerv2` (Docker schema2 sharing a
/// layer with alpine) and `myorg/private` (not anonymously pullable).
pub fn build_all(root: &Path) -> std::io::Result<Vec<TestImage>> {
    let base = build_layer(1, "base", &[("a.bin", 40_000), ("b.bin", 9_000)])?;
    let mid = build_layer(2, "mid", &[("m.bin", 300_000)])?;
    let big = build_layer(3, "big", &[("x.bin", 700_000), ("y.bin", 300_000)])?;
    let docker_own = build_layer(31, "dockerv2", &[("d.bin", 150_000)])?;
    let private = build_layer(41, "private", &[("secret.bin", 64_000)])?;
    Ok(vec![
        // (a) library/alpine: OCI image manifest, three gzip layers.
        single(root, "library/alpine", false, &[&base, &mid, &big], true)?,
        // (b) library/multi: OCI image index, linux/amd64 + linux/arm64/v8.
        multi_arch(root)?,
        // (c) library/dockerv2: Docker schema2, shares the base layer with alpine.
        single(root, "library/dockerv2", true, &[&base, &docker_own], true)?,
        // (d) myorg/private: anonymous pulls are refused by the token server.
        single(root, "myorg/private", false, &[&private], false)?,
    ])
}

/// A single-platform (linux/amd64) image `repo:latest`, Docker schema2 if `docker`, else OCI;
/// its layout and config label are named after the repository's last segment.
fn single(
    root: &Path,
    repo: &str,
    docker: bool,
    layers: &[&Layer],
    public: bool,
) -> std::io::Result<TestImage> {
    let short = repo.rsplit('/').next().unwrap_or(repo);
    let layout = DirLayout::create(root.join(short))?;
    let (manifest, blobs) = image_manifest(&layout, docker, "amd64", None, layers, short)?;
    Ok(TestImage {
        repo: repo.into(),
        tag: "latest".into(),
        digest: layout.top_manifest(&manifest)?,
        media_type: if docker { DOCKER_MANIFEST } else { OCI_MANIFEST }.into(),
        public,
        layout: layout.path,
        blobs,
    })
}

/// `library/multi:latest`: an OCI image index of linux/amd64 and linux/arm64/v8 images.
fn multi_arch(root: &Path) -> std::io::Result<TestImage> {
    let amd_1 = build_layer(11, "amd64", &[("one.bin", 200_000)])?;
    let amd_2 = build_layer(12, "amd64-extra", &[("two.bin", 350_000)])?;
    let arm_1 = build_layer(21, "arm64", &[("one.bin", 220_000)])?;
    let arm_2 = build_layer(22, "arm64-extra", &[("two.bin", 400_000)])?;
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
    Ok(TestImage {
        repo: "library/multi".into(),
        tag: "latest".into(),
        digest: layout.top_manifest(&index)?,
        media_type: OCI_INDEX.into(),
        public: true,
        layout: layout.path,
        blobs,
    })
}

/// Builds the test images under `work/layouts` and pushes the one named `repo` to
/// `registry_host`; returns it.
pub async fn push_one(skopeo: &Skopeo, registry_host: &str, work: &Path, repo: &str) -> TestImage {
    let layouts = work.join("layouts");
    let all = tokio::task::spawn_blocking(move || build_all(&layouts))
        .await
        .expect("build task")
        .expect("build images");
    let image = all
        .into_iter()
        .find(|i| i.repo == repo)
        .unwrap_or_else(|| panic!("no test image {repo}"));
    push_all(skopeo, std::slice::from_ref(&image), registry_host)
        .await
        .unwrap_or_else(|e| panic!("push {repo}: {e}"));
    image
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
