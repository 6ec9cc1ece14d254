//! A tiny runnable test image for the Docker end-to-end test: `library/busybox`, a Docker schema2
//! image for the host's architecture made of two layers, the statically linked busybox of
//! Debian's `busybox-static` package as `/bin/busybox` (with `/bin/sh` linking to it) and a
//! greeting file, whose default command prints the greeting. Written as a skopeo `dir:` layout
//! and described by a [`TestImage`], like the other test images, so `images::push_all` pushes it.
//!
//! A container needs no library from the host to run it: that is why the binary must be static
//! ([`static_busybox`] checks the ELF program headers for an interpreter).

use std::io::Write as _;
use std::path::{Path, PathBuf};

use serde_json::json;

use crate::support::e2e::images::{
    sha256_digest, DirLayout, TestImage, DOCKER_CONFIG, DOCKER_LAYER_GZIP, DOCKER_MANIFEST,
};

/// Where `busybox-static` installs the binary.
pub const BUSYBOX: &str = "/bin/busybox";
/// What the image's default command prints.
pub const GREETING: &str = "hello from library/busybox, pulled through regcache\n";
/// The image's repository on the (test) Docker Hub.
pub const REPO: &str = "library/busybox";

/// [`BUSYBOX`] if it exists and is a statically linked 64-bit ELF executable.
pub fn static_busybox() -> Option<PathBuf> {
    let bytes = std::fs::read(BUSYBOX).ok()?;
    is_static_elf64(&bytes).then(|| PathBuf::from(BUSYBOX))
}

/// True for a little-endian 64-bit ELF file without a `PT_INTERP` program header (no dynamic
/// loader needed).
pub fn is_static_elf64(bytes: &[u8]) -> bool {
    const PT_INTERP: u32 = 3;
    if bytes.len() < 64 || &bytes[..4] != b"\x7fELF" || bytes[4] != 2 || bytes[5] != 1 {
        return false;
    }
    let u16_at = |at: usize| u16::from_le_bytes([bytes[at], bytes[at + 1]]) as usize;
    let phoff = u64::from_le_bytes(bytes[0x20..0x28].try_into().expect("8 bytes")) as usize;
    let (phentsize, phnum) = (u16_at(0x36), u16_at(0x38));
    if phnum == 0 || phentsize < 4 {
        return false;
    }
    (0..phnum).all(|i| {
        let at = phoff + i * phentsize;
        bytes
            .get(at..at + 4)
            .is_some_and(|t| u32::from_le_bytes(t.try_into().expect("4 bytes")) != PT_INTERP)
    })
}

/// The image config's name for the host architecture.
pub fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "arm" => "arm",
        "powerpc64" => "ppc64le",
        "s390x" => "s390x",
        other => other,
    }
}

/// A deterministic tar archive (fixed mtime and owner) of `entries`: (path, mode, content) for
/// files, (path, 0o755, empty) for a path ending in `/`, and a `->` in the path for a symlink
/// (`bin/sh->busybox`). Returns (gzip bytes, `sha256:` of the tar).
fn layer(entries: &[(&str, u32, &[u8])]) -> std::io::Result<(Vec<u8>, String)> {
    let mut builder = tar::Builder::new(Vec::new());
    builder.mode(tar::HeaderMode::Deterministic);
    for (path, mode, content) in entries {
        let mut header = tar::Header::new_gnu();
        header.set_mode(*mode);
        header.set_mtime(0);
        header.set_uid(0);
        header.set_gid(0);
        if let Some((link, target)) = path.split_once("->") {
            header.set_entry_type(tar::EntryType::Symlink);
            header.set_size(0);
            builder.append_link(&mut header, link, target)?;
        } else if path.ends_with('/') {
            header.set_entry_type(tar::EntryType::Directory);
            header.set_size(0);
            builder.append_data(&mut header, path, std::io::empty())?;
        } else {
            header.set_entry_type(tar::EntryType::Regular);
            header.set_size(content.len() as u64);
            builder.append_data(&mut header, path, *content)?;
        }
    }
    let tar_bytes = builder.into_inner()?;
    let mut encoder = flate2::GzBuilder::new()
        .mtime(0)
        .write(Vec::new(), flate2::Compression::default());
    encoder.write_all(&tar_bytes)?;
    Ok((encoder.finish()?, sha256_digest(&tar_bytes)))
}

/// Builds the image from `busybox` as a `dir:` layout at `layout`.
pub fn build(layout: &Path, busybox: &Path) -> std::io::Result<TestImage> {
    let layout = DirLayout::create(layout.to_path_buf())?;
    let binary = std::fs::read(busybox)?;
    let tools = layer(&[
        ("bin/", 0o755, b""),
        ("bin/busybox", 0o755, binary.as_slice()),
        ("bin/sh->busybox", 0o777, b""),
    ])?;
    let greeting = layer(&[("etc/", 0o755, b""), ("etc/greeting", 0o644, GREETING.as_bytes())])?;
    let config = json!({
        "architecture": host_arch(),
        "os": "linux",
        "created": "1970-01-01T00:00:00Z",
        "config": {
            "Env": ["PATH=/bin"],
            "Cmd": ["/bin/sh", "-c", "cat /etc/greeting"],
            "Labels": {"org.regcache.e2e": "busybox"},
        },
        "rootfs": {"type": "layers", "diff_ids": [&tools.1, &greeting.1]},
        "history": [
            {"created": "1970-01-01T00:00:00Z", "created_by": "regcache e2e: busybox-static"},
            {"created": "1970-01-01T00:00:00Z", "created_by": "regcache e2e: greeting"},
        ],
    });
    let config = layout.blob(DOCKER_CONFIG, config.to_string().as_bytes())?;
    let mut blobs = vec![config["digest"].as_str().expect("digest").to_string()];
    let mut layers = Vec::new();
    for (gz, _) in [&tools, &greeting] {
        let desc = layout.blob(DOCKER_LAYER_GZIP, gz)?;
        blobs.push(desc["digest"].as_str().expect("digest").to_string());
        layers.push(desc);
    }
    let digest = layout.top_image_manifest(DOCKER_MANIFEST, &config, &layers)?;
    Ok(TestImage {
        repo: REPO.into(),
        tag: "latest".into(),
        digest,
        media_type: DOCKER_MANIFEST.into(),
        public: true,
        layout: layout.path,
        blobs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn static_elf_detection() {
        assert!(!is_static_elf64(b"#!/bin/sh\necho not an ELF file\n"));
        // The test binary itself is dynamically linked (it has an interpreter).
        let me = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        if me[4] == 2 && me[5] == 1 {
            assert!(!is_static_elf64(&me));
        }
    }

    #[test]
    fn layers_are_deterministic() {
        let a = layer(&[("d/", 0o755, b""), ("d/f", 0o644, b"x"), ("d/l->f", 0o777, b"")]).unwrap();
        let b = layer(&[("d/", 0o755, b""), ("d/f", 0o644, b"x"), ("d/l->f", 0o777, b"")]).unwrap();
        assert_eq!(a, b);
    }
}
