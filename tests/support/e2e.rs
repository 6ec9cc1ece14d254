//! Shared support for the end-to-end registry tests: it declares the token
//! server, local registry and test image modules, and owns the helpers around
//! them: tool discovery, a `skopeo` runner with an isolated policy, registries
//! and auth configuration, `dir:` layout comparison, a plain HTTP client, and a
//! containerd-like verifying pull client that speaks the `?ns=` mirror
//! convention and checks every manifest and blob against its digest.

pub mod images;
pub mod registry;
pub mod token_server;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Empty};
use hyper::{Method, Request, StatusCode};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use images::{sha256_digest, TestImage, DOCKER_LIST, DOCKER_MANIFEST, OCI_INDEX, OCI_MANIFEST};

/// The skopeo binary.
pub const SKOPEO_BIN: &str = "skopeo";

/// The Accept list containerd 1.6 sends when resolving a reference.
pub const CONTAINERD_ACCEPT: &str = "application/vnd.docker.distribution.manifest.v2+json, \
application/vnd.docker.distribution.manifest.list.v2+json, \
application/vnd.oci.image.manifest.v1+json, \
application/vnd.oci.image.index.v1+json, */*";

/// Names of the required external tools that are missing.
pub fn missing_tools() -> Vec<String> {
    [registry::REGISTRY_BIN, SKOPEO_BIN]
        .into_iter()
        .filter(|tool| super::tools::find(tool).is_none())
        .map(str::to_string)
        .collect()
}

/// True when the external tools are present. Otherwise prints a loud notice and returns false
/// (the test skips), or panics when running under CI.
pub fn tools_present(test: &str) -> bool {
    let missing = missing_tools();
    if missing.is_empty() {
        return true;
    }
    super::tools::missing(
        test,
        &missing,
        "Install them with: apt-get install -y docker-registry skopeo containerd",
    );
    false
}

/// Runs `skopeo` with a private trust policy (accept anything), an empty auth
/// file for copies and, unless a test passes its own, an empty
/// `registries.conf` (through skopeo's hidden global `--registries-conf` flag;
/// skopeo 1.9 ignores `CONTAINERS_REGISTRIES_CONF`).
#[derive(Clone)]
pub struct Skopeo {
    dir: Arc<tempfile::TempDir>,
    policy: PathBuf,
    registries_conf: PathBuf,
    authfile: PathBuf,
}

