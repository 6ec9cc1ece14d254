//! Deterministic layers: seeded pseudo-random files packed with tar + gzip, with every header
//! field that could vary (mtime, owner, gzip header time) fixed.

use std::io::Write as _;

use super::sha256_digest;

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
}
