//! What a prefetch is asked and answers: images as clients name them (`PrefetchRef`), platforms
//! (`Platform`), the admin API's request (`PrefetchOptions`), progress events (`PrefetchEvent`)
//! and the unpin report; and the few fields of a manifest a prefetch reads.

use serde::{Deserialize, Serialize};

use super::super::purge::{BadImage, ImageRef};
use super::super::RegistryError;
use crate::oci::{Digest, MediaType, Reference, Tag};

/// An image as a client names it, by tag or digest: `[HOST/]NAME[:TAG][@DIGEST]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrefetchRef {
    pub image: ImageRef,
    /// A digest wins over a tag given beside it.
    pub digest: Option<Digest>,
}

impl std::str::FromStr for PrefetchRef {
    type Err = BadImage;

    fn from_str(text: &str) -> Result<PrefetchRef, BadImage> {
        let (rest, digest) = match text.split_once('@') {
            Some((rest, d)) => {
                let digest = d.parse::<Digest>().map_err(|e| BadImage {
                    image: text.to_string(),
                    reason: format!("{e}"),
                })?;
                (rest, Some(digest))
            }
            None => (text, None),
        };
        let image: ImageRef = rest.parse().map_err(|e: BadImage| BadImage {
            image: text.to_string(),
            reason: e.reason,
        })?;
        Ok(PrefetchRef { image, digest })
    }
}

impl PrefetchRef {
    pub(in crate::registry) fn tag(&self) -> Tag {
        self.image
            .tag
            .clone()
            .unwrap_or_else(|| "latest".parse().expect("latest is a valid tag"))
    }

    pub(super) fn reference(&self) -> Reference {
        match &self.digest {
            Some(d) => Reference::Digest(d.clone()),
            None => Reference::Tag(self.tag()),
        }
    }
}

/// A platform as `os/architecture[/variant]` (`linux/arm64`, `linux/arm/v7`). Without a
/// variant it matches every variant of the architecture.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    pub variant: Option<String>,
}

impl std::str::FromStr for Platform {
    type Err = String;

    fn from_str(s: &str) -> Result<Platform, String> {
        let parts: Vec<&str> = s.trim().split('/').collect();
        let bad = || format!("{s:?} is no platform: write os/architecture[/variant], like linux/amd64");
        if parts.iter().any(|p| p.is_empty()) {
            return Err(bad());
        }
        match parts.as_slice() {
            [os, arch] => Ok(Platform {
                os: os.to_string(),
                architecture: arch.to_string(),
                variant: None,
            }),
            [os, arch, variant] => Ok(Platform {
                os: os.to_string(),
                architecture: arch.to_string(),
                variant: Some(variant.to_string()),
            }),
            _ => Err(bad()),
        }
    }
}

impl Platform {
    pub(super) fn matches(&self, p: &DescPlatform) -> bool {
        self.os == p.os
            && self.architecture == p.architecture
            && self
                .variant
                .as_ref()
                .is_none_or(|v| p.variant.as_ref() == Some(v))
    }
}

/// What `POST /admin/prefetch` takes as its JSON body.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrefetchOptions {
    /// Images as clients name them.
    pub images: Vec<String>,
    /// `os/architecture[/variant]`: only these children of an index (all when empty).
    #[serde(default)]
    pub platforms: Vec<String>,
    /// Also the referrers (signatures, SBOMs, attestations) of each manifest and their content.
    #[serde(default)]
    pub referrers: bool,
    /// Pin everything fetched, so eviction keeps it.
    #[serde(default)]
    pub pin: bool,
}

impl PrefetchOptions {
    pub fn parsed_platforms(&self) -> Result<Vec<Platform>, String> {
        self.platforms.iter().map(|p| p.parse()).collect()
    }
}

