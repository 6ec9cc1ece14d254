//! The content a manifest points at: an image manifest's config and layers (and a schema 1
//! manifest's `fsLayers`), an index's child manifests. Parsing is lenient: whatever is not a
//! well-formed descriptor with a valid digest is skipped, since this only steers cache recency.

use serde::Deserialize;

use super::Digest;

/// Digests a manifest references, by what they are.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct References {
    /// Config and layer blobs.
    pub blobs: Vec<Digest>,
    /// Child manifests of an index (manifest list).
    pub manifests: Vec<Digest>,
}

#[derive(Deserialize)]
struct Descriptor {
    digest: Option<String>,
}

#[derive(Deserialize)]
struct Schema1Layer {
    #[serde(rename = "blobSum")]
    blob_sum: Option<String>,
}

#[derive(Deserialize)]
struct Manifest {
    config: Option<Descriptor>,
    #[serde(default)]
    layers: Vec<Descriptor>,
    #[serde(default)]
    manifests: Vec<Descriptor>,
    #[serde(rename = "fsLayers", default)]
    fs_layers: Vec<Schema1Layer>,
}

fn digests<'a>(texts: impl Iterator<Item = Option<&'a String>>) -> Vec<Digest> {
    texts.filter_map(|t| t.and_then(|t| t.parse().ok())).collect()
}

/// The references of a manifest's JSON bytes; empty when they do not parse.
pub fn references(bytes: &[u8]) -> References {
    let Ok(m) = serde_json::from_slice::<Manifest>(bytes) else {
        return References::default();
    };
    let config = m.config.as_ref().map(|c| c.digest.as_ref());
    let mut blobs: Vec<Digest> = digests(
        config
            .into_iter()
            .chain(m.layers.iter().map(|l| l.digest.as_ref()))
            .chain(m.fs_layers.iter().map(|l| l.blob_sum.as_ref())),
    );
    blobs.dedup();
    References {
        blobs,
        manifests: digests(m.manifests.iter().map(|c| c.digest.as_ref())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(c: char) -> String {
        format!("sha256:{}", c.to_string().repeat(64))
    }

    #[test]
    fn image_manifest_and_index() {
        let m = format!(
            r#"{{"schemaVersion":2,"config":{{"digest":"{}","size":1}},
            "layers":[{{"digest":"{}"}},{{"digest":"bogus"}},{{"digest":"{}"}}]}}"#,
            d('a'),
            d('b'),
            d('c')
        );
        let r = references(m.as_bytes());
        assert_eq!(r.blobs.len(), 3);
        assert_eq!(r.blobs[0].to_string(), d('a'));
        assert!(r.manifests.is_empty());
        let i = format!(
            r#"{{"manifests":[{{"digest":"{}"}},{{"digest":"{}"}}]}}"#,
            d('d'),
            d('e')
        );
        let r = references(i.as_bytes());
        assert_eq!(r.manifests.len(), 2);
        assert!(r.blobs.is_empty());
        assert_eq!(references(b"not json"), References::default());
        let s1 = format!(r#"{{"fsLayers":[{{"blobSum":"{}"}}]}}"#, d('f'));
        assert_eq!(references(s1.as_bytes()).blobs.len(), 1);
    }
}
