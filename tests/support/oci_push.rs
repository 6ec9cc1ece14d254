//! A small OCI Distribution push client for conformance tests: every operation of the push,
//! content discovery and content management workflows as one plain HTTP/1.1 request, answered
//! with the exact status, headers and body (an [`Answer`]) so the caller asserts the codes
//! itself. Nothing here retries, authenticates interactively or interprets errors: a registry
//! that answers wrongly must be seen answering wrongly. `Location` and `Link` targets are
//! resolved against the URL of the request that returned them (RFC 3986 section 5, as
//! RFC 7231 says for `Location`), since registries send both relative and absolute ones.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::{Method, Request};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use sha2::Digest as _;

/// One request's outcome, kept whole for assertions and failure messages.
#[derive(Debug)]
pub struct Answer {
    /// `PUT`, `PATCH`, ...
    pub method: Method,
    /// The URL requested (after any redirect followed).
    pub url: String,
    /// The status code.
    pub status: u16,
    /// The response headers.
    pub headers: hyper::HeaderMap,
    /// The whole body.
    pub body: Bytes,
}

impl Answer {
    /// A header as text, if present and visible ASCII.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The `Location` header resolved against the requested URL.
    pub fn location(&self) -> Option<String> {
        self.header("location").map(|l| resolve(&self.url, l))
    }

    /// The `code`s of an OCI error body (`{"errors":[{"code":...}]}`); empty when the body is
    /// not one.
    pub fn error_codes(&self) -> Vec<String> {
        serde_json::from_slice::<serde_json::Value>(&self.body)
            .ok()
            .and_then(|v| v.get("errors").and_then(|e| e.as_array()).cloned())
            .unwrap_or_default()
            .iter()
            .filter_map(|e| e.get("code").and_then(|c| c.as_str()).map(str::to_string))
            .collect()
    }

    /// The body parsed as JSON, if it is JSON.
    pub fn json(&self) -> Option<serde_json::Value> {
        serde_json::from_slice(&self.body).ok()
    }

    /// A few lines describing the exchange, for failure messages.
    pub fn describe(&self) -> String {
        let headers: Vec<String> = self
            .headers
            .iter()
            .map(|(k, v)| format!("    {k}: {}", v.to_str().unwrap_or("<binary>")))
            .collect();
        let body = String::from_utf8_lossy(&self.body);
        let body: String = body.chars().take(600).collect();
        format!(
            "  {} {} -> {}\n{}\n  body: {body}",
            self.method,
            self.url,
            self.status,
            headers.join("\n")
        )
    }
}

/// `sha256:<hex>` of `data`.
pub fn sha256_digest(data: &[u8]) -> String {
    format!("sha256:{:x}", sha2::Sha256::digest(data))
}

/// `sha512:<hex>` of `data`.
pub fn sha512_digest(data: &[u8]) -> String {
    format!("sha512:{:x}", sha2::Sha512::digest(data))
}

/// `url` with `name=value` appended to its query (an upload URL usually has one already:
/// distribution keeps its upload state there).
pub fn with_query(url: &str, name: &str, value: &str) -> String {
    let value: String = form_urlencoded::byte_serialize(value.as_bytes()).collect();
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}{name}={value}")
}

/// Resolves a URI reference (`Location`, a `Link` target) against the URL `from` of the
/// request that returned it: absolute, network-path, absolute-path, query-only and
/// relative-path references, with `.`/`..` segments removed.
pub fn resolve(from: &str, reference: &str) -> String {
    if reference.contains("://") {
        return reference.to_string();
    }
    let (scheme, rest) = from.split_once("://").unwrap_or(("http", from));
    if let Some(net) = reference.strip_prefix("//") {
        return format!("{scheme}://{net}");
    }
    let (authority, path_query) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let base_path = path_query.split(['?', '#']).next().unwrap_or("/");
    let merged = if reference.starts_with('/') {
        reference.to_string()
    } else if reference.starts_with('?') {
        format!("{base_path}{reference}")
    } else {
        let dir = &base_path[..base_path.rfind('/').map_or(0, |i| i + 1)];
        format!("{dir}{reference}")
    };
    let (path, query) = match merged.find('?') {
        Some(i) => (&merged[..i], &merged[i..]),
        None => (merged.as_str(), ""),
    };
    format!("{scheme}://{authority}{}{query}", remove_dot_segments(path))
}

fn remove_dot_segments(path: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    let segments: Vec<&str> = path.split('/').collect();
    for (i, segment) in segments.iter().enumerate() {
        let last = i + 1 == segments.len();
        match *segment {
            "." => {
                if last {
                    out.push("");
                }
            }
            ".." => {
                if out.len() > 1 {
                    out.pop();
                }
                if last {
                    out.push("");
                }
            }
            s => out.push(s),
        }
    }
    out.join("/")
}

