//! Test images with one big layer, for tests that need a download to last: an OCI image
//! manifest with a config, a small layer and a big one, both uncompressed tar archives of
//! seeded pseudo-random files (gzip in an unoptimized test build would take longer than the
//! test), written as a skopeo `dir:` layout and described as a [`TestImage`] for `push_all`.

use std::path::Path;

use serde_json::json;

use crate::support::e2e::images::{sha256_digest, DirLayout, TestImage, OCI_CONFIG, OCI_MANIFEST};

/// Uncompressed OCI layer media type.
pub const OCI_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";

/// `len` pseudo-random bytes from `seed` (xorshift64*).
pub fn random_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = vec![0u8; len.next_multiple_of(8)];
    for word in out.chunks_exact_mut(8) {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        word.copy_from_slice(&state.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// A tar archive of one file `name` holding `size` pseudo-random bytes from `seed`.
fn tar_layer(seed: u64, name: &str, size: usize) -> std::io::Result<Vec<u8>> {
    let content = random_bytes(seed, size);
    let mut builder = tar::Builder::new(Vec::with_capacity(size + 4096));
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(tar::EntryType::Regular);
    header.set_size(size as u64);
    header.set_mode(0o644);
    header.set_mtime(0);
    builder.append_data(&mut header, name, content.as_slice())?;
    builder.into_inner()
}

/// Builds `repo:tag` under `root` with a small layer and a `big` byte one, both from `seed`.
pub fn build(root: &Path, repo: &str, tag: &str, seed: u64, big: usize) -> std::io::Result<TestImage> {
    let short = repo.rsplit('/').next().unwrap_or(repo);
    let layout = DirLayout::create(root.join(short))?;
    let layers = [
        tar_layer(seed, &format!("{short}/small.bin"), 200_000)?,
        tar_layer(seed + 1, &format!("{short}/big.bin"), big)?,
    ];
    let diff_ids: Vec<String> = layers.iter().map(|l| sha256_digest(l)).collect();
    let config = json!({
        "architecture": "amd64",
        "os": "linux",
        "created": "1970-01-01T00:00:00Z",
        "config": {"Labels": {"org.regcache.e2e": short}},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    });
    let config = layout.blob(OCI_CONFIG, &serde_json::to_vec(&config).expect("config json"))?;
    let mut descriptors = Vec::new();
    for layer in &layers {
        descriptors.push(layout.blob(OCI_LAYER_TAR, layer)?);
    }
    let digest = layout.top_image_manifest(OCI_MANIFEST, &config, &descriptors)?;
    let digest_of = |d: &serde_json::Value| d["digest"].as_str().expect("digest").to_string();
    let mut blobs = vec![digest_of(&config)];
    blobs.extend(descriptors.iter().map(digest_of));
    Ok(TestImage {
        repo: repo.into(),
        tag: tag.into(),
        digest,
        media_type: OCI_MANIFEST.into(),
        public: true,
        layout: layout.path,
        blobs,
    })
}

/// The pushed manifest bytes of `image`.
pub fn manifest_bytes(image: &TestImage) -> Vec<u8> {
    std::fs::read(image.layout.join("manifest.json")).expect("manifest.json")
}

/// The size of blob `digest` of `image`.
pub fn blob_size(image: &TestImage, digest: &str) -> u64 {
    let file = image.layout.join(digest.trim_start_matches("sha256:"));
    std::fs::metadata(file).expect("blob in the layout").len()
}
