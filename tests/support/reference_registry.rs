//! A minimal in-memory registry that does everything the push suite checks, written from the
//! spec text alone, to exercise the suite's checks that distribution 2.8 cannot reach (the
//! referrers API, tag order and pagination with `Link`, the 416 for a chunk out of order, sha512
//! digests, tag deletion, a single-POST upload answered 201). It answers relative `Location`s
//! and `Link`s, so the suite's resolution of them is exercised too. Not a registry anyone
//! should pull from: no limits, no persistence, one lock around everything.

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Method, Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{json, Value};

use super::oci_push::{sha256_digest, sha512_digest};

const INDEX: &str = "application/vnd.oci.image.index.v1+json";

#[derive(Default)]
struct State {
    /// (repository, digest) -> bytes; a blob is known to the repositories it was pushed or
    /// mounted to.
    blobs: HashMap<(String, String), Bytes>,
    /// upload id -> (repository, bytes so far)
    uploads: HashMap<String, (String, Vec<u8>)>,
    /// (repository, digest) -> (media type, bytes)
    manifests: HashMap<(String, String), (String, Bytes)>,
    tags: HashMap<String, BTreeMap<String, String>>,
    next_upload: u64,
}

/// Serves the reference registry on a new loopback port; returns `http://127.0.0.1:PORT`.
pub async fn start() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr: SocketAddr = listener.local_addr().expect("addr");
    let state = Arc::new(Mutex::new(State::default()));
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let state = state.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req| {
                    let state = state.clone();
                    async move { Ok::<_, Infallible>(handle(&state, req).await) }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    format!("http://{addr}")
}

type Answer = Response<Full<Bytes>>;

fn answer(status: u16, headers: &[(&str, String)], body: impl Into<Bytes>) -> Answer {
    let mut builder = Response::builder().status(status);
    for (name, value) in headers {
        builder = builder.header(*name, value);
    }
    builder.body(Full::new(body.into())).expect("response")
}

fn error(status: u16, code: &str) -> Answer {
    let body = json!({ "errors": [{ "code": code, "message": code.to_lowercase() }] });
    let headers = [("content-type", "application/json".to_string())];
    answer(status, &headers, body.to_string())
}

/// The digest of `data` in `digest`'s algorithm, if it is one this registry knows.
fn digest_as(digest: &str, data: &[u8]) -> Option<String> {
    match digest.split_once(':')?.0 {
        "sha256" => Some(sha256_digest(data)),
        "sha512" => Some(sha512_digest(data)),
        _ => None,
    }
}

