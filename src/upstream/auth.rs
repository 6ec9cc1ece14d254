//! Upstream authentication: what `Authorization` each host an upstream request reaches gets,
//! learned from that host's 401 challenges (RFC 7235, several per header allowed). The upstream's
//! own host may get its credentials: HTTP Basic (ECR's `AWS:<token>`), or a Bearer token fetched
//! with them. Any other host — a redirect target such as registry.k8s.io's regional backends —
//! runs the same flow anonymously, keyed by its own name, and credentials are never sent to a
//! plain-http token service of an https upstream. The scope asked for is always the one the
//! request needs, never a challenge's placeholder (ghcr.io's `/v2/` names `user/image`).

use std::collections::HashMap;
use std::sync::Mutex;

use base64::Engine as _;
use http::HeaderValue;
use prometheus::IntCounter;

use super::challenge::Challenge;
use super::client::HttpClient;
use super::credentials::{CredentialProvider, Reloaded};
use super::deadline::AnswerDeadline;
use super::token::{self, TokenRequest};
use super::token_cache::{TokenCache, TokenKey};
use super::UpstreamError;
use crate::config::Credentials;
use crate::secret::Secret;

#[derive(Debug, Clone)]
enum Scheme {
    Basic,
    Bearer {
        realm: String,
        service: Option<String>,
        /// The challenge's scope, used only when the URL names no repository.
        scope: Option<String>,
    },
}

/// An `Authorization` value that was sent, and what it came from, so a 401 can retire it.
pub(super) struct Sent {
    pub value: HeaderValue,
    from: SentFrom,
}

enum SentFrom {
    Basic { generation: u64 },
    Bearer { key: TokenKey, token: Secret },
}

pub(super) struct Auth {
    upstream: String,
    /// The upstream's own authority: the only host that gets credentials.
    origin: String,
    plain_http_origin: bool,
    credentials: CredentialProvider,
    schemes: Mutex<HashMap<String, Scheme>>,
    tokens: TokenCache,
    token_fetches: IntCounter,
    timeout: AnswerDeadline,
}

pub(super) fn basic_header(username: &str, password: &Secret) -> HeaderValue {
    let raw = format!("{username}:{}", password.expose());
    let mut v = HeaderValue::from_str(&format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(raw)
    ))
    .expect("base64 is a valid header value");
    v.set_sensitive(true);
    v
}

impl Auth {
    /// Applies reloaded credentials (SIGHUP).
    pub(super) fn reload_credentials(&self, config: &crate::config::UpstreamConfig) -> Reloaded {
        self.credentials.reload(config)
    }

    pub(super) fn new(
        upstream: String,
        origin: &http::uri::Authority,
        plain_http_origin: bool,
        credentials: CredentialProvider,
        token_fetches: IntCounter,
        timeout: AnswerDeadline,
    ) -> Auth {
        Auth {
            upstream,
            origin: origin.as_str().to_ascii_lowercase(),
            plain_http_origin,
            credentials,
            schemes: Mutex::new(HashMap::new()),
            tokens: TokenCache::default(),
            token_fetches,
            timeout,
        }
    }

    fn scheme(&self, host: &str) -> Option<Scheme> {
        self.schemes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(host)
            .cloned()
    }

    fn is_origin(&self, host: &str) -> bool {
        host.eq_ignore_ascii_case(&self.origin)
    }

    /// The header for a request to `host` (an authority) about `scope`, fetching a token first
    /// when that host uses Bearer auth and no live token is cached. `None`: send nothing.
    pub(super) async fn header_for(
        &self,
        client: &HttpClient,
        host: &str,
        scope: Option<&str>,
    ) -> Result<Option<Sent>, UpstreamError> {
        match self.scheme(host) {
            None => Ok(None),
            Some(Scheme::Basic) if self.is_origin(host) => match self.credentials.get().await? {
                Some(r) => match &r.credentials {
                    Credentials::Basic { username, password } => Ok(Some(Sent {
                        value: basic_header(username, password),
                        from: SentFrom::Basic {
                            generation: r.generation,
                        },
                    })),
                    Credentials::IdentityToken(_) => Ok(None),
                },
                None => Ok(None),
            },
            Some(Scheme::Basic) => Ok(None),
            Some(Scheme::Bearer {
                realm,
                service,
                scope: challenged,
            }) => {
                let scope = scope.map(str::to_string).or(challenged).unwrap_or_default();
                self.bearer(client, host, &realm, service.as_deref(), &scope)
                    .await
                    .map(Some)
            }
        }
    }