impl Skopeo {
    /// Writes the private policy, auth and registries files.
    pub fn new() -> std::io::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("regcache-e2e-skopeo-")
            .tempdir()?;
        let policy = dir.path().join("policy.json");
        std::fs::write(&policy, r#"{"default":[{"type":"insecureAcceptAnything"}]}"#)?;
        let registries_conf = dir.path().join("registries.conf");
        std::fs::write(&registries_conf, "unqualified-search-registries = []\n")?;
        let authfile = dir.path().join("auth.json");
        std::fs::write(&authfile, r#"{"auths":{}}"#)?;
        std::fs::create_dir_all(dir.path().join("tmp"))?;
        Ok(Self {
            dir: Arc::new(dir),
            policy,
            registries_conf,
            authfile,
        })
    }

    /// `skopeo copy [args] SRC DST`; `Err` carries the exit status and stderr.
    pub async fn copy(
        &self,
        src: &str,
        dst: &str,
        args: &[&str],
        registries_conf: Option<&Path>,
    ) -> Result<(), String> {
        // Only loopback registries, named directly or reached through a
        // test registries.conf, may be contacted.
        for reference in [src, dst] {
            if let Some(name) = reference.strip_prefix("docker://") {
                let host = name.split('/').next().unwrap_or("");
                let loopback = host.starts_with("127.0.0.1:") || host.starts_with("localhost:");
                if !loopback && registries_conf.is_none() {
                    return Err(format!(
                        "refusing to copy {reference}: not a loopback registry and no registries.conf given"
                    ));
                }
            }
        }
        let authfile = self.authfile.to_string_lossy();
        let mut full = vec!["copy", "--quiet", "--authfile", &authfile];
        full.extend_from_slice(args);
        full.push(src);
        full.push(dst);
        self.run(&full, registries_conf).await.map(|_| ())
    }

    /// `skopeo <args>`; stdout on success, status and stderr on failure.
    pub async fn run(&self, args: &[&str], registries_conf: Option<&Path>) -> Result<String, String> {
        let tmp = self.dir.path().join("tmp");
        let mut command = tokio::process::Command::new(SKOPEO_BIN);
        command
            .arg("--policy")
            .arg(&self.policy)
            .arg("--tmpdir")
            .arg(&tmp)
            .arg("--command-timeout")
            .arg("90s")
            .arg("--registries-conf")
            .arg(registries_conf.unwrap_or(&self.registries_conf))
            .args(args)
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true);
        let output = tokio::time::timeout(Duration::from_secs(120), command.output())
            .await
            .map_err(|_| format!("skopeo {args:?} timed out"))?
            .map_err(|e| format!("skopeo {args:?}: {e}"))?;
        if output.status.success() {
            Ok(String::from_utf8_lossy(&output.stdout).into_owned())
        } else {
            Err(format!(
                "skopeo {args:?} failed ({}): {}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            ))
        }
    }
}

/// A `registries.conf` that sends `docker.io` to the mirror `mirror_location`
/// (for regcache the CRI-O / podman convention `127.0.0.1:PORT/docker.io`),
/// while the registry's own location is a dead loopback port (the discard
/// port 9) so a fallback can never leave the machine.
pub fn mirror_registries_conf(mirror_location: &str) -> String {
    format!(
        r#"unqualified-search-registries = []

[[registry]]
prefix = "docker.io"
location = "127.0.0.1:9"
insecure = true

[[registry.mirror]]
location = "{mirror_location}"
insecure = true
"#
    )
}

/// Every file (relative name → bytes) in a flat directory.
pub fn read_dir_files(dir: &Path) -> std::io::Result<BTreeMap<String, Vec<u8>>> {
    let mut files = BTreeMap::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_file() {
            files.insert(
                entry.file_name().to_string_lossy().into_owned(),
                std::fs::read(entry.path())?,
            );
        }
    }
    Ok(files)
}

/// Checks that two `dir:` layouts hold the same file names with the same
/// bytes; returns how many files were compared.
pub fn compare_dirs(expected: &Path, actual: &Path) -> Result<usize, String> {
    let a = read_dir_files(expected).map_err(|e| format!("read {}: {e}", expected.display()))?;
    let b = read_dir_files(actual).map_err(|e| format!("read {}: {e}", actual.display()))?;
    let names_a: Vec<&String> = a.keys().collect();
    let names_b: Vec<&String> = b.keys().collect();
    if names_a != names_b {
        return Err(format!(
            "file sets differ:\n  {}: {names_a:?}\n  {}: {names_b:?}",
            expected.display(),
            actual.display()
        ));
    }
    for (name, bytes) in &a {
        if &b[name] != bytes {
            return Err(format!(
                "{name} differs ({} bytes vs {} bytes)",
                bytes.len(),
                b[name].len()
            ));
        }
    }
    Ok(a.len())
}

/// A buffered HTTP response.
#[derive(Debug)]
pub struct HttpResponse {
    /// Status code.
    pub status: StatusCode,
    /// Response headers.
    pub headers: hyper::HeaderMap,
    /// The whole body.
    pub body: Bytes,
}

impl HttpResponse {
    /// A header as a string, if present and ASCII.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// A plain HTTP/1.1 client for loopback addresses. [`HttpClient::pull_get`]
/// also answers anonymous Bearer challenges like a registry client does.
#[derive(Clone)]
pub struct HttpClient {
    client: Client<HttpConnector, Empty<Bytes>>,
    bearer: Arc<Mutex<Option<String>>>,
}

impl Default for HttpClient {
    fn default() -> Self {
        Self::new()
    }
}

impl HttpClient {
    /// A new client.
    pub fn new() -> Self {
        Self {
            client: Client::builder(TokioExecutor::new()).build_http(),
            bearer: Arc::new(Mutex::new(None)),
        }
    }

