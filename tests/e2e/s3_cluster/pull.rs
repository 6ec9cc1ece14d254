//! The cluster test's client: a registry pull in one of the three name forms clients use,
//! manifest by tag (or digest) then every blob by digest, each body streamed and checked: the
//! manifest's bytes against the pushed ones, each blob's length and SHA-256 against its digest.

use sha2::{Digest as _, Sha256};

use crate::support::big_image;
use crate::support::e2e::images::TestImage;

/// What a client sends for a manifest.
const ACCEPT: &str = "application/vnd.oci.image.manifest.v1+json, \
    application/vnd.oci.image.index.v1+json, \
    application/vnd.docker.distribution.manifest.v2+json, \
    application/vnd.docker.distribution.manifest.list.v2+json";

/// How a client names a Docker Hub repository to a mirror.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NameForm {
    /// dockerd's `registry-mirrors`: `/v2/library/app/...` (the default upstream).
    Dockerd,
    /// containerd's `hosts.toml` mirror: the same with `?ns=docker.io`.
    Containerd,
    /// CRI-O and podman: `/v2/docker.io/library/app/...`.
    CriO,
}

impl NameForm {
    pub const ALL: [NameForm; 3] = [NameForm::Dockerd, NameForm::Containerd, NameForm::CriO];

    /// The URL of `kind` (`manifests` or `blobs`) `reference` of `repo` on `base`.
    pub fn url(self, base: &str, repo: &str, kind: &str, reference: &str) -> String {
        match self {
            NameForm::Dockerd => format!("{base}/v2/{repo}/{kind}/{reference}"),
            NameForm::Containerd => format!("{base}/v2/{repo}/{kind}/{reference}?ns=docker.io"),
            NameForm::CriO => format!("{base}/v2/docker.io/{repo}/{kind}/{reference}"),
        }
    }
}

/// A plain HTTP client that never uses a proxy from the environment.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("HTTP client")
}

/// How a blob GET ended.
#[derive(Debug)]
pub enum BlobRead {
    /// The whole body arrived: its length and `sha256:` digest.
    Complete { len: u64, digest: String },
    /// The body ended early or with an error, after `len` bytes.
    Broken { len: u64, error: String },
}

/// GETs `url`, streaming the body through SHA-256; `progress` sees the byte count as it grows.
pub async fn read_blob(
    client: &reqwest::Client,
    url: &str,
    expected_len: u64,
    progress: Option<&std::sync::atomic::AtomicU64>,
) -> Result<BlobRead, String> {
    let mut response = client
        .get(url)
        .send()
        .await
        .map_err(|e| format!("GET {url}: {e}"))?;
    if response.status() != reqwest::StatusCode::OK {
        return Err(format!("GET {url}: {}", response.status()));
    }
    let mut hasher = Sha256::new();
    let mut len = 0u64;
    loop {
        match response.chunk().await {
            Ok(Some(bytes)) => {
                hasher.update(&bytes);
                len += bytes.len() as u64;
                if let Some(p) = progress {
                    p.store(len, std::sync::atomic::Ordering::SeqCst);
                }
            }
            Ok(None) if len == expected_len => {
                let digest = format!("sha256:{:x}", hasher.finalize());
                return Ok(BlobRead::Complete { len, digest });
            }
            Ok(None) => {
                return Ok(BlobRead::Broken {
                    len,
                    error: "short body".into(),
                })
            }
            Err(e) => {
                return Ok(BlobRead::Broken {
                    len,
                    error: e.to_string(),
                })
            }
        }
    }
}

/// GETs blob `digest` of `image` and checks it whole: length and SHA-256.
pub async fn blob(
    client: &reqwest::Client,
    base: &str,
    form: NameForm,
    image: &TestImage,
    digest: &str,
) -> Result<u64, String> {
    let url = form.url(base, &image.repo, "blobs", digest);
    let size = big_image::blob_size(image, digest);
    match read_blob(client, &url, size, None).await? {
        BlobRead::Complete { len, digest: got } if got == digest => Ok(len),
        other => Err(format!("GET {url}: {other:?}, expected {size} bytes of {digest}")),
    }
}

/// GETs the manifest of `image` by `reference` (its tag or digest) and checks it is the pushed
/// bytes.
pub async fn manifest(
    client: &reqwest::Client,
    base: &str,
    form: NameForm,
    image: &TestImage,
    reference: &str,
) -> Result<(), String> {
    let url = form.url(base, &image.repo, "manifests", reference);
    let response = client
        .get(&url)
        .header("accept", ACCEPT)
        .send()
        .await
        .map_err(|e| format!("GET {url}: {e}"))?;
    let status = response.status();
    let bytes = response.bytes().await.map_err(|e| format!("GET {url}: {e}"))?;
    if status != reqwest::StatusCode::OK {
        return Err(format!(
            "GET {url}: {status}: {}",
            String::from_utf8_lossy(&bytes)
        ));
    }
    if bytes[..] != big_image::manifest_bytes(image)[..] {
        return Err(format!(
            "GET {url}: not the pushed manifest ({} bytes)",
            bytes.len()
        ));
    }
    Ok(())
}

/// A whole pull: the manifest by `reference`, then every blob one after another; the bytes
/// of blobs read.
pub async fn image(
    client: &reqwest::Client,
    base: &str,
    form: NameForm,
    image: &TestImage,
    reference: &str,
) -> Result<u64, String> {
    manifest(client, base, form, image, reference).await?;
    let mut total = 0;
    for digest in &image.blobs {
        total += blob(client, base, form, image, digest).await?;
    }
    Ok(total)
}