/// `scheme://authority` of an absolute URL.
fn origin(url: &str) -> &str {
    let after_scheme = url.find("://").map_or(0, |i| i + 3);
    let end = url[after_scheme..]
        .find(['/', '?', '#'])
        .map_or(url.len(), |i| after_scheme + i);
    &url[..end]
}

/// The `rel="next"` target of a `Link` header (RFC 5988), resolved against `from`.
pub fn next_link(from: &str, link: &str) -> Option<String> {
    link.split(',').find_map(|part| {
        let (target, params) = part.trim().split_once('>')?;
        let target = target.trim().strip_prefix('<')?;
        let is_next = params
            .split(';')
            .filter_map(|p| p.trim().split_once('='))
            .any(|(k, v)| k.trim().eq_ignore_ascii_case("rel") && v.trim().trim_matches('"') == "next");
        is_next.then(|| resolve(from, target))
    })
}

/// An OCI push client for one registry base URL (`http://host:port`, no `/v2`).
#[derive(Clone)]
pub struct PushClient {
    base: String,
    auth: Option<String>,
    client: Client<HttpConnector, Full<Bytes>>,
}

const OCTET_STREAM: &str = "application/octet-stream";

/// The `Accept` of manifest requests: the OCI manifest and index media types.
pub const MANIFEST_ACCEPT: &str =
    "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json";

impl PushClient {
    /// A client for `base_url`, sending `auth_header` (a whole `Authorization` value) with
    /// every request when given.
    pub fn new(base_url: &str, auth_header: Option<String>) -> Self {
        Self {
            base: base_url.trim_end_matches('/').to_string(),
            auth: auth_header,
            client: Client::builder(TokioExecutor::new()).build_http(),
        }
    }

    /// `<base>/v2/<repo>/<rest>`.
    pub fn url(&self, repo: &str, rest: &str) -> String {
        format!("{}/v2/{repo}/{rest}", self.base)
    }

    /// Sends one request; panics only when no HTTP answer arrives at all.
    pub async fn send(&self, method: Method, url: &str, headers: &[(&str, &str)], body: Bytes) -> Answer {
        self.send_as(self.auth.as_deref(), method, url, headers, body)
            .await
    }

    async fn send_as(
        &self,
        auth: Option<&str>,
        method: Method,
        url: &str,
        headers: &[(&str, &str)],
        body: Bytes,
    ) -> Answer {
        let mut builder = Request::builder().method(method.clone()).uri(url);
        if let Some(auth) = auth {
            builder = builder.header("authorization", auth);
        }
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        let request = builder
            .body(Full::new(body))
            .unwrap_or_else(|e| panic!("{method} {url}: bad request: {e}"));
        let exchange = async {
            let response = self.client.request(request).await.map_err(|e| e.to_string())?;
            let (parts, body) = response.into_parts();
            let body = body.collect().await.map_err(|e| e.to_string())?.to_bytes();
            Ok::<_, String>((parts, body))
        };
        let (parts, body) = tokio::time::timeout(Duration::from_secs(60), exchange)
            .await
            .unwrap_or_else(|_| panic!("{method} {url}: no answer in 60 s"))
            .unwrap_or_else(|e| panic!("{method} {url}: {e}"));
        Answer {
            method,
            url: url.to_string(),
            status: parts.status.as_u16(),
            headers: parts.headers,
            body,
        }
    }

    /// `GET`/`HEAD` following up to three redirects (a blob `GET` MAY redirect to storage).
    /// The registry's credentials go only to the registry's origin: storage behind a redirect
    /// has its own (a presigned URL refuses a request that also carries `Authorization`).
    pub async fn fetch(&self, method: Method, url: &str, accept: Option<&str>) -> Answer {
        let headers: Vec<(&str, &str)> = accept.map(|a| ("accept", a)).into_iter().collect();
        let mut answer = self.send(method.clone(), url, &headers, Bytes::new()).await;
        for _ in 0..3 {
            if !matches!(answer.status, 301 | 302 | 303 | 307 | 308) {
                break;
            }
            let Some(next) = answer.location() else { break };
            let auth = self
                .auth
                .as_deref()
                .filter(|_| origin(&next) == origin(&self.base));
            answer = self
                .send_as(auth, method.clone(), &next, &headers, Bytes::new())
                .await;
        }
        answer
    }

    /// `POST /v2/<repo>/blobs/uploads/`: starts an upload session.
    pub async fn start_upload(&self, repo: &str) -> Answer {
        let url = self.url(repo, "blobs/uploads/");
        self.send(Method::POST, &url, &[("content-length", "0")], Bytes::new())
            .await
    }

