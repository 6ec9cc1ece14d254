//! Bundles that carry cached images across an air gap (`regcache export`, `regcache import`,
//! `GET /admin/export`, `POST /admin/import`). A bundle is an OCI image layout in a tar archive
//! (`oci-layout`, `index.json`, `blobs/<alg>/<hex>`), so standard tools read it (`skopeo copy
//! oci-archive:bundle.tar:<ref>`, `ctr import`); each image's entry in `index.json` names its full
//! upstream reference (`docker.io/library/alpine:3.20`) in both `org.opencontainers.image.ref.name`
//! and containerd's `io.containerd.image.name`, so an import puts it back under the upstream and
//! repository it came from. Referrers (signatures, SBOMs) travel as entries without a name; their
//! `subject` says where they belong.
//!
//! Export (`bundle/export.rs`) reads only the cache, never the upstream, and streams: one blob at
//! a time, under a lease. Import (`bundle/import.rs`) stages every file of the archive while
//! hashing it, checks every digest and every manifest's references (`bundle/plan.rs`), and only
//! then adopts the content into the store and writes the tag records, links and referrers lists
//! (`bundle/commit.rs`): a bundle with one wrong byte adds nothing. It also reads an OCI layout
//! that other tools wrote and a `docker save` archive (`bundle/docker_save.rs`).

mod archive;
mod commit;
mod docker_save;
mod export;
mod import;
mod layout;
mod plan;

use serde::{Deserialize, Serialize};

pub(in crate::registry) use commit::add_referrer;
pub use export::ExportPlan;
pub use import::ImportOptions;
pub(in crate::registry) use layout::ManifestHead;

/// What an export is asked for (the admin API's query, the CLI's arguments).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct ExportOptions {
    /// Images as clients name them (`alpine:3.20`, `ghcr.io/org/app@sha256:…`).
    #[serde(default)]
    pub images: Vec<String>,
    /// Every cached tag and every cached manifest a repository links.
    #[serde(default)]
    pub all: bool,
    /// Every pinned image.
    #[serde(default)]
    pub pinned: bool,
}

/// One image of a bundle, as exported or imported.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct BundleImage {
    /// The full reference (`docker.io/library/alpine:3.20`, `host/repo@sha256:…`).
    pub name: String,
    pub upstream: String,
    pub repository: String,
    pub tag: Option<String>,
    pub digest: String,
    /// Platforms of an index that the bundle carries (empty for a single manifest).
    pub platforms: Vec<String>,
}

/// What an export wrote.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct ExportReport {
    pub images: Vec<BundleImage>,
    /// Manifests (with referrers) and blobs written, each once.
    pub manifests: u64,
    pub blobs: u64,
    /// Bytes of content (not counting the archive's headers).
    pub bytes: u64,
    /// Children of an index left out because the cache does not hold them (platforms never
    /// pulled here).
    #[serde(default)]
    pub children_left_out: u64,
}

/// What an import added.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct ImportReport {
    pub images: Vec<BundleImage>,
    pub manifests: u64,
    pub blobs: u64,
    /// Blobs and manifests placed in the store, and their bytes.
    pub added: u64,
    pub added_bytes: u64,
    /// Blobs and manifests the cache held already.
    pub present: u64,
    /// Children of an index that the bundle does not carry (platforms left out at export).
    pub absent_children: u64,
    pub pinned: bool,
}

/// Why a bundle was refused or could not be written; an import refused adds nothing.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    /// The archive cannot be read as a tar, or a file in it is malformed.
    #[error("the bundle is not readable: {0}")]
    Unreadable(String),
    /// A blob's bytes do not hash to the digest that names it.
    #[error("{0}")]
    Corrupt(String),
    /// Something the bundle's images need is in neither the bundle nor the cache.
    #[error("{0}")]
    Incomplete(String),
    /// An image's name cannot be placed under a configured upstream.
    #[error("{0}")]
    Unplaceable(String),
    /// An export asked for an image the cache does not hold whole.
    #[error("{0}")]
    NotCached(String),
    #[error("{0}")]
    NoRoom(String),
    #[error("cache i/o: {0}")]
    Io(#[from] std::io::Error),
}
