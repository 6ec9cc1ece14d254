//! Upstream authentication: what `Authorization` to send for a repository scope, learned from
//! the upstream's 401 challenges. Bearer tokens are fetched from the challenge's realm
//! (anonymously, or with the configured basic credentials) and cached per scope until shortly
//! before `expires_in` runs out; Basic credentials are sent once the upstream asked for them.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use base64::Engine as _;
use http::{HeaderValue, Method, Request, StatusCode};
use http_body_util::{BodyExt, Empty, Limited};
use prometheus::IntCounter;
use tokio::time::Instant;

use super::challenge::Challenge;
use super::client::HttpClient;
use super::UpstreamError;
use crate::config::Credentials;
use crate::telemetry::Secret;

/// Token lifetime assumed when the token service does not say (the Docker token spec's default).
const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(60);
const MAX_TOKEN_RESPONSE: usize = 64 * 1024;

#[derive(Debug, Clone)]
enum Scheme {
    /// No challenge seen yet: send nothing.
    Unknown,
    Basic,
    Bearer {
        realm: String,
        service: Option<String>,
    },
}

pub struct Auth {
    upstream: String,
    token_fetches: IntCounter,
    credentials: Option<Credentials>,
    scheme: Mutex<Scheme>,
    tokens: Mutex<HashMap<String, (Secret, Instant)>>,
}

#[derive(serde::Deserialize)]
struct TokenResponse {
    token: Option<String>,
    access_token: Option<String>,
    expires_in: Option<u64>,
}

impl Auth {
    pub fn new(upstream: String, credentials: Option<Credentials>, token_fetches: IntCounter) -> Auth {
        Auth {
            upstream,
            token_fetches,
            credentials,
            scheme: Mutex::new(Scheme::Unknown),
            tokens: Mutex::new(HashMap::new()),
        }
    }

    fn scheme(&self) -> Scheme {
        self.scheme.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn basic_value(&self) -> Option<HeaderValue> {
        let c = self.credentials.as_ref()?;
        let raw = format!("{}:{}", c.username, c.password.expose());
        let mut v = HeaderValue::from_str(&format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(raw)
        ))
        .ok()?;
        v.set_sensitive(true);
        Some(v)
    }

    /// The header to send for `scope`, fetching a token first when the upstream uses Bearer
    /// auth and no live token is cached.
    pub async fn header_for(
        &self,
        client: &HttpClient,
        scope: &str,
    ) -> Result<Option<HeaderValue>, UpstreamError> {
        match self.scheme() {
            Scheme::Unknown => Ok(None),
            Scheme::Basic => Ok(self.basic_value()),
            Scheme::Bearer { realm, service } => {
                let cached = {
                    let tokens = self.tokens.lock().unwrap_or_else(|e| e.into_inner());
                    tokens
                        .get(scope)
                        .filter(|(_, exp)| Instant::now() < *exp)
                        .map(|(t, _)| t.clone())
                };
                let token = match cached {
                    Some(t) => t,
                    None => {
                        self.fetch_token(client, &realm, service.as_deref(), scope)
                            .await?
                    }
                };
                let mut v = HeaderValue::from_str(&format!("Bearer {}", token.expose())).map_err(|_| {
                    UpstreamError::Token {
                        upstream: self.upstream.clone(),
                        reason: "token is not a valid header value".into(),
                    }
                })?;
                v.set_sensitive(true);
                Ok(Some(v))
            }
        }
    }

    /// Learns from a 401's challenges. Returns false when there is nothing new to try.
    pub fn on_challenge(&self, challenges: &[Challenge], scope: &str) -> bool {
        self.tokens
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(scope);
        let bearer = challenges
            .iter()
            .find(|c| c.scheme == "bearer" && c.param("realm").is_some());
        let next = if let Some(b) = bearer {
            Scheme::Bearer {
                realm: b.param("realm").unwrap_or_default().to_string(),
                service: b.param("service").map(str::to_string),
            }
        } else if challenges.iter().any(|c| c.scheme == "basic") && self.credentials.is_some() {
            Scheme::Basic
        } else {
            return false;
        };
        *self.scheme.lock().unwrap_or_else(|e| e.into_inner()) = next;
        true
    }

    async fn fetch_token(
        &self,
        client: &HttpClient,
        realm: &str,
        service: Option<&str>,
        scope: &str,
    ) -> Result<Secret, UpstreamError> {
        let err = |reason: String| UpstreamError::Token {
            upstream: self.upstream.clone(),
            reason,
        };
        let query = {
            let mut q = form_urlencoded::Serializer::new(String::new());
            if let Some(s) = service {
                q.append_pair("service", s);
            }
            if !scope.is_empty() {
                q.append_pair("scope", scope);
            }
            q.finish()
        };
        let sep = if realm.contains('?') { '&' } else { '?' };
        let url = format!("{realm}{sep}{query}");
        let uri: http::Uri = url
            .parse()
            .map_err(|_| err(format!("realm {realm:?} is not a URL")))?;
        if !matches!(uri.scheme_str(), Some("http" | "https")) {
            return Err(err(format!("realm {realm:?} is not an http(s) URL")));
        }
        let mut req = Request::builder()
            .method(Method::GET)
            .uri(uri)
            .header("user-agent", super::USER_AGENT);
        if let Some(v) = self.basic_value() {
            req = req.header("authorization", v);
        }
        let req = req.body(Empty::new()).map_err(|e| err(e.to_string()))?;
        self.token_fetches.inc();
        let resp = client
            .request(req)
            .await
            .map_err(|e| err(format!("request failed: {e}")))?;
        let status = resp.status();
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            return Err(UpstreamError::Denied {
                upstream: self.upstream.clone(),
                status,
            });
        }
        if !status.is_success() {
            return Err(err(format!("token service answered {status}")));
        }
        let body = Limited::new(resp.into_body(), MAX_TOKEN_RESPONSE)
            .collect()
            .await
            .map_err(|e| err(format!("reading token: {e}")))?
            .to_bytes();
        let parsed: TokenResponse =
            serde_json::from_slice(&body).map_err(|e| err(format!("token response is not JSON: {e}")))?;
        let token = parsed
            .token
            .or(parsed.access_token)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| err("token response has no token".into()))?;
        let lifetime = parsed
            .expires_in
            .map(Duration::from_secs)
            .unwrap_or(DEFAULT_TOKEN_LIFETIME);
        // Renew a little early so a token never expires between our check and the upstream's.
        let skew = (lifetime / 10).min(Duration::from_secs(30));
        let secret = Secret::new(token);
        self.tokens.lock().unwrap_or_else(|e| e.into_inner()).insert(
            scope.to_string(),
            (secret.clone(), Instant::now() + lifetime - skew),
        );
        tracing::debug!(upstream = %self.upstream, scope, ?lifetime, "fetched upstream token");
        Ok(secret)
    }
}