    /// The Bearer token [`HttpClient::pull_request`] obtained last.
    pub fn bearer_token(&self) -> Option<String> {
        self.bearer.lock().expect("bearer").clone()
    }

    /// A registry-client request: sends the last Bearer token obtained, and
    /// on a `401` with a `Bearer` challenge fetches an anonymous token from
    /// the (loopback) realm and retries once.
    pub async fn pull_request(
        &self,
        method: Method,
        url: &str,
        accept: &str,
    ) -> Result<HttpResponse, String> {
        let token = self.bearer.lock().expect("bearer").clone();
        let response = self
            .with_token(method.clone(), url, accept, token.as_deref())
            .await?;
        if response.status != StatusCode::UNAUTHORIZED {
            return Ok(response);
        }
        let Some(challenge) = response.header("www-authenticate").map(str::to_string) else {
            return Ok(response);
        };
        let Some(token_url) = bearer_token_url(&challenge) else {
            return Ok(response);
        };
        let answer = self.get(&token_url, None).await?;
        if answer.status != StatusCode::OK {
            return Err(format!("token {token_url}: {}", answer.status));
        }
        let json: serde_json::Value =
            serde_json::from_slice(&answer.body).map_err(|e| format!("token {token_url}: {e}"))?;
        let token = json["token"]
            .as_str()
            .or_else(|| json["access_token"].as_str())
            .ok_or_else(|| format!("token {token_url}: no token in answer"))?
            .to_string();
        *self.bearer.lock().expect("bearer") = Some(token.clone());
        self.with_token(method, url, accept, Some(&token)).await
    }

    async fn with_token(
        &self,
        method: Method,
        url: &str,
        accept: &str,
        token: Option<&str>,
    ) -> Result<HttpResponse, String> {
        let authorization = token.map(|t| format!("Bearer {t}"));
        let mut headers = vec![("accept", accept)];
        if let Some(value) = &authorization {
            headers.push(("authorization", value.as_str()));
        }
        self.request_with(method, url, &headers).await
    }

    /// Sends `method url` with an optional Accept header and buffers the
    /// response; follows up to 3 redirects that stay on 127.0.0.1.
    pub async fn request(
        &self,
        method: Method,
        url: &str,
        accept: Option<&str>,
    ) -> Result<HttpResponse, String> {
        match accept {
            Some(accept) => self.request_with(method, url, &[("accept", accept)]).await,
            None => self.request_with(method, url, &[]).await,
        }
    }

    /// Sends `method url` with extra headers and buffers the response;
    /// follows up to 3 redirects that stay on 127.0.0.1.
    pub async fn request_with(
        &self,
        method: Method,
        url: &str,
        headers: &[(&str, &str)],
    ) -> Result<HttpResponse, String> {
        let mut url = url.to_string();
        for _hop in 0..4 {
            let mut builder = Request::builder().method(method.clone()).uri(&url);
            for (name, value) in headers {
                builder = builder.header(*name, *value);
            }
            let request = builder.body(Empty::new()).map_err(|e| format!("{url}: {e}"))?;
            let response = tokio::time::timeout(Duration::from_secs(60), self.client.request(request))
                .await
                .map_err(|_| format!("{method} {url}: timed out"))?
                .map_err(|e| format!("{method} {url}: {e}"))?;
            let status = response.status();
            let headers = response.headers().clone();
            if status.is_redirection() {
                let location = headers
                    .get(hyper::header::LOCATION)
                    .and_then(|v| v.to_str().ok())
                    .ok_or_else(|| format!("{method} {url}: {status} without Location"))?;
                url = resolve_loopback_redirect(&url, location)?;
                continue;
            }
            let body = tokio::time::timeout(Duration::from_secs(60), response.into_body().collect())
                .await
                .map_err(|_| format!("{method} {url}: body timed out"))?
                .map_err(|e| format!("{method} {url}: body: {e}"))?
                .to_bytes();
            return Ok(HttpResponse {
                status,
                headers,
                body,
            });
        }
        Err(format!("{method} {url}: too many redirects"))
    }