fn query_param(query: &str, name: &str) -> Option<String> {
    form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

async fn handle(state: &Mutex<State>, req: Request<Incoming>) -> Answer {
    let (parts, body) = req.into_parts();
    let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    let path = parts.uri.path().to_string();
    let query = parts.uri.query().unwrap_or("").to_string();
    let header = |name: &str| {
        parts
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let mut s = state.lock().expect("state");
    let Some(rest) = path.strip_prefix("/v2/") else {
        return error(404, "NAME_UNKNOWN");
    };
    let m = &parts.method;
    if let Some((repo, id)) = rest.split_once("/blobs/uploads/") {
        let (repo, id) = (repo.to_string(), id.to_string());
        if id.is_empty() && m == Method::POST {
            return s.start_upload(&repo, &query, body);
        }
        return s.upload(m, &repo, &id, &query, header("content-range"), body);
    }
    if let Some((repo, digest)) = rest.rsplit_once("/blobs/") {
        return s.blob(m, repo, digest);
    }
    if let Some((repo, reference)) = rest.rsplit_once("/manifests/") {
        return s.manifest(m, repo, reference, header("content-type"), body);
    }
    if let Some(repo) = rest.strip_suffix("/tags/list") {
        return s.tags(repo, &query);
    }
    if let Some((repo, digest)) = rest.rsplit_once("/referrers/") {
        return s.referrers(repo, digest, &query);
    }
    error(404, "NAME_UNKNOWN")
}

mod listing;

impl State {
    fn session(&mut self, repo: &str) -> Answer {
        self.next_upload += 1;
        let id = format!("u{}", self.next_upload);
        self.uploads.insert(id.clone(), (repo.to_string(), Vec::new()));
        // Relative on purpose: clients must resolve it against the request URL.
        let headers = [("location", id), ("range", "0-0".to_string())];
        answer(202, &headers, Bytes::new())
    }

    fn created_blob(repo: &str, digest: &str) -> Answer {
        let headers = [
            ("location", format!("/v2/{repo}/blobs/{digest}")),
            ("docker-content-digest", digest.to_string()),
        ];
        answer(201, &headers, Bytes::new())
    }

    fn start_upload(&mut self, repo: &str, query: &str, body: Bytes) -> Answer {
        if let Some(digest) = query_param(query, "mount") {
            let from = query_param(query, "from");
            if let Some(data) = from.and_then(|f| self.blobs.get(&(f, digest.clone())).cloned()) {
                self.blobs.insert((repo.to_string(), digest.clone()), data);
                return Self::created_blob(repo, &digest);
            }
            return self.session(repo);
        }
        if let Some(digest) = query_param(query, "digest") {
            if digest_as(&digest, &body).as_deref() != Some(digest.as_str()) {
                return error(400, "DIGEST_INVALID");
            }
            self.blobs.insert((repo.to_string(), digest.clone()), body);
            return Self::created_blob(repo, &digest);
        }
        self.session(repo)
    }

    fn upload(
        &mut self,
        m: &Method,
        repo: &str,
        id: &str,
        query: &str,
        range: Option<String>,
        body: Bytes,
    ) -> Answer {
        let Some((_, data)) = self.uploads.get_mut(id) else {
            return error(404, "BLOB_UPLOAD_UNKNOWN");
        };
        let progress = |data: &Vec<u8>| {
            let end = data.len().saturating_sub(1);
            [
                ("location", format!("/v2/{repo}/blobs/uploads/{id}")),
                ("range", format!("0-{end}")),
            ]
        };
        match *m {
            Method::GET => answer(204, &progress(data), Bytes::new()),
            Method::DELETE => {
                self.uploads.remove(id);
                answer(204, &[], Bytes::new())
            }
            Method::PATCH => {
                let start = range
                    .as_deref()
                    .and_then(|r| r.split_once('-')?.0.parse::<usize>().ok());
                if start.is_some_and(|start| start != data.len()) {
                    return answer(416, &progress(data), Bytes::new());
                }
                data.extend_from_slice(&body);
                answer(202, &progress(data), Bytes::new())
            }
            Method::PUT => {
                data.extend_from_slice(&body);
                let Some(digest) = query_param(query, "digest") else {
                    return error(400, "DIGEST_INVALID");
                };
                let (_, data) = self.uploads.remove(id).expect("upload");
                if digest_as(&digest, &data).as_deref() != Some(digest.as_str()) {
                    return error(400, "DIGEST_INVALID");
                }
                self.blobs.insert((repo.to_string(), digest.clone()), data.into());
                Self::created_blob(repo, &digest)
            }
            _ => error(405, "UNSUPPORTED"),
        }
    }

    fn blob(&mut self, m: &Method, repo: &str, digest: &str) -> Answer {
        let key = (repo.to_string(), digest.to_string());
        if *m == Method::DELETE {
            return match self.blobs.remove(&key) {
                Some(_) => answer(202, &[], Bytes::new()),
                None => error(404, "BLOB_UNKNOWN"),
            };
        }
        let Some(data) = self.blobs.get(&key) else {
            return error(404, "BLOB_UNKNOWN");
        };
        let headers = [("docker-content-digest", digest.to_string())];
        let body = if *m == Method::HEAD {
            Bytes::new()
        } else {
            data.clone()
        };
        answer(200, &headers, body).tap_length(data.len())
    }

    fn manifest(
        &mut self,
        m: &Method,
        repo: &str,
        reference: &str,
        content_type: Option<String>,
        body: Bytes,
    ) -> Answer {
        let is_digest = reference.contains(':');
        let digest = if is_digest {
            reference.to_string()
        } else {
            let tags = self.tags.get(repo);
            match tags.and_then(|t| t.get(reference)) {
                Some(d) => d.clone(),
                None if *m == Method::PUT => String::new(),
                None => return error(404, "MANIFEST_UNKNOWN"),
            }
        };
        match *m {
            Method::PUT => self.put_manifest(repo, reference, is_digest, content_type, body),
            Method::DELETE if !is_digest => {
                self.tags.entry(repo.to_string()).or_default().remove(reference);
                answer(202, &[], Bytes::new())
            }
            Method::DELETE => match self.manifests.remove(&(repo.to_string(), digest.clone())) {
                Some(_) => {
                    self.tags
                        .entry(repo.to_string())
                        .or_default()
                        .retain(|_, d| *d != digest);
                    answer(202, &[], Bytes::new())
                }
                None => error(404, "MANIFEST_UNKNOWN"),
            },
            _ => {
                let Some((media_type, data)) = self.manifests.get(&(repo.to_string(), digest.clone())) else {
                    return error(404, "MANIFEST_UNKNOWN");
                };
                let headers = [
                    ("content-type", media_type.clone()),
                    ("docker-content-digest", digest.clone()),
                ];
                let body = if *m == Method::HEAD {
                    Bytes::new()
                } else {
                    data.clone()
                };
                answer(200, &headers, body).tap_length(data.len())
            }
        }
    }

    fn put_manifest(
        &mut self,
        repo: &str,
        reference: &str,
        is_digest: bool,
        content_type: Option<String>,
        body: Bytes,
    ) -> Answer {
        let Ok(value) = serde_json::from_slice::<Value>(&body) else {
            return error(400, "MANIFEST_INVALID");
        };
        let digest = if is_digest {
            if digest_as(reference, &body).as_deref() != Some(reference) {
                return error(400, "DIGEST_INVALID");
            }
            reference.to_string()
        } else {
            sha256_digest(&body)
        };
        let blobs = value["layers"].as_array().cloned().unwrap_or_default();
        let blobs = blobs.iter().chain(std::iter::once(&value["config"]));
        for d in blobs.filter_map(|d| d["digest"].as_str()) {
            if !self.blobs.contains_key(&(repo.to_string(), d.to_string())) {
                return error(400, "MANIFEST_BLOB_UNKNOWN");
            }
        }
        for d in value["manifests"].as_array().into_iter().flatten() {
            let d = d["digest"].as_str().unwrap_or_default().to_string();
            if !self.manifests.contains_key(&(repo.to_string(), d)) {
                return error(400, "MANIFEST_BLOB_UNKNOWN");
            }
        }
        let media_type = content_type.unwrap_or_default();
        self.manifests
            .insert((repo.to_string(), digest.clone()), (media_type, body));
        if !is_digest {
            let tags = self.tags.entry(repo.to_string()).or_default();
            tags.insert(reference.to_string(), digest.clone());
        }
        let mut headers = vec![
            ("location", format!("/v2/{repo}/manifests/{digest}")),
            ("docker-content-digest", digest),
        ];
        if let Some(subject) = value["subject"]["digest"].as_str() {
            headers.push(("oci-subject", subject.to_string()));
        }
        answer(201, &headers, Bytes::new())
    }
}

/// `Content-Length` of the content, also on a `HEAD` whose body is empty.
trait TapLength {
    fn tap_length(self, len: usize) -> Self;
}

impl TapLength for Answer {
    fn tap_length(mut self, len: usize) -> Self {
        self.headers_mut()
            .insert("content-length", len.to_string().parse().expect("length"));
        self
    }
}
