//! `docker save` archives of Docker before 25, which carry no manifest: `manifest.json` lists each
//! image's config file, its layer files (uncompressed tars) and its `RepoTags`. Each image gets an
//! OCI image manifest built here (config `application/vnd.oci.image.config.v1+json`, layers
//! `application/vnd.oci.image.layer.v1.tar`, which Docker, containerd and podman all pull), so
//! its tags serve; its digest is new (the registry's manifest was not saved). A tag without a
//! registry host (`alpine:3.20`) belongs to the default upstream, as for `docker pull`. Docker 25
//! and later also write `index.json`, which is read instead.

use std::io::Write;
use std::sync::Arc;

use serde::Deserialize;
use serde_json::json;

use super::import::Received;
use super::plan::RootSpec;
use super::BundleError;
use crate::cache::Cache;
use crate::oci::{Algorithm, Digest, MediaType};

const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const OCI_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";

#[derive(Deserialize)]
struct Saved {
    #[serde(rename = "Config")]
    config: String,
    #[serde(rename = "RepoTags", default)]
    repo_tags: Option<Vec<String>>,
    #[serde(rename = "Layers", default)]
    layers: Vec<String>,
}

/// The images of a `docker save` archive, their manifests staged beside their files. Blocking.
pub(super) fn roots(
    cache: &Arc<Cache>,
    manifest_json: &[u8],
    received: &mut Received,
) -> Result<Vec<RootSpec>, BundleError> {
    let saved: Vec<Saved> = serde_json::from_slice(manifest_json)
        .map_err(|e| BundleError::Unreadable(format!("manifest.json does not parse: {e}")))?;
    let mut roots = Vec::new();
    for image in saved {
        let config = file(received, &image.config)?;
        let mut layers = Vec::with_capacity(image.layers.len());
        for path in &image.layers {
            layers.push(file(received, path)?);
        }
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": MediaType::OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": config.0.to_string(), "size": config.1},
            "layers": layers
                .iter()
                .map(|(d, size)| json!({"mediaType": OCI_LAYER_TAR, "digest": d.to_string(), "size": size}))
                .collect::<Vec<_>>(),
        });
        let bytes = serde_json::to_vec(&manifest).map_err(std::io::Error::other)?;
        let mut incoming = cache.incoming(Algorithm::Sha256)?;
        incoming.write_all(&bytes)?;
        let staged = incoming.finish()?;
        let digest = staged.digest.clone();
        received.blobs.entry(digest.clone()).or_insert(staged);
        let tags = image.repo_tags.unwrap_or_default();
        let names: Vec<Option<String>> = match tags.is_empty() {
            true => vec![None],
            false => tags.into_iter().map(Some).collect(),
        };
        for name in names {
            roots.push(RootSpec {
                name,
                digest: digest.clone(),
                media_type: MediaType::OCI_MANIFEST.to_string(),
                size: bytes.len() as u64,
            });
        }
    }
    Ok(roots)
}

/// The digest and size of a file the archive held at `path`.
fn file(received: &Received, path: &str) -> Result<(Digest, u64), BundleError> {
    let path = path.trim_start_matches("./");
    let d = received.paths.get(path).ok_or_else(|| {
        BundleError::Incomplete(format!("manifest.json names {path}, which the archive lacks"))
    })?;
    let size = received.blobs.get(d).map_or(0, |s| s.size);
    Ok((d.clone(), size))
}