    /// `GET url`.
    pub async fn get(&self, url: &str, accept: Option<&str>) -> Result<HttpResponse, String> {
        self.request(Method::GET, url, accept).await
    }
}

/// The token URL for a `Bearer realm="..",service="..",scope=".."`
/// challenge, if the realm is on loopback.
pub fn bearer_token_url(challenge: &str) -> Option<String> {
    let (scheme, params) = challenge.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let mut realm = None;
    let mut query = form_urlencoded::Serializer::new(String::new());
    let mut rest = params.trim();
    while !rest.is_empty() {
        let (key, after) = rest.split_once('=')?;
        let after = after.trim_start();
        let (value, remaining) = if let Some(quoted) = after.strip_prefix('"') {
            let end = quoted.find('"')?;
            (&quoted[..end], &quoted[end + 1..])
        } else {
            let end = after.find(',').unwrap_or(after.len());
            (&after[..end], &after[end..])
        };
        match key.trim() {
            "realm" => realm = Some(value.to_string()),
            "service" | "scope" => {
                query.append_pair(key.trim(), value);
            }
            _ => {}
        }
        rest = remaining.trim_start().trim_start_matches(',').trim_start();
    }
    let realm = realm?;
    if !(realm.starts_with("http://127.0.0.1:") || realm.starts_with("http://localhost:")) {
        return None;
    }
    let separator = if realm.contains('?') { '&' } else { '?' };
    Some(format!("{realm}{separator}{}", query.finish()))
}

/// Resolves a redirect target, refusing anything that leaves 127.0.0.1.
fn resolve_loopback_redirect(from: &str, location: &str) -> Result<String, String> {
    if location.starts_with('/') {
        let origin_end = from
            .find("://")
            .and_then(|i| from[i + 3..].find('/').map(|j| i + 3 + j))
            .unwrap_or(from.len());
        return Ok(format!("{}{location}", &from[..origin_end]));
    }
    if location.starts_with("http://127.0.0.1:") || location.starts_with("http://localhost:") {
        return Ok(location.to_string());
    }
    Err(format!("refusing redirect off loopback: {location}"))
}

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
    let base = format!("http://{mirror}/v2/{}", image.repo);
    let mut stats = PullStats::default();

    let head_url = format!("{base}/manifests/{}?ns={ns}", image.tag);
    let head = client
        .pull_request(Method::HEAD, &head_url, CONTAINERD_ACCEPT)
        .await?;
    if head.status != StatusCode::OK {
        return Err(format!("HEAD {head_url}: {}", head.status));
    }
    match head.header("docker-content-digest") {
        Some(d) if d == image.digest => {}
        other => {
            return Err(format!(
                "HEAD {head_url}: Docker-Content-Digest {other:?}, want {}",
                image.digest
            ))
        }
    }

    let top = fetch_manifest(client, &base, ns, &image.digest).await?;
    stats.manifests += 1;
    expect_same_file(reference_dir, "manifest.json", &top.body)?;
    let top_type = media_type_of(&top)?;
    if top_type != image.media_type {
        return Err(format!(
            "{}: media type {top_type}, want {}",
            image.reference(),
            image.media_type
        ));
    }

