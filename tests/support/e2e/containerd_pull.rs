//! A containerd-like verifying pull: what containerd sends to a `hosts.toml` mirror (`?ns=`,
//! HEAD to resolve the tag, then manifests and blobs by digest), with every body checked against
//! its digest and against a direct copy of the image. The same pull can name the upstream by a
//! leading path segment instead (`/v2/<host>/<repo>/...`, the CRI-O/podman mirror convention).

use std::net::SocketAddr;
use std::path::Path;

use hyper::{Method, StatusCode};

use super::http::{HttpClient, HttpResponse};
use super::images::{sha256_digest, TestImage, DOCKER_LIST, DOCKER_MANIFEST, OCI_INDEX, OCI_MANIFEST};

/// The Accept list containerd 1.6 sends when resolving a reference.
pub const CONTAINERD_ACCEPT: &str = "application/vnd.docker.distribution.manifest.v2+json, \
application/vnd.docker.distribution.manifest.list.v2+json, \
application/vnd.oci.image.manifest.v1+json, \
application/vnd.oci.image.index.v1+json, */*";

/// What a verifying pull fetched.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PullStats {
    /// Manifests (and indexes) fetched.
    pub manifests: usize,
    /// Config and layer blobs fetched.
    pub blobs: usize,
    /// Bytes of blobs fetched.
    pub blob_bytes: u64,
}

/// Pulls `image` from `mirror` the way containerd does with a `hosts.toml`
/// mirror: every request carries `?ns=<ns>`, the tag is resolved with HEAD,
/// then the manifest (and for an index, every child manifest), the config and
/// every layer are fetched by digest. Every body is checked against its digest
/// and against the bytes of `reference_dir` (a `dir:` copy pulled directly).
pub async fn containerd_pull(
    client: &HttpClient,
    mirror: SocketAddr,
    ns: &str,
    image: &TestImage,
    reference_dir: &Path,
) -> Result<PullStats, String> {
    let pull = Pull {
        client,
        base: format!("http://{mirror}/v2/{}", image.repo),
        query: format!("?ns={ns}"),
        reference_dir,
    };
    pull.run(image).await
}

/// The same verifying pull with the upstream named by the first path segment, `prefix`
/// (`/v2/<prefix>/<repo>/...`), and no query: what a mirror location `<mirror>/<prefix>` sends.
pub async fn prefixed_pull(
    client: &HttpClient,
    mirror: SocketAddr,
    prefix: &str,
    image: &TestImage,
    reference_dir: &Path,
) -> Result<PullStats, String> {
    let pull = Pull {
        client,
        base: format!("http://{mirror}/v2/{prefix}/{}", image.repo),
        query: String::new(),
        reference_dir,
    };
    pull.run(image).await
}

/// One verifying pull of one image.
struct Pull<'a> {
    client: &'a HttpClient,
    /// `http://<mirror>/v2/[<prefix>/]<repo>`.
    base: String,
    /// `?ns=<ns>`, or nothing when `base` names the upstream.
    query: String,
    reference_dir: &'a Path,
}