    /// `POST /v2/<repo>/blobs/uploads/?digest=<digest>` with the whole blob: a monolithic
    /// upload in one request (201), or an ordinary session start (202) where unsupported.
    pub async fn post_blob(&self, repo: &str, digest: &str, data: Bytes) -> Answer {
        let url = with_query(&self.url(repo, "blobs/uploads/"), "digest", digest);
        self.send(Method::POST, &url, &[("content-type", OCTET_STREAM)], data)
            .await
    }

    /// `PUT <upload>?digest=<digest>` with `data` (the whole blob, the last chunk or nothing):
    /// completes an upload.
    pub async fn put_upload(&self, upload: &str, digest: &str, data: Bytes) -> Answer {
        let url = with_query(upload, "digest", digest);
        self.send(Method::PUT, &url, &[("content-type", OCTET_STREAM)], data)
            .await
    }

    /// `PATCH <upload>` with one chunk starting at byte `start`
    /// (`Content-Range: <start>-<end>`, inclusive).
    pub async fn patch_chunk(&self, upload: &str, start: usize, chunk: Bytes) -> Answer {
        let range = format!("{start}-{}", start + chunk.len().max(1) - 1);
        let headers = [("content-type", OCTET_STREAM), ("content-range", range.as_str())];
        self.send(Method::PATCH, upload, &headers, chunk).await
    }

    /// `GET <upload>`: the session's status (204 with `Range`).
    pub async fn upload_status(&self, upload: &str) -> Answer {
        self.send(Method::GET, upload, &[], Bytes::new()).await
    }

    /// `DELETE <upload>`: cancels the session.
    pub async fn cancel_upload(&self, upload: &str) -> Answer {
        self.send(Method::DELETE, upload, &[], Bytes::new()).await
    }

    /// `POST /v2/<repo>/blobs/uploads/?mount=<digest>[&from=<from>]`.
    pub async fn mount(&self, repo: &str, digest: &str, from: Option<&str>) -> Answer {
        let mut url = with_query(&self.url(repo, "blobs/uploads/"), "mount", digest);
        if let Some(from) = from {
            url = with_query(&url, "from", from);
        }
        self.send(Method::POST, &url, &[("content-length", "0")], Bytes::new())
            .await
    }

    /// `HEAD` or `GET /v2/<repo>/blobs/<digest>`.
    pub async fn blob(&self, method: Method, repo: &str, digest: &str) -> Answer {
        let url = self.url(repo, &format!("blobs/{digest}"));
        self.fetch(method, &url, None).await
    }

    /// `DELETE /v2/<repo>/blobs/<digest>`.
    pub async fn delete_blob(&self, repo: &str, digest: &str) -> Answer {
        let url = self.url(repo, &format!("blobs/{digest}"));
        self.send(Method::DELETE, &url, &[], Bytes::new()).await
    }

    /// `PUT /v2/<repo>/manifests/<reference>` with `Content-Type: <media_type>`.
    pub async fn put_manifest(&self, repo: &str, reference: &str, media_type: &str, body: Bytes) -> Answer {
        let url = self.url(repo, &format!("manifests/{reference}"));
        self.send(Method::PUT, &url, &[("content-type", media_type)], body)
            .await
    }

    /// `HEAD` or `GET /v2/<repo>/manifests/<reference>`, accepting the OCI manifest and
    /// index media types.
    pub async fn manifest(&self, method: Method, repo: &str, reference: &str) -> Answer {
        let url = self.url(repo, &format!("manifests/{reference}"));
        self.fetch(method, &url, Some(MANIFEST_ACCEPT)).await
    }

    /// `DELETE /v2/<repo>/manifests/<reference>` (a tag or a digest).
    pub async fn delete_manifest(&self, repo: &str, reference: &str) -> Answer {
        let url = self.url(repo, &format!("manifests/{reference}"));
        self.send(Method::DELETE, &url, &[], Bytes::new()).await
    }

    /// `GET /v2/<repo>/tags/list[?n=<n>][&last=<last>]`.
    pub async fn tags_list(&self, repo: &str, n: Option<usize>, last: Option<&str>) -> Answer {
        let mut url = self.url(repo, "tags/list");
        if let Some(n) = n {
            url = with_query(&url, "n", &n.to_string());
        }
        if let Some(last) = last {
            url = with_query(&url, "last", last);
        }
        self.fetch(Method::GET, &url, None).await
    }

    /// `GET /v2/<repo>/referrers/<digest>[?artifactType=<type>]`.
    pub async fn referrers(&self, repo: &str, digest: &str, artifact_type: Option<&str>) -> Answer {
        let mut url = self.url(repo, &format!("referrers/{digest}"));
        if let Some(artifact_type) = artifact_type {
            url = with_query(&url, "artifactType", artifact_type);
        }
        self.fetch(Method::GET, &url, None).await
    }
}

#[cfg(test)]
mod tests;
