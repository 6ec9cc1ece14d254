//! A plain HTTP/1.1 client for loopback addresses that can answer anonymous Bearer challenges
//! like a registry client, and follows redirects only while they stay on loopback.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Empty};
use hyper::{Method, Request, StatusCode};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

/// A buffered HTTP response.
#[derive(Debug)]
pub struct HttpResponse {
    /// Status code.
    pub status: StatusCode,
    /// Response headers.
    pub headers: hyper::HeaderMap,
    /// The whole body.
    pub body: Bytes,
}

impl HttpResponse {
    /// A header as a string, if present and ASCII.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// A plain HTTP/1.1 client for loopback addresses. [`HttpClient::pull_get`]
/// also answers anonymous Bearer challenges like a registry client does.
#[derive(Clone)]
pub struct HttpClient {
    client: Client<HttpConnector, Empty<Bytes>>,
    bearer: Arc<Mutex<Option<String>>>,
}

impl Default for HttpClient {
    fn default() -> Self {
        Self::new()
    }
}

impl HttpClient {
    /// A new client.
    pub fn new() -> Self {
        Self {
            client: Client::builder(TokioExecutor::new()).build_http(),
            bearer: Arc::new(Mutex::new(None)),
        }
    }

    /// The Bearer token [`HttpClient::pull_request`] obtained last.
    pub fn bearer_token(&self) -> Option<String> {
        self.bearer.lock().expect("bearer").clone()
    }

    /// A registry-client request: sends the last Bearer token obtained, and
    /// on a `401` with a `Bearer` challenge fetches an anonymous token from
    /// the (loopback) realm and retries once.
    pub async fn pull_request(
        &self,
        method: Method,
        url: &str,
        accept: &str,
    ) -> Result<HttpResponse, String> {
        let token = self.bearer.lock().expect("bearer").clone();
        let response = self
            .with_token(method.clone(), url, accept, token.as_deref())
            .await?;
        if response.status != StatusCode::UNAUTHORIZED {
            return Ok(response);
        }
        let Some(challenge) = response.header("www-authenticate").map(str::to_string) else {
            return Ok(response);
        };
        let Some(token_url) = bearer_token_url(&challenge) else {
            return Ok(response);
        };
        let answer = self.get(&token_url, None).await?;
        if answer.status != StatusCode::OK {
            return Err(format!("token {token_url}: {}", answer.status));
        }
        let json: serde_json::Value =
            serde_json::from_slice(&answer.body).map_err(|e| format!("token {token_url}: {e}"))?;
        let token = json["token"]
            .as_str()
            .or_else(|| json["access_token"].as_str())
            .ok_or_else(|| format!("token {token_url}: no token in answer"))?
            .to_string();
        *self.bearer.lock().expect("bearer") = Some(token.clone());
        self.with_token(method, url, accept, Some(&token)).await
    }

    async fn with_token(
        &self,
        method: Method,
        url: &str,
        accept: &str,
        token: Option<&str>,
    ) -> Result<HttpResponse, String> {
        let authorization = token.map(|t| format!("Bearer {t}"));
        let mut headers = vec![("accept", accept)];
        if let Some(value) = &authorization {
            headers.push(("authorization", value.as_str()));
        }
        self.request_with(method, url, &headers).await
    }

    /// Sends `method url` with an optional Accept header and buffers the
    /// response; follows up to 3 redirects that stay on 127.0.0.1.
    pub async fn request(
        &self,
        method: Method,
        url: &str,
        accept: Option<&str>,
    ) -> Result<HttpResponse, String> {
        match accept {
            Some(accept) => self.request_with(method, url, &[("accept", accept)]).await,
            None => self.request_with(method, url, &[]).await,
        }
    }