    let manifests: Vec<(serde_json::Value, Bytes)> = if top_type == OCI_INDEX || top_type == DOCKER_LIST {
        let index: serde_json::Value =
            serde_json::from_slice(&top.body).map_err(|e| format!("index json: {e}"))?;
        let mut children = Vec::new();
        for desc in index["manifests"].as_array().ok_or("index without manifests")? {
            let digest = desc["digest"].as_str().ok_or("child without digest")?;
            let child = fetch_manifest(client, &base, ns, digest).await?;
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
                reference_dir,
                &format!("{}.manifest.json", digest.trim_start_matches("sha256:")),
                &child.body,
            )?;
            let json = serde_json::from_slice(&child.body).map_err(|e| format!("manifest json: {e}"))?;
            children.push((json, child.body));
        }
        children
    } else {
        let json = serde_json::from_slice(&top.body).map_err(|e| format!("manifest json: {e}"))?;
        vec![(json, top.body.clone())]
    };

    for (manifest, _) in &manifests {
        let mut descriptors = vec![manifest["config"].clone()];
        descriptors.extend(manifest["layers"].as_array().cloned().unwrap_or_default());
        for desc in descriptors {
            let digest = desc["digest"].as_str().ok_or("descriptor without digest")?;
            let url = format!("{base}/blobs/{digest}?ns={ns}");
            let blob = client.pull_request(Method::GET, &url, "*/*").await?;
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
            expect_same_file(reference_dir, digest.trim_start_matches("sha256:"), &blob.body)?;
            stats.blobs += 1;
            stats.blob_bytes += blob.body.len() as u64;
        }
    }
    Ok(stats)
}

async fn fetch_manifest(
    client: &HttpClient,
    base: &str,
    ns: &str,
    digest: &str,
) -> Result<HttpResponse, String> {
    let url = format!("{base}/manifests/{digest}?ns={ns}");
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

/// True when `body` is an OCI distribution error document `{"errors":[...]}`
/// with at least one entry that has a `code`.
pub fn is_oci_error_body(body: &[u8]) -> bool {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("errors").and_then(|e| e.as_array()).cloned())
        .is_some_and(|errors| !errors.is_empty() && errors.iter().all(|e| e.get("code").is_some()))
}

/// regcache running in-process with `upstream_url` as its only upstream (`docker.io`, the
/// default), caching in `cache`. `RUST_LOG=regcache=debug` shows its log in test output.
pub async fn start_mirror(upstream_url: &str, cache: &Path, tag_ttl: &str) -> regcache::app::Running {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let text = format!(
        r#"
listen = "127.0.0.1:0"
builtin_upstreams = false
[admin]
listen = "127.0.0.1:0"
[cache]
dir = "{dir}"
tag_ttl = "{tag_ttl}"
revalidate_timeout = "2s"
[[upstreams]]
host = "docker.io"
url = "{upstream_url}"
default = true
"#,
        dir = cache.display(),
    );
    let config = regcache::config::Config::from_toml_str(&text).expect("regcache config");
    regcache::app::start(config).await.expect("start regcache")
}

/// Elapsed-time log lines for an end-to-end test's output, prefixed with the test's label.
pub struct Clock(pub &'static str, pub std::time::Instant);

impl Clock {
    pub fn new(label: &'static str) -> Clock {
        Clock(label, std::time::Instant::now())
    }

    pub fn mark(&self, what: &str) {
        eprintln!("[{} {:>6.2}s] {what}", self.0, self.1.elapsed().as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn bearer_challenge_to_token_url() {
        let url = super::bearer_token_url(
            r#"Bearer realm="http://127.0.0.1:1/token",service="registry.docker.io",scope="repository:library/a:pull""#,
        );
        assert_eq!(
            url.as_deref(),
            Some("http://127.0.0.1:1/token?service=registry.docker.io&scope=repository%3Alibrary%2Fa%3Apull")
        );
        assert_eq!(
            super::bearer_token_url(r#"Bearer realm="https://auth.docker.io/token""#),
            None
        );
        assert_eq!(super::bearer_token_url("Basic realm=x"), None);
    }
}
