//! One request to a Bearer token service (Docker's token spec): `GET realm?service=&scope=` —
//! anonymous, or with HTTP Basic and `account=<username>` — or, for an identity (refresh) token,
//! the OAuth2 form `POST` with `grant_type=refresh_token`. Parses `token`/`access_token` and
//! `expires_in` (60 s when absent). Error messages never carry the token or the credentials.

use std::time::Duration;

use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER, USER_AGENT};
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full, Limited};

use super::auth::basic_header;
use super::client::HttpClient;
use super::deadline::AnswerDeadline;
use super::ratelimit::parse_retry_after;
use super::UpstreamError;
use crate::config::Credentials;
use crate::secret::Secret;

/// Token lifetime assumed when the token service does not say (the Docker token spec's default).
pub(super) const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(60);
const MAX_TOKEN_RESPONSE: usize = 64 * 1024;
/// Sent as `client_id` in OAuth2 requests.
const CLIENT_ID: &str = "regcache";

pub(super) struct Token {
    pub value: Secret,
    pub lifetime: Duration,
}

pub(super) struct TokenRequest<'a> {
    pub realm: &'a str,
    pub service: Option<&'a str>,
    pub scope: Option<&'a str>,
    pub credentials: Option<&'a Credentials>,
}

#[derive(serde::Deserialize)]
struct TokenResponse {
    token: Option<String>,
    access_token: Option<String>,
    expires_in: Option<u64>,
}

fn build(t: &TokenRequest<'_>) -> Result<Request<Full<Bytes>>, String> {
    let mut form = form_urlencoded::Serializer::new(String::new());
    if let Some(s) = t.service {
        form.append_pair("service", s);
    }
    if let Some(s) = t.scope.filter(|s| !s.is_empty()) {
        form.append_pair("scope", s);
    }
    let realm: http::Uri = t
        .realm
        .parse()
        .map_err(|_| format!("realm {:?} is not a URL", t.realm))?;
    if !matches!(realm.scheme_str(), Some("http" | "https")) {
        return Err(format!("realm {:?} is not an http(s) URL", t.realm));
    }
    let req = Request::builder().header(USER_AGENT, super::USER_AGENT);
    match t.credentials {
        Some(Credentials::IdentityToken(refresh)) => {
            form.append_pair("grant_type", "refresh_token");
            form.append_pair("client_id", CLIENT_ID);
            form.append_pair("refresh_token", refresh.expose());
            req.method(Method::POST)
                .uri(realm)
                .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
                .body(Full::new(Bytes::from(form.finish())))
        }
        basic => {
            let mut req = req.method(Method::GET);
            if let Some(Credentials::Basic { username, password }) = basic {
                form.append_pair("account", username);
                req = req.header(AUTHORIZATION, basic_header(username, password));
            }
            let sep = if t.realm.contains('?') { '&' } else { '?' };
            let url = format!("{}{sep}{}", t.realm, form.finish());
            req.uri(url).body(Full::default())
        }
    }
    .map_err(|_| "cannot build the token request".to_string())
}

pub(super) async fn fetch(
    client: &HttpClient,
    upstream: &str,
    timeout: AnswerDeadline,
    t: TokenRequest<'_>,
) -> Result<Token, UpstreamError> {
    let err = |reason: String| UpstreamError::Token {
        upstream: upstream.to_string(),
        reason,
    };
    let req = build(&t).map_err(err)?;
    let exchange = async {
        let resp = client
            .request(req)
            .await
            .map_err(|e| err(format!("request failed: {}", super::error_chain(&e))))?;
        let status = resp.status();
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            return Err(UpstreamError::Denied {
                upstream: upstream.to_string(),
                status,
            });
        }
        if status == StatusCode::TOO_MANY_REQUESTS {
            return Err(UpstreamError::Status {
                upstream: upstream.to_string(),
                status,
                retry_after: resp.headers().get(RETRY_AFTER).and_then(parse_retry_after),
            });
        }
        if !status.is_success() {
            return Err(err(format!("token service answered {status}")));
        }
        Limited::new(resp.into_body(), MAX_TOKEN_RESPONSE)
            .collect()
            .await
            .map(|c| c.to_bytes())
            .map_err(|e| err(format!("reading token: {e}")))
    };
    // A token service that does not answer is the upstream not answering (a 503 for the client,
    // a failure for the breaker), not a malformed answer.
    let body = timeout
        .within(exchange)
        .await
        .ok_or_else(|| UpstreamError::Timeout {
            upstream: upstream.to_string(),
        })??;
    // Not serde's message: it could quote the token.
    let parsed: TokenResponse =
        serde_json::from_slice(&body).map_err(|_| err("token response is not the expected JSON".into()))?;
    let value = parsed
        .token
        .filter(|t| !t.is_empty())
        .or(parsed.access_token)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| err("token response has no token".into()))?;
    let lifetime = parsed
        .expires_in
        .map(Duration::from_secs)
        .unwrap_or(DEFAULT_TOKEN_LIFETIME);
    Ok(Token {
        value: Secret::new(value),
        lifetime,
    })
}
