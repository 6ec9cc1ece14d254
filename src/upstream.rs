//! Upstream registries: pooled HTTP clients per upstream (`client.rs`), and the request path
//! every upstream call takes: offline and circuit-breaker checks, rate-limit gate, concurrency
//! permit, then the exchange (`exchange.rs`: authentication and redirect following). Requests
//! are always for one repository, so the Bearer scope is `repository:<name>:pull`. Redirects
//! (blob storage, CDNs, registry.k8s.io's regional backends) are followed with each hop
//! authenticated for its own host: `Authorization` meant for one host never reaches another;
//! which targets may be followed at all is `redirect.rs`'s rule. The routing table
//! (client-facing host → upstream) is in `table.rs`.

mod address;
mod auth;
mod breaker;
mod challenge;
mod client;
mod credential_helper;
mod credentials;
mod deadline;
mod egress;
mod error;
mod exchange;
mod fallback;
mod health;
mod permits;
mod probe;
mod ratelimit;
mod redirect;
mod resolve;
mod socks;
mod table;
mod token;
mod token_cache;
mod tunnel;

use std::sync::Arc;
use std::time::Duration;

use http::header::HeaderMap;
use http::{Method, Response, StatusCode};

use crate::config::{FetchConfig, UpstreamConfig};
use crate::metrics::{Metrics, StatusClass, UpstreamCounters};
use crate::oci::RepoName;
use breaker::Breaker;
pub use client::ClientBuildError;
pub use credentials::Reloaded;
pub use error::UpstreamError;
use exchange::error_chain;
pub use fallback::Fallback;
pub use permits::UpstreamBody;
pub use table::Upstreams;

pub const USER_AGENT: &str = concat!("regcache/", env!("CARGO_PKG_VERSION"));

/// One configured upstream registry.
pub struct Upstream {
    config: UpstreamConfig,
    client: client::HttpClient,
    /// For redirects away from the upstream's origin: checks the addresses it connects to.
    redirect_client: client::HttpClient,
    auth: auth::Auth,
    permits: permits::Permits,
    rate_limit: ratelimit::RateLimit,
    breaker: Arc<Breaker>,
    health: health::Health,
    read_timeout: Duration,
    /// Connect plus response headers: the longest an upstream may keep us waiting for an answer.
    answer_deadline: deadline::AnswerDeadline,
    counters: UpstreamCounters,
    /// `[[upstreams]] fallback`: asked in order when this upstream fails (`fallback.rs`).
    fallbacks: Vec<Upstream>,
}

impl Upstream {
    pub fn new(
        config: UpstreamConfig,
        fetch: &FetchConfig,
        metrics: Arc<Metrics>,
    ) -> Result<Upstream, ClientBuildError> {
        Upstream::named(config.host.clone(), config, fetch, metrics)
    }

    /// An upstream whose metrics and token log lines say `name` (a fallback's label).
    fn named(
        name: String,
        config: UpstreamConfig,
        fetch: &FetchConfig,
        metrics: Arc<Metrics>,
    ) -> Result<Upstream, ClientBuildError> {
        let clients = client::build(&config, fetch.connect_timeout, &fetch.egress)?;
        let fallbacks = fallback::build(&config, fetch, &metrics)?;
        let answer_deadline = deadline::AnswerDeadline {
            connect: fetch.connect_timeout,
            header: fetch.header_timeout,
        };
        let counters = metrics.upstream.for_upstream(&name);
        let credentials = credentials::CredentialProvider::new(
            &config,
            credentials::ResolutionCounters {
                ok: counters.credentials_resolved.clone(),
                error: counters.credentials_failed.clone(),
            },
        );
        let auth = auth::Auth::new(
            name,
            &config.authority,
            config.scheme == http::uri::Scheme::HTTP,
            credentials,
            counters.token_fetches.clone(),
            answer_deadline,
        );
        let permits = permits::Permits::new(config.max_connections, counters.active_requests.clone());
        let down = counters.down.clone();
        down.set(0);
        let breaker = Arc::new(Breaker::new(
            fetch.breaker_threshold,
            fetch.breaker_probe_interval,
            down,
        ));
        Ok(Upstream {
            auth,
            permits,
            rate_limit: ratelimit::RateLimit::default(),
            breaker,
            health: health::Health::default(),
            config,
            client: clients.upstream,
            redirect_client: clients.redirects,
            read_timeout: fetch.read_timeout,
            answer_deadline,
            counters,
            fallbacks,
        })
    }

    fn observe(&self, method: &Method, class: StatusClass, headers: Option<&HeaderMap>) {
        self.counters.response(method, class);
        let Some(h) = headers else { return };
        if let Some(r) = ratelimit::header_number(h, "ratelimit-remaining") {
            self.counters.ratelimit_remaining.set(r);
        }
        if let Some(l) = ratelimit::header_number(h, "ratelimit-limit") {
            self.counters.ratelimit_limit.set(l);
        }
    }

    /// Counts bytes fetched from this upstream.
    pub fn fetched_bytes(&self) -> &prometheus::IntCounter {
        &self.counters.bytes
    }

    /// The name clients use for this registry (`docker.io`).
    pub fn host(&self) -> &str {
        &self.config.host
    }

    pub fn config(&self) -> &UpstreamConfig {
        &self.config
    }

    /// Offline: nothing is ever sent; only cached content is served.
    pub fn is_offline(&self) -> bool {
        self.config.offline
    }

    /// Docker Hub names official images `library/<name>`; clients may send just `<name>`.
    pub fn adds_library_prefix(&self) -> bool {
        self.config.adds_library_prefix()
    }

