//! Deterministic content for the suite: blobs of patterned bytes seeded by name, an OCI image
//! manifest over a config and layers, an OCI index of two image manifests, and an artifact
//! manifest with `artifactType` and `subject` over the empty config. The same seed always gives
//! the same bytes and digests, so a rerun against the same registry pushes identical content,
//! and each workflow seeds its own so no workflow's deletions touch another's content.

use bytes::Bytes;
use serde_json::json;

use super::super::oci_push::sha256_digest;

pub const IMAGE_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const IMAGE_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const IMAGE_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const LAYER: &str = "application/vnd.oci.image.layer.v1.tar";
pub const EMPTY_CONFIG: &str = "application/vnd.oci.empty.v1+json";

/// A blob's bytes and sha256 digest.
#[derive(Clone, Debug)]
pub struct Blob {
    pub data: Bytes,
    pub digest: String,
}

impl Blob {
    pub fn new(data: impl Into<Bytes>) -> Blob {
        let data = data.into();
        Blob {
            digest: sha256_digest(&data),
            data,
        }
    }

    /// `len` bytes patterned from `seed`: every seed gives different content.
    pub fn patterned(seed: &str, len: usize) -> Blob {
        let salt = seed
            .bytes()
            .fold(7u32, |h, b| h.wrapping_mul(31).wrapping_add(u32::from(b)));
        let data: Vec<u8> = (0..len as u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) ^ salt).rotate_left(i % 13) as u8)
            .collect();
        Blob::new(data)
    }

    fn descriptor(&self, media_type: &str) -> serde_json::Value {
        json!({ "mediaType": media_type, "digest": self.digest, "size": self.data.len() })
    }
}

/// A manifest's bytes, media type and digest, with the blobs it needs pushed first.
#[derive(Clone, Debug)]
pub struct Manifest {
    pub media_type: &'static str,
    pub body: Bytes,
    pub digest: String,
    pub blobs: Vec<Blob>,
}

impl Manifest {
    fn new(media_type: &'static str, value: serde_json::Value, blobs: Vec<Blob>) -> Manifest {
        let body = Bytes::from(serde_json::to_vec_pretty(&value).expect("manifest json"));
        Manifest {
            media_type,
            digest: sha256_digest(&body),
            body,
            blobs,
        }
    }

    /// This manifest as a descriptor (for an index entry or a `subject`).
    pub fn descriptor(&self) -> serde_json::Value {
        json!({ "mediaType": self.media_type, "digest": self.digest, "size": self.body.len() })
    }
}

/// An OCI image: a config naming `seed` and two layers of `layer_len` bytes.
pub fn image(seed: &str, layer_len: usize) -> Manifest {
    let layers = [
        Blob::patterned(&format!("{seed}/layer0"), layer_len),
        Blob::patterned(&format!("{seed}/layer1"), layer_len / 2 + 1),
    ];
    let config = Blob::new(
        serde_json::to_vec(&json!({
            "architecture": "amd64",
            "os": "linux",
            "config": { "Labels": { "org.example.seed": seed } },
            "rootfs": {
                "type": "layers",
                "diff_ids": [layers[0].digest.clone(), layers[1].digest.clone()],
            },
        }))
        .expect("config json"),
    );
    let value = json!({
        "schemaVersion": 2,
        "mediaType": IMAGE_MANIFEST,
        "config": config.descriptor(IMAGE_CONFIG),
        "layers": [layers[0].descriptor(LAYER), layers[1].descriptor(LAYER)],
    });
    Manifest::new(
        IMAGE_MANIFEST,
        value,
        vec![config, layers[0].clone(), layers[1].clone()],
    )
}

/// An OCI index of `amd64` and `arm64`; its `blobs` are empty (push the two images first).
pub fn index(amd64: &Manifest, arm64: &Manifest) -> Manifest {
    let entry = |m: &Manifest, arch: &str| {
        let mut d = m.descriptor();
        d["platform"] = json!({ "architecture": arch, "os": "linux" });
        d
    };
    let value = json!({
        "schemaVersion": 2,
        "mediaType": IMAGE_INDEX,
        "manifests": [entry(amd64, "amd64"), entry(arm64, "arm64")],
    });
    Manifest::new(IMAGE_INDEX, value, Vec::new())
}

/// An artifact of type `artifact_type` about `subject`: the empty config and one small layer
/// holding `note`.
pub fn artifact(artifact_type: &str, subject: &Manifest, note: &str) -> Manifest {
    let empty = Blob::new(&b"{}"[..]);
    let layer = Blob::new(note.as_bytes().to_vec());
    let value = json!({
        "schemaVersion": 2,
        "mediaType": IMAGE_MANIFEST,
        "artifactType": artifact_type,
        "config": empty.descriptor(EMPTY_CONFIG),
        "layers": [layer.descriptor("text/plain")],
        "subject": subject.descriptor(),
        "annotations": { "org.example.note": note },
    });
    Manifest::new(IMAGE_MANIFEST, value, vec![empty, layer])
}
