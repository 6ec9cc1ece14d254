//! The files of an OCI image layout that are not content: `oci-layout` and `index.json`, the
//! annotations that name an image, and the few fields of a manifest a bundle reads (its
//! references come from `oci::references`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::oci::{Digest, MediaType};

pub(super) const OCI_LAYOUT: &str = "oci-layout";
pub(super) const INDEX_JSON: &str = "index.json";
pub(super) const LAYOUT_VERSION: &str = r#"{"imageLayoutVersion":"1.0.0"}"#;

/// The image-layout spec's name of an entry; other tools write only a tag here.
pub(super) const REF_NAME: &str = "org.opencontainers.image.ref.name";
/// containerd's (and Docker 25's) full image name of an entry.
pub(super) const IMAGE_NAME: &str = "io.containerd.image.name";

/// The largest `index.json`, `manifest.json` or manifest read into memory.
pub(super) const MAX_DOCUMENT: u64 = 16 * 1024 * 1024;

/// A descriptor as `index.json` and an index's `manifests` hold it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub(in crate::registry) struct Descriptor {
    #[serde(rename = "mediaType", default)]
    pub media_type: String,
    pub digest: String,
    pub size: u64,
    #[serde(rename = "artifactType", default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<serde_json::Value>,
}

impl Descriptor {
    /// The name an entry gives its image: containerd's full name first, else the ref name.
    pub(super) fn name(&self) -> Option<&str> {
        self.annotations
            .get(IMAGE_NAME)
            .or_else(|| self.annotations.get(REF_NAME))
            .map(String::as_str)
    }
}

/// `index.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct LayoutIndex {
    #[serde(rename = "schemaVersion")]
    pub schema_version: u32,
    #[serde(rename = "mediaType", default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    #[serde(default)]
    pub manifests: Vec<Descriptor>,
}

impl LayoutIndex {
    pub(super) fn new(manifests: Vec<Descriptor>) -> LayoutIndex {
        LayoutIndex {
            schema_version: 2,
            media_type: Some(MediaType::OCI_INDEX.to_string()),
            manifests,
        }
    }
}

/// What a bundle reads of a manifest besides its references.
#[derive(Debug, Default, Deserialize)]
pub(in crate::registry) struct ManifestHead {
    #[serde(rename = "mediaType")]
    pub media_type: Option<String>,
    #[serde(rename = "artifactType")]
    pub artifact_type: Option<String>,
    pub config: Option<Descriptor>,
    #[serde(default)]
    pub layers: Vec<Descriptor>,
    pub manifests: Option<Vec<Descriptor>>,
    pub subject: Option<Descriptor>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
}

impl ManifestHead {
    pub(super) fn parse(bytes: &[u8]) -> Result<ManifestHead, String> {
        serde_json::from_slice(bytes).map_err(|e| format!("not a manifest: {e}"))
    }

    pub(super) fn is_index(&self) -> bool {
        matches!(
            self.media_type.as_deref(),
            Some(MediaType::OCI_INDEX | MediaType::DOCKER_LIST)
        ) || self.manifests.is_some()
    }

    /// The media type a manifest declares, else what its shape says.
    pub(super) fn media_type(&self) -> String {
        match &self.media_type {
            Some(m) => m.clone(),
            None if self.is_index() => MediaType::OCI_INDEX.to_string(),
            None => MediaType::OCI_MANIFEST.to_string(),
        }
    }

    /// The referrers API's artifact type: the manifest's, else its config's media type.
    pub(in crate::registry) fn artifact_type(&self) -> Option<String> {
        self.artifact_type
            .clone()
            .or_else(|| self.config.as_ref().map(|c| c.media_type.clone()))
    }

    pub(in crate::registry) fn subject(&self) -> Option<Digest> {
        self.subject.as_ref().and_then(|s| s.digest.parse().ok())
    }
}

/// A blob's path inside the layout.
pub(super) fn blob_path(digest: &Digest) -> String {
    format!("blobs/{}/{}", digest.algorithm().as_str(), digest.hex())
}

/// The digest a layout path names (`blobs/sha256/<hex>`), if it names one.
pub(super) fn digest_of_path(path: &str) -> Option<Digest> {
    let rest = path.strip_prefix("blobs/")?;
    let (algorithm, hex) = rest.split_once('/')?;
    format!("{algorithm}:{hex}").parse().ok()
}

/// A platform object as `os/arch[/variant]`.
pub(super) fn platform_text(p: &serde_json::Value) -> Option<String> {
    let os = p.get("os")?.as_str()?;
    let arch = p.get("architecture")?.as_str()?;
    Some(match p.get("variant").and_then(|v| v.as_str()) {
        Some(v) => format!("{os}/{arch}/{v}"),
        None => format!("{os}/{arch}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_paths_name_digests_and_nothing_else() {
        let d = Digest::sha256_of(b"x");
        assert_eq!(digest_of_path(&blob_path(&d)), Some(d));
        assert_eq!(digest_of_path("blobs/sha256/short"), None);
        assert_eq!(digest_of_path("blobs/md5/abc"), None);
        assert_eq!(digest_of_path("index.json"), None);
    }

    #[test]
    fn an_entry_is_named_by_its_full_name_first() {
        let mut d = Descriptor {
            media_type: MediaType::OCI_MANIFEST.into(),
            digest: Digest::sha256_of(b"x").to_string(),
            size: 1,
            artifact_type: None,
            annotations: BTreeMap::new(),
            platform: None,
        };
        assert_eq!(d.name(), None);
        d.annotations.insert(REF_NAME.into(), "v1".into());
        assert_eq!(d.name(), Some("v1"));
        d.annotations
            .insert(IMAGE_NAME.into(), "docker.io/library/app:v1".into());
        assert_eq!(d.name(), Some("docker.io/library/app:v1"));
    }
}
