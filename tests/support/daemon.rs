//! Starts regcache in-process on 127.0.0.1:0 with a temp cache dir, configured with
//! `DaemonBuilder`, and a small HTTP client to talk to it. Body errors are reported, not hidden,
//! so tests can tell a complete body from an aborted one.

use std::net::SocketAddr;

use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use regcache::app::Running;
use regcache::config::Config;

mod builder;
pub use builder::{DaemonBuilder, Upstream};

pub struct Daemon {
    pub running: Option<Running>,
    pub addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub dir: tempfile::TempDir,
    client: Client<HttpConnector, Empty<Bytes>>,
}

pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    /// The body, or the error that ended it early.
    pub body: Result<Bytes, String>,
}

impl Reply {
    pub fn bytes(&self) -> Bytes {
        match &self.body {
            Ok(b) => b.clone(),
            Err(e) => panic!("body ended in an error: {e}"),
        }
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The OCI error code of an error body.
    pub fn error_code(&self) -> String {
        self.error_field("code")
    }

    /// The message of an OCI error body.
    pub fn error_message(&self) -> String {
        self.error_field("message")
    }

    fn error_field(&self, field: &str) -> String {
        let v: serde_json::Value = serde_json::from_slice(&self.bytes()).expect("error body is JSON");
        v["errors"][0][field].as_str().unwrap_or_default().to_string()
    }
}

/// Waits (bounded: 5 s) until `cond` holds; panics naming `what` otherwise.
pub async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    for _ in 0..500 {
        if cond() {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("timed out waiting for {what}");
}

/// Lets `by` pass at once for everything in-process that keeps time with tokio (tag TTLs, token
/// expiry, Retry-After, credential lifetimes): pauses tokio's clock, advances it and resumes it.
/// The clock runs on real time before and after, so nothing times out early while real
/// sockets or child processes do their work (with the clock paused throughout, tokio would
/// jump to the next timer, such as an upstream read timeout, whenever it waits for I/O).
/// Current-thread runtimes only, the default of `#[tokio::test]`.
pub async fn pass_time(by: std::time::Duration) {
    tokio::time::pause();
    tokio::time::advance(by).await;
    tokio::time::resume();
}

impl Daemon {
    /// Starts the daemon from configuration `text`, caching in `dir` (see `DaemonBuilder`).
    async fn start_from(
        dir: tempfile::TempDir,
        text: &str,
        shared: Option<std::sync::Arc<dyn regcache::cache::shared::Shared>>,
    ) -> Daemon {
        let _ = regcache::telemetry::init("warn", false);
        let config = Config::from_toml_str(text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        let running = match shared {
            None => regcache::app::start(config).await,
            Some(shared) => regcache::app::start_sharing(config, shared).await,
        };
        let running = running.expect("daemon starts");
        let addr = running.local_addr();
        let mut admin_addr = running.admin_addr();
        if admin_addr.ip().is_unspecified() {
            // A listener on every interface is reached on loopback: tests talk to nothing else.
            admin_addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
        }
        Daemon {
            running: Some(running),
            addr,
            admin_addr,
            dir,
            client: Client::builder(TokioExecutor::new()).build_http(),
        }
    }

    /// Stops the daemon and returns its cache dir, so a test can restart on the same cache.
    pub async fn stop(mut self) -> tempfile::TempDir {
        if let Some(r) = self.running.take() {
            r.shutdown().await;
        }
        self.dir
    }

    pub async fn request(&self, method: &str, path: &str, headers: &[(&str, &str)]) -> Reply {
        let mut req = Request::builder()
            .method(method)
            .uri(format!("http://{}{}", self.addr, path));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        self.send(req.body(Empty::new()).unwrap()).await
    }

    /// A request with a body (pushes to hosted repositories).
    pub async fn request_body(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> Reply {
        let client = Client::builder(TokioExecutor::new()).build_http::<http_body_util::Full<Bytes>>();
        let mut req = Request::builder()
            .method(method)
            .uri(format!("http://{}{}", self.addr, path));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = client
            .request(req.body(http_body_util::Full::new(body.into())).unwrap())
            .await
            .expect("daemon answers");
        let (status, headers) = (resp.status(), resp.headers().clone());
        let body = resp
            .into_body()
            .collect()
            .await
            .map(|c| c.to_bytes())
            .map_err(|e| e.to_string());
        Reply {
            status,
            headers,
            body,
        }
    }

    async fn send(&self, req: Request<Empty<Bytes>>) -> Reply {
        let resp = self.client.request(req).await.expect("daemon answers");
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = resp
            .into_body()
            .collect()
            .await
            .map(|c| c.to_bytes())
            .map_err(|e| e.to_string());
        Reply {
            status,
            headers,
            body,
        }
    }

    /// How many client passwords went through bcrypt.
    pub fn password_checks(&self) -> u64 {
        self.running
            .as_ref()
            .expect("daemon is running")
            .auth()
            .password_checks()
    }

    /// The running daemon's cache, for tests that look inside (index, fills, fault injection).
    pub fn cache(&self) -> &regcache::cache::Cache {
        self.running.as_ref().expect("daemon is running").cache()
    }

    /// Waits until no download of `digest` is in progress: published into the cache, or failed
    /// and dropped. Until then a new request joins it instead of hitting the cache or starting
    /// afresh.
    pub async fn download_settled(&self, digest: &str) {
        let key: regcache::oci::Digest = digest.parse().expect("a digest");
        eventually("the download to settle", || self.cache().filling(&key).is_none()).await;
    }

    /// Pulls `repo:tag` and each of `layers` (as a client would), asserting success: warms the
    /// cache for tests that go on without the upstream.
    pub async fn pull(&self, repo: &str, tag: &str, layers: &[String]) -> Bytes {
        let manifest = self.get(&format!("/v2/{repo}/manifests/{tag}")).await;
        assert_eq!(manifest.status, StatusCode::OK, "manifest {repo}:{tag}");
        for l in layers {
            assert_eq!(
                self.get(&format!("/v2/{repo}/blobs/{l}")).await.status,
                StatusCode::OK,
                "{l}"
            );
        }
        manifest.bytes()
    }

    /// GET on the admin listener.
    pub async fn admin(&self, path: &str) -> Reply {
        self.admin_request("GET", path).await
    }

    /// POST on the admin listener.
    pub async fn admin_post(&self, path: &str) -> Reply {
        self.admin_request("POST", path).await
    }

    async fn admin_request(&self, method: &str, path: &str) -> Reply {
        self.admin_with(method, path, &[]).await
    }

    /// A request on the admin listener with extra headers (`Authorization`).
    pub async fn admin_with(&self, method: &str, path: &str, headers: &[(&str, &str)]) -> Reply {
        let mut req = Request::builder()
            .method(method)
            .uri(format!("http://{}{}", self.admin_addr, path));
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        self.send(req.body(Empty::new()).unwrap()).await
    }

    /// The value of one sample of /metrics (0 when absent); labels must match exactly.
    pub async fn metric(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let text = String::from_utf8(self.admin("/metrics").await.bytes().to_vec()).unwrap();
        sample(&text, name, labels)
    }

    /// Like `metric`, read in process instead of over the admin listener, so `eventually` can
    /// poll it.
    pub fn metric_now(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let text = self
            .running
            .as_ref()
            .expect("daemon is running")
            .metrics()
            .render();
        sample(&text, name, labels)
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.request("GET", path, &[]).await
    }

    pub async fn head(&self, path: &str) -> Reply {
        self.request("HEAD", path, &[]).await
    }
}

/// The value of one sample in Prometheus text (0 when absent); labels must match exactly.
fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    let mut want: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
    want.sort();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let (n, l) = match series.split_once('{') {
            Some((n, l)) => (n, l.trim_end_matches('}')),
            None => (series, ""),
        };
        let mut got: Vec<String> = if l.is_empty() {
            vec![]
        } else {
            l.split(',').map(str::to_string).collect()
        };
        got.sort();
        if n == name && got == want {
            return value.parse().unwrap();
        }
    }
    0.0
}
