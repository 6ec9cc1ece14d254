//! Writing a test image as a skopeo `dir:` layout: blobs under their hex digest, the top
//! manifest as `manifest.json`, an index's children as `<hex>.manifest.json`, and the image
//! config and manifest JSON that go into it.

use std::path::PathBuf;

use serde_json::json;

use super::layer::Layer;
use super::{
    sha256_digest, DOCKER_CONFIG, DOCKER_LAYER_GZIP, DOCKER_MANIFEST, OCI_CONFIG, OCI_LAYER_GZIP,
    OCI_MANIFEST,
};

/// A skopeo `dir:` layout being written.
pub struct DirLayout {
    pub path: PathBuf,
}

impl DirLayout {
    pub fn create(path: PathBuf) -> std::io::Result<Self> {
        std::fs::create_dir_all(&path)?;
        std::fs::write(path.join("version"), "Directory Transport Version: 1.1\n")?;
        Ok(Self { path })
    }

    /// Stores a blob and returns its descriptor.
    pub fn blob(&self, media_type: &str, bytes: &[u8]) -> std::io::Result<serde_json::Value> {
        let digest = sha256_digest(bytes);
        std::fs::write(self.path.join(digest.trim_start_matches("sha256:")), bytes)?;
        Ok(json!({"mediaType": media_type, "digest": digest, "size": bytes.len()}))
    }

    /// Stores the top-level manifest; returns its digest.
    pub fn top_manifest(&self, bytes: &[u8]) -> std::io::Result<String> {
        std::fs::write(self.path.join("manifest.json"), bytes)?;
        Ok(sha256_digest(bytes))
    }

    /// Stores an image manifest of `config` and `layers` (descriptors) as the top-level
    /// manifest; returns its digest.
    pub fn top_image_manifest(
        &self,
        media_type: &str,
        config: &serde_json::Value,
        layers: &[serde_json::Value],
    ) -> std::io::Result<String> {
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": media_type,
            "config": config,
            "layers": layers,
        });
        self.top_manifest(&serde_json::to_vec_pretty(&manifest).expect("manifest json"))
    }

    /// Stores a child manifest of an index; returns its digest.
    pub(super) fn instance_manifest(&self, bytes: &[u8]) -> std::io::Result<String> {
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
pub(super) fn image_manifest(
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
