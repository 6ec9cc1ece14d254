//! Upstream registries: the routing table (client-facing host → registry), one pooled HTTP
//! client per upstream, authentication, and redirect following. Requests are always for one
//! repository, so the Bearer scope is `repository:<name>:pull`. Redirects (blob storage, CDNs,
//! registry.k8s.io's regional backends) are followed here; `Authorization` never leaves the
//! upstream's own host.

mod auth;
mod breaker;
mod challenge;
mod client;

use std::sync::Arc;
use std::time::Duration;

use http::header::{HeaderMap, AUTHORIZATION, LOCATION, RETRY_AFTER, WWW_AUTHENTICATE};
use http::{Method, Request, Response, StatusCode, Uri};
use http_body_util::Empty;
use hyper::body::Incoming;

use crate::config::{Config, FetchConfig, UpstreamConfig};
use crate::metrics::Metrics;
use crate::oci::RepoName;
use breaker::Breaker;
pub use client::ClientBuildError;

pub const USER_AGENT: &str = concat!("regcache/", env!("CARGO_PKG_VERSION"));
const MAX_REDIRECTS: usize = 5;

#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("upstream {upstream} could not be reached: {reason}")]
    Connect { upstream: String, reason: String },
    #[error("upstream {upstream} did not answer in time")]
    Timeout { upstream: String },
    #[error("upstream {upstream} answered {status}")]
    Status {
        upstream: String,
        status: StatusCode,
        retry_after: Option<Duration>,
    },
    #[error("upstream {upstream} denied access ({status})")]
    Denied { upstream: String, status: StatusCode },
    #[error("token service of upstream {upstream}: {reason}")]
    Token { upstream: String, reason: String },
    #[error("upstream {upstream}: {reason}")]
    Protocol { upstream: String, reason: String },
    #[error("regcache is offline for {upstream}: only cached content is served")]
    Offline { upstream: String },
    #[error("upstream {upstream} is marked down after repeated failures; retrying in the background")]
    Down { upstream: String },
}

impl UpstreamError {
    pub fn is_not_found(&self) -> bool {
        matches!(self, UpstreamError::Status { status, .. } if *status == StatusCode::NOT_FOUND)
    }

    /// Failures that say the upstream is unhealthy (as opposed to answering "no").
    fn is_outage(&self) -> bool {
        match self {
            UpstreamError::Connect { .. } | UpstreamError::Timeout { .. } => true,
            UpstreamError::Status { status, .. } => status.is_server_error(),
            _ => false,
        }
    }

    /// We did not ask: offline mode or a downed upstream.
    pub fn is_not_attempted(&self) -> bool {
        matches!(self, UpstreamError::Offline { .. } | UpstreamError::Down { .. })
    }
}

/// One configured upstream registry.
pub struct Upstream {
    config: UpstreamConfig,
    client: client::HttpClient,
    auth: auth::Auth,
    read_timeout: Duration,
    metrics: Arc<Metrics>,
    breaker: Arc<Breaker>,
}

impl Upstream {
    pub fn new(
        config: UpstreamConfig,
        fetch: &FetchConfig,
        metrics: Arc<Metrics>,
    ) -> Result<Upstream, ClientBuildError> {
        let client = client::build(config.ca_file.as_deref(), fetch.connect_timeout)?;
        let token_fetches = metrics.upstream_token_fetches.with_label_values(&[&config.host]);
        let down = metrics.upstream_down.with_label_values(&[&config.host]);
        down.set(0);
        let breaker = Arc::new(Breaker::new(
            fetch.breaker_threshold,
            fetch.breaker_probe_interval,
            down,
        ));
        Ok(Upstream {
            breaker,
            auth: auth::Auth::new(config.host.clone(), config.credentials.clone(), token_fetches),
            config,
            client,
            read_timeout: fetch.read_timeout,
            metrics,
        })
    }

    fn observe(&self, method: &Method, class: &str, headers: Option<&HeaderMap>) {
        self.metrics
            .upstream_requests
            .with_label_values(&[self.host(), method.as_str(), class])
            .inc();
        let remaining = headers
            .and_then(|h| h.get("ratelimit-remaining"))
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .and_then(|v| v.trim().parse::<i64>().ok());
        if let Some(r) = remaining {
            self.metrics
                .upstream_ratelimit_remaining
                .with_label_values(&[self.host()])
                .set(r);
        }
    }

    /// The name clients use for this registry (`docker.io`).
    pub fn host(&self) -> &str {
        &self.config.host
    }