    /// Sends `method url` with extra headers and buffers the response;
    /// follows up to 3 redirects that stay on 127.0.0.1.
    pub async fn request_with(
        &self,
        method: Method,
        url: &str,
        headers: &[(&str, &str)],
    ) -> Result<HttpResponse, String> {
        let mut url = url.to_string();
        for _hop in 0..4 {
            let mut builder = Request::builder().method(method.clone()).uri(&url);
            for (name, value) in headers {
                builder = builder.header(*name, *value);
            }
            let request = builder.body(Empty::new()).map_err(|e| format!("{url}: {e}"))?;
            let response = tokio::time::timeout(Duration::from_secs(60), self.client.request(request))
                .await
                .map_err(|_| format!("{method} {url}: timed out"))?
                .map_err(|e| format!("{method} {url}: {e}"))?;
            let status = response.status();
            let headers = response.headers().clone();
            if status.is_redirection() {
                let location = headers
                    .get(hyper::header::LOCATION)
                    .and_then(|v| v.to_str().ok())
                    .ok_or_else(|| format!("{method} {url}: {status} without Location"))?;
                url = resolve_loopback_redirect(&url, location)?;
                continue;
            }
            let body = tokio::time::timeout(Duration::from_secs(60), response.into_body().collect())
                .await
                .map_err(|_| format!("{method} {url}: body timed out"))?
                .map_err(|e| format!("{method} {url}: body: {e}"))?
                .to_bytes();
            return Ok(HttpResponse {
                status,
                headers,
                body,
            });
        }
        Err(format!("{method} {url}: too many redirects"))
    }

    /// `GET url`.
    pub async fn get(&self, url: &str, accept: Option<&str>) -> Result<HttpResponse, String> {
        self.request(Method::GET, url, accept).await
    }
}

/// The token URL for a `Bearer realm="..",service="..",scope=".."`
/// challenge, if the realm is on loopback.
pub fn bearer_token_url(challenge: &str) -> Option<String> {
    let (scheme, params) = challenge.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let mut realm = None;
    let mut query = form_urlencoded::Serializer::new(String::new());
    let mut rest = params.trim();
    while !rest.is_empty() {
        let (key, after) = rest.split_once('=')?;
        let after = after.trim_start();
        let (value, remaining) = if let Some(quoted) = after.strip_prefix('"') {
            let end = quoted.find('"')?;
            (&quoted[..end], &quoted[end + 1..])
        } else {
            let end = after.find(',').unwrap_or(after.len());
            (&after[..end], &after[end..])
        };
        match key.trim() {
            "realm" => realm = Some(value.to_string()),
            "service" | "scope" => {
                query.append_pair(key.trim(), value);
            }
            _ => {}
        }
        rest = remaining.trim_start().trim_start_matches(',').trim_start();
    }
    let realm = realm?;
    if !(realm.starts_with("http://127.0.0.1:") || realm.starts_with("http://localhost:")) {
        return None;
    }
    let separator = if realm.contains('?') { '&' } else { '?' };
    Some(format!("{realm}{separator}{}", query.finish()))
}

/// Resolves a redirect target, refusing anything that leaves 127.0.0.1.
fn resolve_loopback_redirect(from: &str, location: &str) -> Result<String, String> {
    if location.starts_with('/') {
        let origin_end = from
            .find("://")
            .and_then(|i| from[i + 3..].find('/').map(|j| i + 3 + j))
            .unwrap_or(from.len());
        return Ok(format!("{}{location}", &from[..origin_end]));
    }
    if location.starts_with("http://127.0.0.1:") || location.starts_with("http://localhost:") {
        return Ok(location.to_string());
    }
    Err(format!("refusing redirect off loopback: {location}"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn bearer_challenge_to_token_url() {
        let url = super::bearer_token_url(
            r#"Bearer realm="http://127.0.0.1:1/token",service="registry.docker.io",scope="repository:library/a:pull""#,
        );
        assert_eq!(
            url.as_deref(),
            Some("http://127.0.0.1:1/token?service=registry.docker.io&scope=repository%3Alibrary%2Fa%3Apull")
        );
        assert_eq!(
            super::bearer_token_url(r#"Bearer realm="https://auth.docker.io/token""#),
            None
        );
        assert_eq!(super::bearer_token_url("Basic realm=x"), None);
    }
}
