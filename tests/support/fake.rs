//! An in-process fake upstream registry for behaviour tests: serves manifests and blobs from
//! memory, records every request, and can demand Bearer or Basic auth (see `fake/auth.rs`),
//! redirect blobs to a second "storage" host that rejects `Authorization`, redirect every API
//! request to another registry (registry.k8s.io), report rate-limit headers, and inject faults
//! (broken or corrupt bodies, held-back bodies, error statuses, 429 with Retry-After).
//! Loopback only.

mod auth;
pub use auth::{basic, Auth, ChallengeStyle, TokenRequest};

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body, Frame};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use sha2::{Digest as _, Sha256};
use tokio::sync::{mpsc, watch};

pub fn sha256(bytes: &[u8]) -> String {
    let d = Sha256::digest(bytes);
    let hex: String = d.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

/// Deterministic pseudo-random bytes.
pub fn bytes_of(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407)
        | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

#[derive(Clone, Debug)]
pub struct Logged {
    pub method: String,
    pub path: String,
    #[allow(dead_code, reason = "shown in failure messages through Debug")]
    pub query: Option<String>,
    pub authorization: Option<String>,
    pub host: &'static str,
}

#[derive(Clone)]
pub enum Fault {
    /// Send this many bytes of the blob, then break the connection.
    Break { after: usize },
    /// Serve different bytes of the same length.
    Corrupt,

    /// Send `after` bytes, then wait until the gate is opened (or dropped); then finish, or
    /// break the connection if `then_break`.
    Hold {
        after: usize,
        gate: watch::Receiver<bool>,
        then_break: bool,
    },
    /// Answer every blob/manifest request with this status.
    Status(u16),
    /// Answer every blob/manifest/tags request with 429 and this `Retry-After`.
    RateLimit { retry_after: String },
    /// Hold every manifest request (after logging it) until the gate opens.
    HoldManifests { gate: watch::Receiver<bool> },
}

#[derive(Default)]
struct Repo {
    manifests: HashMap<String, (String, Bytes)>,
    blobs: HashMap<String, Bytes>,
    tags: Vec<String>,
    /// subject digest -> referrers index; only served when the repo has any (else 404, as
    /// registries without the referrers API answer).
    referrers: HashMap<String, Bytes>,
}

struct State {
    addr: Mutex<Option<SocketAddr>>,
    storage_addr: Mutex<Option<SocketAddr>>,
    repos: Mutex<HashMap<String, Repo>>,
    log: Mutex<Vec<Logged>>,
    auth: auth::AuthState,
    fault: Mutex<Option<Fault>>,
    redirect_blobs: Mutex<bool>,
    /// registry.k8s.io: every `/v2/<path>` but `/v2/` answers 307 to `<this>/v2/<prefix>/<path>`.
    redirect_all: Mutex<Option<(String, String)>>,
    ratelimit: Mutex<Option<(u64, u64)>>,
}

#[derive(Clone)]
pub struct Fake {
    state: Arc<State>,
    pub addr: SocketAddr,
}

impl Fake {
    pub async fn start() -> Fake {
        let state = Arc::new(State {
            addr: Mutex::new(None),
            storage_addr: Mutex::new(None),
            repos: Mutex::new(HashMap::new()),
            log: Mutex::new(Vec::new()),
            auth: auth::AuthState::default(),
            fault: Mutex::new(None),
            redirect_blobs: Mutex::new(false),
            redirect_all: Mutex::new(None),
            ratelimit: Mutex::new(None),
        });
        let addr = listen(state.clone(), "registry").await;
        let storage = listen(state.clone(), "storage").await;
        *state.addr.lock().unwrap() = Some(addr);
        *state.storage_addr.lock().unwrap() = Some(storage);
        Fake { state, addr }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn set_auth(&self, auth: Auth) {
        *self.state.auth.auth.lock().unwrap() = auth;
    }

    pub fn set_challenge_style(&self, style: ChallengeStyle) {
        *self.state.auth.style.lock().unwrap() = style;
    }

    /// The token service wants these Basic credentials; anonymous callers get no access.
    pub fn require_token_user(&self, user: &str, pass: &str) {
        *self.state.auth.token_user.lock().unwrap() = Some((user.into(), pass.into()));
    }

    /// The token service accepts this refresh token by OAuth2 POST.
    pub fn accept_refresh_token(&self, token: &str) {
        *self.state.auth.refresh_token.lock().unwrap() = Some(token.into());
    }

    /// Every token request waits this long before it is answered.
    pub fn delay_tokens(&self, delay: std::time::Duration) {
        *self.state.auth.delay.lock().unwrap() = delay;
    }

    /// Sends `RateLimit-Limit`/`RateLimit-Remaining` on manifest responses.
    pub fn set_ratelimit(&self, limit: u64, remaining: u64) {
        *self.state.ratelimit.lock().unwrap() = Some((limit, remaining));
    }

    /// Acts like registry.k8s.io: `/v2/` answers 200 here, every other API request is
    /// redirected to `base_url` + `/v2/<prefix>/<path>`.
    pub fn redirect_all(&self, base_url: &str, prefix: &str) {
        *self.state.redirect_all.lock().unwrap() = Some((base_url.into(), prefix.into()));
    }

    pub fn set_fault(&self, fault: Option<Fault>) {
        *self.state.fault.lock().unwrap() = fault;
    }

    pub fn redirect_blobs(&self, on: bool) {
        *self.state.redirect_blobs.lock().unwrap() = on;
    }

    /// Invalidates every token handed out so far.
    pub fn expire_tokens(&self) {
        self.state.auth.expire_tokens();
    }

    pub fn add_blob(&self, repo: &str, bytes: impl Into<Bytes>) -> String {
        let bytes = bytes.into();
        let digest = sha256(&bytes);
        self.state
            .repos
            .lock()
            .unwrap()
            .entry(repo.into())
            .or_default()
            .blobs
            .insert(digest.clone(), bytes);
        digest
    }

    /// Adds a manifest under its digest and, if given, a tag. Returns the digest.
    pub fn add_manifest(
        &self,
        repo: &str,
        tag: Option<&str>,
        media_type: &str,
        bytes: impl Into<Bytes>,
    ) -> String {
        let bytes = bytes.into();
        let digest = sha256(&bytes);
        let mut repos = self.state.repos.lock().unwrap();
        let r = repos.entry(repo.into()).or_default();
        r.manifests
            .insert(digest.clone(), (media_type.into(), bytes.clone()));
        if let Some(t) = tag {
            r.manifests.insert(t.into(), (media_type.into(), bytes));
            if !r.tags.iter().any(|x| x == t) {
                r.tags.push(t.into());
                r.tags.sort();
            }
        }
        digest
    }

    /// An OCI image with one config and the given layers, tagged; returns (manifest digest,
    /// manifest bytes, layer digests).
    pub fn add_image(&self, repo: &str, tag: &str, layers: &[Vec<u8>]) -> (String, Bytes, Vec<String>) {
        let config = self.add_blob(
            repo,
            format!("{{\"architecture\":\"amd64\",\"os\":\"linux\",\"tag\":\"{tag}\"}}"),
        );
        let mut descs = Vec::new();
        let mut digests = Vec::new();
        for l in layers {
            let d = self.add_blob(repo, l.clone());
            descs.push(format!(
                r#"{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"{d}","size":{}}}"#,
                l.len()
            ));
            digests.push(d);
        }
        let manifest = format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{config}","size":10}},"layers":[{}]}}"#,
            descs.join(",")
        );
        let bytes = Bytes::from(manifest);
        let d = self.add_manifest(
            repo,
            Some(tag),
            "application/vnd.oci.image.manifest.v1+json",
            bytes.clone(),
        );
        (d, bytes, digests)
    }

    /// Turns on the referrers API for `repo` and lists `index` as the referrers of `subject`.
    pub fn add_referrers(&self, repo: &str, subject: &str, index: impl Into<Bytes>) {
        self.state
            .repos
            .lock()
            .unwrap()
            .entry(repo.into())
            .or_default()
            .referrers
            .insert(subject.into(), index.into());
    }

    pub fn requests(&self) -> Vec<Logged> {
        self.state.log.lock().unwrap().clone()
    }

    /// Requests with this method whose path contains `part`.
    pub fn count(&self, method: &str, part: &str) -> usize {
        self.requests()
            .iter()
            .filter(|l| l.method == method && l.path.contains(part))
            .count()
    }

    /// The query strings of every token request.
    pub fn token_requests(&self) -> Vec<String> {
        self.token_log().into_iter().map(|t| t.query).collect()
    }

    pub fn token_log(&self) -> Vec<TokenRequest> {
        self.state.auth.requests.lock().unwrap().clone()
    }

    pub fn clear_log(&self) {
        self.state.log.lock().unwrap().clear();
        self.state.auth.requests.lock().unwrap().clear();
    }
}

async fn listen(state: Arc<State>, host: &'static str) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let state = state.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req| {
                    let state = state.clone();
                    async move {
                        if req.uri().path() == "/token" && host == "registry" {
                            let (parts, body) = state.auth.token(req).await.into_parts();
                            return Ok::<_, Infallible>(Response::from_parts(parts, ChanBody::full(body)));
                        }
                        let hold = match state.fault.lock().unwrap().clone() {
                            Some(Fault::HoldManifests { gate })
                                if req.uri().path().contains("/manifests/") =>
                            {
                                Some(gate)
                            }
                            _ => None,
                        };
                        if let Some(mut gate) = hold {
                            state.log.lock().unwrap().push(Logged {
                                method: req.method().to_string(),
                                path: req.uri().path().to_string(),
                                query: req.uri().query().map(str::to_string),
                                authorization: None,
                                host,
                            });
                            let _ = gate.wait_for(|open| *open).await;
                            return Ok::<_, Infallible>(serve(&state, req, host, false));
                        }
                        Ok::<_, Infallible>(serve(&state, req, host, true))
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    addr
}

type FakeBody = ChanBody;

fn reply(status: u16, headers: &[(&str, String)], body: impl Into<Bytes>) -> Response<FakeBody> {
    let body = body.into();
    let mut b = Response::builder()
        .status(status)
        .header("content-length", body.len());
    for (k, v) in headers {
        b = b.header(*k, v);
    }
    b.body(ChanBody::full(body)).unwrap()
}

fn error(status: u16, code: &str) -> Response<FakeBody> {
    reply(
        status,
        &[("content-type", "application/json".into())],
        format!(r#"{{"errors":[{{"code":"{code}","message":"fake"}}]}}"#),
    )
}

fn serve(state: &Arc<State>, req: Request<Incoming>, host: &'static str, log: bool) -> Response<FakeBody> {
    let path = req.uri().path().to_string();
    let query = req.uri().query().map(str::to_string);
    let authorization = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let method = req.method().to_string();
    if host == "storage" {
        state.log.lock().unwrap().push(Logged {
            method: method.clone(),
            path: path.clone(),
            query,
            authorization: authorization.clone(),
            host,
        });
        if authorization.is_some() {
            return error(400, "AUTHORIZATION_NOT_ALLOWED");
        }
        let digest = path.trim_start_matches("/storage/").to_string();
        let repos = state.repos.lock().unwrap();
        let blob = repos.values().find_map(|r| r.blobs.get(&digest).cloned());
        return match blob {
            Some(b) => blob_response(state, b, method == "HEAD"),
            None => error(404, "BLOB_UNKNOWN"),
        };
    }
    if log {
        state.log.lock().unwrap().push(Logged {
            method: method.clone(),
            path: path.clone(),
            query: query.clone(),
            authorization: authorization.clone(),
            host,
        });
    }
    let addr = state.addr.lock().unwrap().unwrap();
    let Some(rest) = path.strip_prefix("/v2/") else {
        return error(404, "NOT_FOUND");
    };
    let name = if rest.ends_with("/tags/list") {
        rest.trim_end_matches("/tags/list")
    } else {
        rest.rsplitn(3, '/').nth(2).unwrap_or("")
    };
    let realm = format!("http://{addr}/token");
    if let Some((challenge, body)) = state.auth.check(&realm, authorization.as_deref(), name) {
        return reply(401, &[("www-authenticate", challenge)], body);
    }
    if let Some((base, prefix)) = state.redirect_all.lock().unwrap().clone() {
        if !rest.is_empty() {
            let q = query.as_deref().map(|q| format!("?{q}")).unwrap_or_default();
            return reply(307, &[("location", format!("{base}/v2/{prefix}/{rest}{q}"))], "");
        }
    }
    if rest.is_empty() {
        return reply(200, &[], "{}");
    }
    match state.fault.lock().unwrap().clone() {
        Some(Fault::Status(s)) => return error(s, "FAULT"),
        Some(Fault::RateLimit { retry_after }) => {
            return reply(
                429,
                &[
                    ("retry-after", retry_after),
                    ("content-type", "application/json".into()),
                ],
                r#"{"errors":[{"code":"TOOMANYREQUESTS","message":"fake"}]}"#,
            )
        }
        _ => {}
    }
    let head = method == "HEAD";
    if let Some(name) = rest.strip_suffix("/tags/list") {
        let repos = state.repos.lock().unwrap();
        let Some(r) = repos.get(name) else {
            return error(404, "NAME_UNKNOWN");
        };
        let q = query.unwrap_or_default();
        let n: Option<usize> = form_urlencoded::parse(q.as_bytes())
            .find(|(k, _)| k == "n")
            .and_then(|(_, v)| v.parse().ok());
        let last = form_urlencoded::parse(q.as_bytes())
            .find(|(k, _)| k == "last")
            .map(|(_, v)| v.into_owned());
        let mut tags: Vec<&String> = r
            .tags
            .iter()
            .filter(|t| last.as_ref().is_none_or(|l| *t > l))
            .collect();
        let mut headers = vec![("content-type", "application/json".to_string())];
        if let Some(n) = n {
            if tags.len() > n {
                tags.truncate(n);
                headers.push((
                    "link",
                    format!("</v2/{name}/tags/list?last={}&n={n}>; rel=\"next\"", tags[n - 1]),
                ));
            }
        }
        let list: Vec<String> = tags.iter().map(|t| format!("\"{t}\"")).collect();
        return reply(
            200,
            &headers,
            format!(r#"{{"name":"{name}","tags":[{}]}}"#, list.join(",")),
        );
    }
    let Some((head_part, reference)) = rest.rsplit_once('/') else {
        return error(404, "NOT_FOUND");
    };
    let Some((name, kind)) = head_part.rsplit_once('/') else {
        return error(404, "NOT_FOUND");
    };
    let repos = state.repos.lock().unwrap();
    let Some(r) = repos.get(name) else {
        return error(404, "NAME_UNKNOWN");
    };
    match kind {
        "manifests" => match r.manifests.get(reference) {
            Some((mt, bytes)) => {
                let mut headers = vec![
                    ("content-type", mt.clone()),
                    ("docker-content-digest", sha256(bytes)),
                ];
                if let Some((limit, remaining)) = *state.ratelimit.lock().unwrap() {
                    headers.push(("ratelimit-limit", format!("{limit};w=21600")));
                    headers.push(("ratelimit-remaining", format!("{remaining};w=21600")));
                    headers.push(("docker-ratelimit-source", "127.0.0.1".into()));
                }
                if head {
                    let mut resp = reply(200, &headers, Bytes::new());
                    resp.headers_mut().insert("content-length", bytes.len().into());
                    resp
                } else {
                    reply(200, &headers, bytes.clone())
                }
            }
            None => error(404, "MANIFEST_UNKNOWN"),
        },
        "referrers" if !r.referrers.is_empty() => match r.referrers.get(reference) {
            Some(index) => reply(
                200,
                &[("content-type", "application/vnd.oci.image.index.v1+json".into())],
                index.clone(),
            ),
            None => reply(
                200,
                &[("content-type", "application/vnd.oci.image.index.v1+json".into())],
                r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}"#,
            ),
        },
        "blobs" => match r.blobs.get(reference) {
            Some(b) if *state.redirect_blobs.lock().unwrap() => {
                let storage = state.storage_addr.lock().unwrap().unwrap();
                let _ = b;
                reply(
                    307,
                    &[("location", format!("http://{storage}/storage/{reference}"))],
                    "",
                )
            }
            Some(b) => blob_response(state, b.clone(), head),
            None => error(404, "BLOB_UNKNOWN"),
        },
        _ => error(404, "NOT_FOUND"),
    }
}

fn blob_response(state: &Arc<State>, blob: Bytes, head: bool) -> Response<FakeBody> {
    let len = blob.len();
    let headers = [
        ("content-type", "application/octet-stream".to_string()),
        ("docker-content-digest", sha256(&blob)),
    ];
    if head {
        let mut resp = reply(200, &headers, Bytes::new());
        resp.headers_mut().insert("content-length", len.into());
        return resp;
    }
    let fault = state.fault.lock().unwrap().clone();
    let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(4);
    tokio::spawn(async move {
        let blob = match &fault {
            Some(Fault::Corrupt) => {
                let mut v = blob.to_vec();
                if let Some(b) = v.last_mut() {
                    *b ^= 0xff;
                }
                Bytes::from(v)
            }
            _ => blob,
        };
        let mut pos = 0;
        for chunk in blob.chunks(16 * 1024) {
            if let Some(Fault::Break { after }) = &fault {
                if pos + chunk.len() > *after {
                    let _ = tx.send(Ok(Bytes::copy_from_slice(&chunk[..after - pos]))).await;
                    let _ = tx.send(Err(std::io::Error::other("injected break"))).await;
                    return;
                }
            }
            if let Some(Fault::Hold {
                after,
                gate,
                then_break,
            }) = &fault
            {
                if pos + chunk.len() > *after && pos <= *after {
                    let _ = tx.send(Ok(Bytes::copy_from_slice(&chunk[..after - pos]))).await;
                    let mut g = gate.clone();
                    let _ = g.wait_for(|open| *open).await;
                    if *then_break {
                        let _ = tx.send(Err(std::io::Error::other("injected break"))).await;
                        return;
                    }
                    let _ = tx.send(Ok(Bytes::copy_from_slice(&chunk[after - pos..]))).await;
                    pos += chunk.len();
                    continue;
                }
            }
            if tx.send(Ok(Bytes::copy_from_slice(chunk))).await.is_err() {
                return;
            }
            pos += chunk.len();
        }
    });
    let mut b = Response::builder().status(200).header("content-length", len);
    for (k, v) in headers {
        b = b.header(k, v);
    }
    b.body(ChanBody {
        rx: Some(rx),
        full: None,
    })
    .unwrap()
}

pub struct ChanBody {
    rx: Option<mpsc::Receiver<Result<Bytes, std::io::Error>>>,
    full: Option<Bytes>,
}

impl ChanBody {
    fn full(b: Bytes) -> ChanBody {
        ChanBody {
            rx: None,
            full: Some(b),
        }
    }
}

impl Body for ChanBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        if let Some(b) = self.full.take() {
            return Poll::Ready((!b.is_empty()).then(|| Ok(Frame::data(b))));
        }
        match self.rx.as_mut() {
            None => Poll::Ready(None),
            Some(rx) => rx.poll_recv(cx).map(|o| o.map(|r| r.map(Frame::data))),
        }
    }
}