    pub fn config(&self) -> &UpstreamConfig {
        &self.config
    }

    pub fn read_timeout(&self) -> Duration {
        self.read_timeout
    }

    /// Whether the breaker has marked this upstream down.
    pub fn is_down(&self) -> bool {
        self.breaker.is_open()
    }

    /// Sends `method /v2/<repo>/<tail>` and returns the final 2xx response (after auth and
    /// redirects). Any other status becomes an `UpstreamError`.
    pub async fn request(
        &self,
        method: Method,
        repo: &RepoName,
        tail: &str,
        headers: &HeaderMap,
    ) -> Result<Response<Incoming>, UpstreamError> {
        self.request_within(method, repo, tail, headers, None).await
    }

    /// `request`, giving up after `deadline` (auth round trips included) if one is given.
    pub async fn request_within(
        &self,
        method: Method,
        repo: &RepoName,
        tail: &str,
        headers: &HeaderMap,
        deadline: Option<Duration>,
    ) -> Result<Response<Incoming>, UpstreamError> {
        let upstream = || self.host().to_string();
        if self.config.offline {
            return Err(UpstreamError::Offline { upstream: upstream() });
        }
        if self.breaker.is_open() {
            return Err(UpstreamError::Down { upstream: upstream() });
        }
        let exchange = self.exchange(method, repo, tail, headers);
        let outcome = match deadline {
            Some(d) => tokio::time::timeout(d, exchange)
                .await
                .unwrap_or_else(|_| Err(UpstreamError::Timeout { upstream: upstream() })),
            None => exchange.await,
        };
        match &outcome {
            Err(e) if e.is_outage() => {
                if self.breaker.failure() {
                    tracing::warn!(upstream = %self.host(), error = %e, "upstream marked down; serving from cache only");
                    self.probe_until_up();
                }
            }
            _ => self.breaker.success(),
        }
        outcome
    }

    /// Probes `GET /v2/` in the background until the upstream answers again.
    fn probe_until_up(&self) {
        let breaker = self.breaker.clone();
        let client = self.client.clone();
        let url = format!("{}/v2/", self.config.base_url());
        let host = self.host().to_string();
        let timeout = self.read_timeout;
        tokio::spawn(async move {
            while breaker.is_open() {
                tokio::time::sleep(breaker.probe_interval()).await;
                let Ok(req) = Request::get(url.as_str())
                    .header(http::header::USER_AGENT, USER_AGENT)
                    .body(Empty::new())
                else {
                    return;
                };
                if let Ok(Ok(_)) = tokio::time::timeout(timeout, client.request(req)).await {
                    breaker.success();
                    tracing::info!(upstream = %host, "upstream answers again");
                }
            }
        });
    }

    async fn exchange(
        &self,
        method: Method,
        repo: &RepoName,
        tail: &str,
        headers: &HeaderMap,
    ) -> Result<Response<Incoming>, UpstreamError> {
        let url = format!("{}/v2/{}/{}", self.config.base_url(), repo, tail);
        let scope = format!("repository:{repo}:pull");
        let mut challenged = false;
        loop {
            let auth = self.auth.header_for(&self.client, &scope).await?;
            let sent_auth = auth.is_some();
            let resp = self
                .send_following_redirects(&method, &url, headers, auth)
                .await?;
            let status = resp.status();
            if status == StatusCode::UNAUTHORIZED && !challenged {
                challenged = true;
                let challenges: Vec<_> = resp
                    .headers()
                    .get_all(WWW_AUTHENTICATE)
                    .iter()
                    .filter_map(|v| v.to_str().ok())
                    .flat_map(challenge::parse)
                    .collect();
                if self.auth.on_challenge(&challenges, &scope) {
                    continue;
                }
                if !sent_auth {
                    return Err(UpstreamError::Denied {
                        upstream: self.host().to_string(),
                        status,
                    });
                }
            }
            return self.classify(resp);
        }
    }