    pub fn read_timeout(&self) -> Duration {
        self.read_timeout
    }

    fn protocol(&self, reason: String) -> UpstreamError {
        UpstreamError::Protocol {
            upstream: self.host().to_string(),
            reason,
        }
    }

    /// Applies the credentials of a reloaded configuration (SIGHUP), its fallbacks' included.
    pub fn reload_credentials(&self, config: &UpstreamConfig) -> credentials::Reloaded {
        use credentials::Reloaded;
        match (
            self.auth.reload_credentials(config),
            self.reload_fallbacks(config),
        ) {
            (Reloaded::NeedsRestart, _) | (_, Reloaded::NeedsRestart) => Reloaded::NeedsRestart,
            (Reloaded::Unchanged, other) => other,
            (own, _) => own,
        }
    }

    /// Whether the breaker has marked this upstream down.
    pub fn is_down(&self) -> bool {
        self.breaker.is_open()
    }

    /// Sends `method /v2/<repo>/<tail>` and returns the final 2xx response (after auth and
    /// redirects). Any other status becomes an `UpstreamError`. Nothing is sent while the
    /// upstream is offline, marked down by the breaker, or its last 429 asked us to wait. The
    /// response body holds one of the upstream's `max_connections` places until it ends or is
    /// dropped.
    pub async fn request(
        &self,
        method: Method,
        repo: &RepoName,
        tail: &str,
        headers: &HeaderMap,
    ) -> Result<Response<UpstreamBody>, UpstreamError> {
        self.request_within(method, repo, tail, headers, None, Fallback::Allowed)
            .await
    }

    /// `request`, giving up on this upstream after `deadline` (auth round trips included) if
    /// one is given, and asking its fallbacks only when `fallback` allows.
    pub async fn request_within(
        &self,
        method: Method,
        repo: &RepoName,
        tail: &str,
        headers: &HeaderMap,
        deadline: Option<Duration>,
        fallback: Fallback,
    ) -> Result<Response<UpstreamBody>, UpstreamError> {
        let outcome = self
            .request_here(method.clone(), repo, tail, headers, deadline)
            .await;
        self.or_fallback(outcome, fallback, (&method, repo, tail, headers))
            .await
    }

    /// One request to this upstream itself, never its fallbacks.
    async fn request_here(
        &self,
        method: Method,
        repo: &RepoName,
        tail: &str,
        headers: &HeaderMap,
        deadline: Option<Duration>,
    ) -> Result<Response<UpstreamBody>, UpstreamError> {
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
            Err(e) if e.is_outage() => self.failed(e),
            Err(e) if e.is_server_error() => {
                let base = self.config.base_url();
                if self
                    .health
                    .answers(&self.client, &base, self.answer_deadline)
                    .await
                {
                    self.breaker.success();
                } else {
                    self.failed(e);
                }
            }
            Err(e) if e.is_not_attempted() => {}
            _ => self.breaker.success(),
        }
        outcome
    }

    /// Counts a failure of the upstream as a whole; opening the breaker starts the probe.
    fn failed(&self, e: &UpstreamError) {
        if self.breaker.failure() {
            tracing::warn!(upstream = %self.host(), error = %e, "upstream marked down; serving from cache only");
            self.probe_until_up();
        }
    }

    /// Probes `GET /v2/` in the background until the upstream answers again.
    fn probe_until_up(&self) {
        let breaker = self.breaker.clone();
        let client = self.client.clone();
        let base = self.config.base_url();
        let host = self.host().to_string();
        let timeout = self.answer_deadline;
        tokio::spawn(async move {
            while breaker.is_open() {
                tokio::time::sleep(breaker.probe_interval()).await;
                if health::v2_answers(&client, &base, timeout).await {
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
    ) -> Result<Response<UpstreamBody>, UpstreamError> {
        self.not_rate_limited()?;
        let permit = self.permits.acquire().await;
        // A 429 may have come in while this request waited for its place.
        self.not_rate_limited()?;
        let mut url = format!("{}/v2/{}/{}", self.config.base_url(), repo, tail);
        if self.config.send_ns {
            // The next tier is a mirror too: say which registry, as containerd says it.
            url.push(if url.contains('?') { '&' } else { '?' });
            url.push_str("ns=");
            url.extend(form_urlencoded::byte_serialize(self.config.host.as_bytes()));
        }
        let scope = format!("repository:{repo}:pull");
        let sent = self.send(&method, &url, headers, &scope).await;
        let resp = match sent.and_then(|r| self.classify(r)) {
            Ok(r) => r,
            Err(UpstreamError::Status {
                upstream,
                status,
                retry_after,
            }) if status == StatusCode::TOO_MANY_REQUESTS => {
                let wait = self.rate_limit.limited(retry_after);
                tracing::warn!(upstream = %self.host(), ?wait, "upstream rate limit reached; holding requests back");
                return Err(UpstreamError::Status {
                    upstream,
                    status,
                    retry_after: Some(wait),
                });
            }
            Err(e) => return Err(e),
        };
        Ok(resp.map(|body| UpstreamBody::new(body, permit)))
    }

    /// Fails fast while the upstream's last 429 asks us to wait.
    fn not_rate_limited(&self) -> Result<(), UpstreamError> {
        match self.rate_limit.remaining() {
            None => Ok(()),
            Some(retry_after) => {
                self.counters.throttled.inc();
                Err(UpstreamError::RateLimited {
                    upstream: self.host().to_string(),
                    retry_after,
                })
            }
        }
    }
}