impl Pull<'_> {
    /// The whole pull: the tag, the manifest (every child of an index), configs and layers.
    async fn run(&self, image: &TestImage) -> Result<PullStats, String> {
        let mut stats = PullStats::default();
        self.resolve(image).await?;
        let top = fetch_manifest(self.client, &self.base, &self.query, &image.digest).await?;
        stats.manifests += 1;
        expect_same_file(self.reference_dir, "manifest.json", &top.body)?;
        let top_type = media_type_of(&top)?;
        if top_type != image.media_type {
            return Err(format!(
                "{}: media type {top_type}, want {}",
                image.reference(),
                image.media_type
            ));
        }
        let manifests = if top_type == OCI_INDEX || top_type == DOCKER_LIST {
            self.children(&top.body, &mut stats).await?
        } else {
            vec![serde_json::from_slice(&top.body).map_err(|e| format!("manifest json: {e}"))?]
        };
        for manifest in &manifests {
            self.blobs(manifest, &mut stats).await?;
        }
        Ok(stats)
    }

    /// HEAD on the tag, which must answer the image's digest.
    async fn resolve(&self, image: &TestImage) -> Result<(), String> {
        let head_url = format!("{}/manifests/{}{}", self.base, image.tag, self.query);
        let head = self
            .client
            .pull_request(Method::HEAD, &head_url, CONTAINERD_ACCEPT)
            .await?;
        if head.status != StatusCode::OK {
            return Err(format!("HEAD {head_url}: {}", head.status));
        }
        match head.header("docker-content-digest") {
            Some(d) if d == image.digest => Ok(()),
            other => Err(format!(
                "HEAD {head_url}: Docker-Content-Digest {other:?}, want {}",
                image.digest
            )),
        }
    }

    /// Every child manifest of an index, checked against its descriptor; their JSON.
    async fn children(&self, index: &[u8], stats: &mut PullStats) -> Result<Vec<serde_json::Value>, String> {
        let index: serde_json::Value =
            serde_json::from_slice(index).map_err(|e| format!("index json: {e}"))?;
        let mut children = Vec::new();
        for desc in index["manifests"].as_array().ok_or("index without manifests")? {
            let digest = desc["digest"].as_str().ok_or("child without digest")?;
            let child = fetch_manifest(self.client, &self.base, &self.query, digest).await?;
            stats.manifests += 1;
            if desc["size"].as_u64() != Some(child.body.len() as u64) {
                return Err(format!(
                    "child {digest}: size {} vs descriptor {}",
                    child.body.len(),
                    desc["size"]
                ));
            }
            let child_type = media_type_of(&child)?;
            if child_type != OCI_MANIFEST && child_type != DOCKER_MANIFEST {
                return Err(format!("child {digest}: unexpected media type {child_type}"));
            }
            expect_same_file(
                self.reference_dir,
                &format!("{}.manifest.json", digest.trim_start_matches("sha256:")),
                &child.body,
            )?;
            children.push(serde_json::from_slice(&child.body).map_err(|e| format!("manifest json: {e}"))?);
        }
        Ok(children)
    }

    /// The config and every layer of `manifest`, each checked against its descriptor.
    async fn blobs(&self, manifest: &serde_json::Value, stats: &mut PullStats) -> Result<(), String> {
        let mut descriptors = vec![manifest["config"].clone()];
        descriptors.extend(manifest["layers"].as_array().cloned().unwrap_or_default());
        for desc in descriptors {
            let digest = desc["digest"].as_str().ok_or("descriptor without digest")?;
            let url = format!("{}/blobs/{digest}{}", self.base, self.query);
            let blob = self.client.pull_request(Method::GET, &url, "*/*").await?;
            if blob.status != StatusCode::OK {
                return Err(format!("GET {url}: {}", blob.status));
            }
            let actual = sha256_digest(&blob.body);
            if actual != digest {
                return Err(format!("GET {url}: body digest {actual}"));
            }
            if desc["size"].as_u64() != Some(blob.body.len() as u64) {
                return Err(format!(
                    "GET {url}: {} bytes, descriptor says {}",
                    blob.body.len(),
                    desc["size"]
                ));
            }
            expect_same_file(
                self.reference_dir,
                digest.trim_start_matches("sha256:"),
                &blob.body,
            )?;
            stats.blobs += 1;
            stats.blob_bytes += blob.body.len() as u64;
        }
        Ok(())
    }
}

async fn fetch_manifest(
    client: &HttpClient,
    base: &str,
    query: &str,
    digest: &str,
) -> Result<HttpResponse, String> {
    let url = format!("{base}/manifests/{digest}{query}");
    let response = client.pull_request(Method::GET, &url, CONTAINERD_ACCEPT).await?;
    if response.status != StatusCode::OK {
        return Err(format!(
            "GET {url}: {} {}",
            response.status,
            String::from_utf8_lossy(&response.body)
        ));
    }
    let actual = sha256_digest(&response.body);
    if actual != digest {
        return Err(format!("GET {url}: body digest {actual}"));
    }
    if let Some(header) = response.header("docker-content-digest") {
        if header != digest {
            return Err(format!("GET {url}: Docker-Content-Digest {header}"));
        }
    }
    Ok(response)
}

/// The manifest's media type from Content-Type, checked against the body's
/// `mediaType` field when that is present.
fn media_type_of(response: &HttpResponse) -> Result<String, String> {
    let content_type = response
        .header("content-type")
        .map(|v| v.split(';').next().unwrap_or("").trim().to_string())
        .unwrap_or_default();
    let json: serde_json::Value =
        serde_json::from_slice(&response.body).map_err(|e| format!("manifest json: {e}"))?;
    if let Some(body_type) = json["mediaType"].as_str() {
        if body_type != content_type {
            return Err(format!(
                "Content-Type {content_type:?} but body mediaType {body_type:?}"
            ));
        }
    }
    Ok(content_type)
}

fn expect_same_file(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), String> {
    let expected =
        std::fs::read(dir.join(name)).map_err(|e| format!("read {name} in {}: {e}", dir.display()))?;
    if expected != bytes {
        return Err(format!("{name}: bytes differ from the direct copy"));
    }
    Ok(())
}