    fn classify(&self, resp: Response<Incoming>) -> Result<Response<Incoming>, UpstreamError> {
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let upstream = self.host().to_string();
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            return Err(UpstreamError::Denied { upstream, status });
        }
        let retry_after = resp
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        Err(UpstreamError::Status {
            upstream,
            status,
            retry_after,
        })
    }

    async fn send_following_redirects(
        &self,
        method: &Method,
        url: &str,
        headers: &HeaderMap,
        auth: Option<http::HeaderValue>,
    ) -> Result<Response<Incoming>, UpstreamError> {
        let protocol = |reason: String| UpstreamError::Protocol {
            upstream: self.host().to_string(),
            reason,
        };
        let mut uri: Uri = url.parse().map_err(|_| protocol(format!("bad URL {url}")))?;
        let origin = uri.authority().cloned();
        for _ in 0..=MAX_REDIRECTS {
            let mut req = Request::builder().method(method.clone()).uri(uri.clone());
            if let Some(h) = req.headers_mut() {
                h.extend(headers.iter().map(|(k, v)| (k.clone(), v.clone())));
                h.insert(
                    http::header::USER_AGENT,
                    http::HeaderValue::from_static(USER_AGENT),
                );
                if let Some(a) = auth.as_ref().filter(|_| uri.authority() == origin.as_ref()) {
                    h.insert(AUTHORIZATION, a.clone());
                }
            }
            let req = req.body(Empty::new()).map_err(|e| protocol(e.to_string()))?;
            let resp = match tokio::time::timeout(self.read_timeout, self.client.request(req)).await {
                Err(_) => {
                    self.observe(method, "error", None);
                    return Err(UpstreamError::Timeout {
                        upstream: self.host().to_string(),
                    });
                }
                Ok(Err(e)) => {
                    self.observe(method, "error", None);
                    return Err(UpstreamError::Connect {
                        upstream: self.host().to_string(),
                        reason: error_chain(&e),
                    });
                }
                Ok(Ok(r)) => r,
            };
            self.observe(method, Metrics::class(resp.status()), Some(resp.headers()));
            if !resp.status().is_redirection() || resp.status() == StatusCode::NOT_MODIFIED {
                return Ok(resp);
            }
            let location = resp
                .headers()
                .get(LOCATION)
                .and_then(|l| l.to_str().ok())
                .ok_or_else(|| protocol(format!("{} without Location", resp.status())))?;
            let next =
                resolve(&uri, location).ok_or_else(|| protocol(format!("bad redirect {location:?}")))?;
            if uri.scheme_str() == Some("https") && next.scheme_str() != Some("https") {
                return Err(protocol("refusing a redirect from https to plain http".into()));
            }
            tracing::debug!(upstream = %self.host(), to = %next.host().unwrap_or(""), "following redirect");
            uri = next;
        }
        Err(protocol(format!("more than {MAX_REDIRECTS} redirects")))
    }
}

/// Resolves a `Location` against the URL that answered with it.
fn resolve(base: &Uri, location: &str) -> Option<Uri> {
    let loc: Uri = location.parse().ok()?;
    if loc.scheme().is_some() {
        return Some(loc);
    }
    let path = loc.path_and_query()?.as_str();
    if !path.starts_with('/') {
        return None;
    }
    Uri::builder()
        .scheme(base.scheme()?.clone())
        .authority(base.authority()?.clone())
        .path_and_query(path)
        .build()
        .ok()
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// The routing table: every configured upstream by client-facing host, and the default.
pub struct Upstreams {
    list: Vec<Arc<Upstream>>,
    default: usize,
}

impl Upstreams {
    pub fn from_config(config: &Config, metrics: &Arc<Metrics>) -> Result<Upstreams, ClientBuildError> {
        let mut list = Vec::new();
        let mut default = 0;
        for (i, u) in config.upstreams.iter().enumerate() {
            if u.default {
                default = i;
            }
            list.push(Arc::new(Upstream::new(
                u.clone(),
                &config.fetch,
                metrics.clone(),
            )?));
        }
        Ok(Upstreams { list, default })
    }

    pub fn by_host(&self, host: &str) -> Option<&Arc<Upstream>> {
        let host = if host == "index.docker.io" || host == "registry-1.docker.io" {
            "docker.io"
        } else {
            host
        };
        self.list.iter().find(|u| u.host() == host)
    }

    pub fn default_upstream(&self) -> &Arc<Upstream> {
        &self.list[self.default]
    }

    pub fn all(&self) -> &[Arc<Upstream>] {
        &self.list
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_redirects() {
        let base: Uri = "https://reg.example/v2/a/blobs/x".parse().unwrap();
        assert_eq!(
            resolve(&base, "https://cdn.example/b?sig=1").unwrap().to_string(),
            "https://cdn.example/b?sig=1"
        );
        assert_eq!(
            resolve(&base, "/other?x=1").unwrap().to_string(),
            "https://reg.example/other?x=1"
        );
        assert!(resolve(&base, "relative").is_none());
    }
}
