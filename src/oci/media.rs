//! Manifest media types and `Accept` negotiation.

/// Manifest media types regcache asks upstreams for: every schema clients use today.
pub const MANIFEST_ACCEPT: &[&str] = &[
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.docker.distribution.manifest.v2+json",
];

pub struct MediaType;

impl MediaType {
    pub const OCI_INDEX: &'static str = "application/vnd.oci.image.index.v1+json";
    pub const OCI_MANIFEST: &'static str = "application/vnd.oci.image.manifest.v1+json";
    pub const DOCKER_LIST: &'static str = "application/vnd.docker.distribution.manifest.list.v2+json";
    pub const DOCKER_MANIFEST: &'static str = "application/vnd.docker.distribution.manifest.v2+json";
}

/// Whether a client's `Accept` header values admit `media_type`. Several header lines and
/// comma-separated lists are merged; parameters (`;q=`) are ignored, as distribution does. No
/// `Accept` at all admits everything.
pub fn accepts<'a>(accept_values: impl IntoIterator<Item = &'a str>, media_type: &str) -> bool {
    let mut seen_any = false;
    for value in accept_values {
        for item in value.split(',') {
            let item = item.split(';').next().unwrap_or("").trim();
            if item.is_empty() {
                continue;
            }
            seen_any = true;
            if item == "*/*" || item.eq_ignore_ascii_case(media_type) || item == "application/*" {
                return true;
            }
        }
    }
    !seen_any
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiation() {
        let oci = MediaType::OCI_MANIFEST;
        assert!(accepts([], oci));
        assert!(accepts(["application/json, */*;q=0.1"], oci));
        assert!(accepts(
            ["application/vnd.docker.distribution.manifest.v2+json", oci],
            oci
        ));
        assert!(!accepts(
            ["application/vnd.docker.distribution.manifest.v2+json"],
            oci
        ));
    }
}