    async fn bearer(
        &self,
        client: &HttpClient,
        host: &str,
        realm: &str,
        service: Option<&str>,
        scope: &str,
    ) -> Result<Sent, UpstreamError> {
        let send_credentials =
            self.is_origin(host) && (self.plain_http_origin || realm.starts_with("https://"));
        if self.is_origin(host) && !send_credentials && self.credentials.configured() {
            tracing::warn!(upstream = %self.upstream, realm, "not sending credentials to a plain-http token service");
        }
        let mut refused: Option<(u64, UpstreamError)> = None;
        loop {
            let creds = if send_credentials {
                self.credentials.get().await?
            } else {
                None
            };
            let generation = creds.as_ref().map(|c| c.generation).unwrap_or(0);
            if let Some((g, e)) = &refused {
                if *g == generation {
                    return Err(e.clone());
                }
            }
            let key = TokenKey {
                host: host.to_ascii_lowercase(),
                realm: realm.to_string(),
                service: service.map(str::to_string),
                scope: scope.to_string(),
                generation,
            };
            let fetched = self
                .tokens
                .get_or_fetch(&key, || async {
                    self.token_fetches.inc();
                    let t = token::fetch(
                        client,
                        &self.upstream,
                        self.timeout,
                        TokenRequest {
                            realm,
                            service,
                            scope: Some(scope),
                            credentials: creds.as_ref().map(|c| &c.credentials),
                        },
                    )
                    .await?;
                    tracing::debug!(upstream = %self.upstream, host, scope, lifetime = ?t.lifetime, "fetched upstream token");
                    Ok(t)
                })
                .await;
            match fetched {
                Ok(token) => {
                    let mut value =
                        HeaderValue::from_str(&format!("Bearer {}", token.expose())).map_err(|_| {
                            UpstreamError::Token {
                                upstream: self.upstream.clone(),
                                reason: "token is not a valid header value".into(),
                            }
                        })?;
                    value.set_sensitive(true);
                    return Ok(Sent {
                        value,
                        from: SentFrom::Bearer { key, token },
                    });
                }
                // The token service refused these credentials: read them again once (a rotated
                // helper secret), and retry if they changed.
                Err(e @ UpstreamError::Denied { .. }) if generation != 0 && refused.is_none() => {
                    self.credentials.rejected(generation);
                    refused = Some((generation, e));
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Learns from a 401 of `host`, retiring what was sent. True when a retry may succeed.
    pub(super) fn on_unauthorized(&self, host: &str, challenges: &[Challenge], sent: Option<&Sent>) -> bool {
        match sent.map(|s| &s.from) {
            Some(SentFrom::Basic { generation }) => self.credentials.rejected(*generation),
            Some(SentFrom::Bearer { key, token }) => self.tokens.invalidate(key, token),
            None => {}
        }
        let bearer = challenges
            .iter()
            .find(|c| c.scheme == "bearer" && c.param("realm").is_some_and(|r| !r.is_empty()));
        let next = if let Some(b) = bearer {
            Scheme::Bearer {
                realm: b.param("realm").unwrap_or_default().to_string(),
                service: b.param("service").map(str::to_string),
                scope: b.param("scope").map(str::to_string),
            }
        } else if challenges.iter().any(|c| c.scheme == "basic")
            && self.is_origin(host)
            && self.credentials.configured()
        {
            Scheme::Basic
        } else {
            return false;
        };
        self.schemes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(host.to_ascii_lowercase(), next);
        true
    }
}
