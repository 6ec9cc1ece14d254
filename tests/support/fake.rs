//! An in-process fake upstream registry for behaviour tests: serves manifests and blobs from
//! memory, records every request, and can demand Bearer or Basic auth (see `fake/auth.rs`),
//! redirect blobs to a second "storage" host that rejects `Authorization`, redirect every API
//! request to another registry (registry.k8s.io), report rate-limit headers, and inject faults
//! (broken or corrupt bodies, held-back bodies, error statuses, 429 with Retry-After).
//! Loopback only.

mod auth;
mod body;
mod serve;
pub use auth::{basic, Auth, ChallengeStyle, TokenRequest};

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use sha2::{Digest as _, Sha256};
use tokio::sync::watch;

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
    pub query: Option<String>,
    pub authorization: Option<String>,
    /// The `Range` header, if any.
    pub range: Option<String>,
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
    /// The whole registry fails: every request, `/v2/` included, gets this status.
    Down(u16),
    /// Answer every blob/manifest/tags request with 429 and this `Retry-After`.
    RateLimit { retry_after: String },
    /// Hold every manifest request (after logging it) until the gate opens.
    HoldManifests { gate: watch::Receiver<bool> },
    /// Hold every ranged blob request (after logging it) until the gate opens.
    HoldRanges { gate: watch::Receiver<bool> },
}

/// How the fake answers `tags/list`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum TagListing {
    /// Sorted, `n` and `last` honoured, a `Link` when `n` cut the list.
    #[default]
    Spec,
    /// The tags in stored order, whole: `n` and `last` ignored (distribution 2.x without `n`).
    Ignores,
    /// Pages of this many tags in stored order whatever `n` says, continued after `last`, with
    /// an absolute `Link` to the next page (registries that page by default).
    PagesOf(usize),
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
    /// Where blob GETs are redirected: `None` (served here), the storage host, or another base URL.
    redirect_blobs: Mutex<Option<String>>,
    /// registry.k8s.io: every `/v2/<path>` but `/v2/` answers 307 to `<this>/v2/<prefix>/<path>`.
    redirect_all: Mutex<Option<(String, String)>>,
    ratelimit: Mutex<Option<(u64, u64)>>,
    tag_listing: Mutex<TagListing>,
    /// Blob `Range` headers are ignored: the whole blob, 200.
    ignore_ranges: std::sync::atomic::AtomicBool,
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
            redirect_blobs: Mutex::new(None),
            redirect_all: Mutex::new(None),
            ratelimit: Mutex::new(None),
            tag_listing: Mutex::new(TagListing::Spec),
            ignore_ranges: Default::default(),
        });
        let addr = serve::listen(state.clone(), "registry").await;
        let storage = serve::listen(state.clone(), "storage").await;
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

    pub fn set_tag_listing(&self, listing: TagListing) {
        *self.state.tag_listing.lock().unwrap() = listing;
    }

    /// Replaces a repository's tag list with these tags, in this order (no manifests).
    pub fn set_tags(&self, repo: &str, tags: &[&str]) {
        let mut repos = self.state.repos.lock().unwrap();
        repos.entry(repo.into()).or_default().tags = tags.iter().map(|t| t.to_string()).collect();
    }

    /// Answers blob GETs whole, whatever their `Range` (as some registries do).
    pub fn ignore_ranges(&self, on: bool) {
        self.state
            .ignore_ranges
            .store(on, std::sync::atomic::Ordering::SeqCst);
    }

    pub fn set_fault(&self, fault: Option<Fault>) {
        *self.state.fault.lock().unwrap() = fault;
    }

    /// Redirects blob requests to the storage host (`true`) or serves them here (`false`).
    pub fn redirect_blobs(&self, on: bool) {
        let storage = format!("http://{}", self.storage_host());
        *self.state.redirect_blobs.lock().unwrap() = on.then_some(storage);
    }

    /// Redirects blob requests to `base` + `/storage/<digest>`.
    pub fn redirect_blobs_to(&self, base: &str) {
        *self.state.redirect_blobs.lock().unwrap() = Some(base.into());
    }

    /// `127.0.0.1:<port>` of the storage host blobs are redirected to.
    pub fn storage_host(&self) -> String {
        self.state.storage_addr.lock().unwrap().unwrap().to_string()
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
        let config_bytes = format!("{{\"architecture\":\"amd64\",\"os\":\"linux\",\"tag\":\"{tag}\"}}");
        let config_size = config_bytes.len();
        let config = self.add_blob(repo, config_bytes);
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
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{config}","size":{config_size}}},"layers":[{}]}}"#,
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

    /// Adds a manifest or index that names a `subject` (untagged, by digest) and lists it among
    /// the subject's referrers, as a registry with the referrers API does: its descriptor carries
    /// its `artifactType` (for a manifest without one, its config's media type) and its
    /// annotations. Returns its digest.
    pub fn add_referrer(&self, repo: &str, media_type: &str, bytes: impl Into<Bytes>) -> String {
        let bytes = bytes.into();
        let digest = self.add_manifest(repo, None, media_type, bytes.clone());
        let doc: serde_json::Value = serde_json::from_slice(&bytes).expect("a JSON manifest");
        let subject = doc["subject"]["digest"].as_str().expect("a subject digest");
        let mut desc = serde_json::json!({"mediaType": media_type, "digest": digest, "size": bytes.len()});
        if let Some(t) = doc.get("artifactType").or(doc.pointer("/config/mediaType")) {
            desc["artifactType"] = t.clone();
        }
        if let Some(a) = doc.get("annotations") {
            desc["annotations"] = a.clone();
        }
        let mut repos = self.state.repos.lock().unwrap();
        let r = repos.entry(repo.into()).or_default();
        let index = r.referrers.entry(subject.into()).or_insert_with(|| {
            Bytes::from(
                r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}"#,
            )
        });
        let mut v: serde_json::Value = serde_json::from_slice(index).expect("a JSON index");
        v["manifests"]
            .as_array_mut()
            .expect("a manifests list")
            .push(desc);
        *index = Bytes::from(v.to_string());
        digest
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