/// One line of `POST /admin/prefetch`'s answer (newline-delimited JSON, tagged by `event`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum PrefetchEvent {
    /// An image's work begins: where its name resolved to.
    Started {
        image: String,
        upstream: String,
        repository: String,
        reference: String,
    },
    /// An image manifest to fetch the blobs of: how many blobs and their announced bytes.
    Manifest {
        image: String,
        digest: String,
        platform: Option<String>,
        blobs: u64,
        bytes: u64,
    },
    /// A blob is in the cache, verified (`cached`: it was there before).
    Blob {
        image: String,
        digest: String,
        bytes: u64,
        cached: bool,
    },
    /// An image is complete.
    Done {
        image: String,
        /// The digest the reference resolved to (the index, for a multi-platform image).
        digest: String,
        /// The platforms fetched of an index; empty for a single-platform image.
        platforms: Vec<String>,
        manifests: u64,
        blobs: u64,
        bytes: u64,
        pinned: bool,
    },
    /// An image failed; the others go on.
    Failed { image: String, reason: String },
    /// The last line.
    Summary {
        images: u64,
        failed: u64,
        blobs: u64,
        bytes: u64,
    },
}

/// What an unpin did (the admin API's answer).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnpinReport {
    pub upstream: String,
    pub repository: String,
    pub digest: String,
    pub manifests: u64,
    pub blobs: u64,
}

#[derive(Deserialize)]
pub(super) struct DescPlatform {
    #[serde(default)]
    pub(super) os: String,
    #[serde(default)]
    pub(super) architecture: String,
    pub(super) variant: Option<String>,
}

impl DescPlatform {
    pub(super) fn text(&self) -> String {
        match &self.variant {
            Some(v) => format!("{}/{}/{v}", self.os, self.architecture),
            None => format!("{}/{}", self.os, self.architecture),
        }
    }
}

#[derive(Deserialize)]
pub(super) struct Descriptor {
    pub(super) digest: String,
    #[serde(default)]
    pub(super) size: u64,
    pub(super) platform: Option<DescPlatform>,
}

#[derive(Deserialize)]
pub(super) struct Parsed {
    #[serde(rename = "mediaType")]
    pub(super) media_type: Option<String>,
    pub(super) config: Option<Descriptor>,
    #[serde(default)]
    pub(super) layers: Vec<Descriptor>,
    pub(super) manifests: Option<Vec<Descriptor>>,
}

pub(super) fn parse(bytes: &[u8]) -> Result<Parsed, RegistryError> {
    serde_json::from_slice(bytes)
        .map_err(|e| RegistryError::BadUpstreamManifest(format!("manifest does not parse: {e}")))
}

pub(super) fn is_index(media_type: &str, parsed: &Parsed) -> bool {
    let declared = parsed.media_type.as_deref().unwrap_or(media_type);
    declared == MediaType::OCI_INDEX || declared == MediaType::DOCKER_LIST || parsed.manifests.is_some()
}

pub(super) fn digest_of(d: &Descriptor) -> Result<Digest, RegistryError> {
    d.digest
        .parse()
        .map_err(|e| RegistryError::BadUpstreamManifest(format!("descriptor digest {:?}: {e}", d.digest)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_by_tag_and_digest() {
        let d = format!("sha256:{}", "a".repeat(64));
        let r: PrefetchRef = format!("ghcr.io/org/app@{d}").parse().unwrap();
        assert_eq!(r.image.host.as_deref(), Some("ghcr.io"));
        assert_eq!(r.reference().to_string(), d);
        let r: PrefetchRef = "alpine".parse().unwrap();
        assert_eq!(r.reference().to_string(), "latest");
        let r: PrefetchRef = "127.0.0.1:5000/org/app:v1".parse().unwrap();
        assert_eq!(r.image.host.as_deref(), Some("127.0.0.1:5000"));
        assert_eq!(r.reference().to_string(), "v1");
        assert!("app@sha256:abc".parse::<PrefetchRef>().is_err());
    }

    #[test]
    fn platforms_match_os_arch_and_variant() {
        let p = |s: &str| s.parse::<Platform>().unwrap();
        let desc = |v: Option<&str>| DescPlatform {
            os: "linux".into(),
            architecture: "arm".into(),
            variant: v.map(String::from),
        };
        assert!(p("linux/arm").matches(&desc(Some("v7"))));
        assert!(p("linux/arm/v7").matches(&desc(Some("v7"))));
        assert!(!p("linux/arm/v6").matches(&desc(Some("v7"))));
        assert!(!p("linux/amd64").matches(&desc(None)));
        assert!("linux".parse::<Platform>().is_err());
        assert!("linux//v7".parse::<Platform>().is_err());
    }
}
