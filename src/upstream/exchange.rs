//! One exchange with an upstream: following redirects (at most `MAX_REDIRECTS`, only where
//! `redirect::decide` allows, other hosts through the client that checks their addresses),
//! answering each host's 401 challenge once with the authorization meant for that host, and
//! turning the final status into an `UpstreamError`. A refused redirect is a `Protocol` error
//! naming the target's origin (never its path or query), logged at warn and counted.

use http::header::{HeaderMap, AUTHORIZATION, LOCATION, RETRY_AFTER, WWW_AUTHENTICATE};
use http::{Method, Request, Response, StatusCode, Uri};
use http_body_util::Full;
use hyper::body::Incoming;

use super::client::HttpClient;
use super::redirect::{self, Hop};
use super::{challenge, ratelimit, resolve, Upstream, UpstreamError, USER_AGENT};
use crate::metrics::StatusClass;

const MAX_REDIRECTS: usize = 5;

impl Upstream {
    pub(super) fn classify(&self, resp: Response<Incoming>) -> Result<Response<Incoming>, UpstreamError> {
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
            .and_then(ratelimit::parse_retry_after);
        Err(UpstreamError::Status {
            upstream,
            status,
            retry_after,
        })
    }

    /// Follows redirects, answering each host's 401 challenge once.
    pub(super) async fn send(
        &self,
        method: &Method,
        url: &str,
        headers: &HeaderMap,
        scope: &str,
    ) -> Result<Response<Incoming>, UpstreamError> {
        let mut uri: Uri = url.parse().map_err(|_| self.protocol(format!("bad URL {url}")))?;
        let mut redirects = 0;
        let mut challenged = false;
        let mut hop = Hop::SameOrigin;
        loop {
            let host = uri
                .authority()
                .map(|a| a.as_str().to_ascii_lowercase())
                .unwrap_or_default();
            let hop_scope = if host.eq_ignore_ascii_case(self.config.authority.as_str()) {
                Some(scope.to_string())
            } else {
                redirect::scope_of(uri.path())
            };
            // A token for a host we were redirected to is fetched under the same address rule
            // as the redirect itself: its realm may name any address.
            let sent = self
                .auth
                .header_for(self.client_for(hop), &host, hop_scope.as_deref())
                .await?;
            let resp = self
                .send_once(hop, method, &uri, headers, sent.as_ref().map(|s| &s.value))
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
                if self.auth.on_unauthorized(&host, &challenges, sent.as_ref()) {
                    continue;
                }
                return Ok(resp);
            }
            if !status.is_redirection() || status == StatusCode::NOT_MODIFIED {
                return Ok(resp);
            }
            redirects += 1;
            if redirects > MAX_REDIRECTS {
                return Err(self.protocol(format!("more than {MAX_REDIRECTS} redirects")));
            }
            let location = resp
                .headers()
                .get(LOCATION)
                .and_then(|l| l.to_str().ok())
                .ok_or_else(|| self.protocol(format!("{status} without Location")))?;
            let next = redirect::resolve(&uri, location)
                .ok_or_else(|| self.protocol(format!("bad redirect {location:?}")))?;
            hop = redirect::decide(&self.config, &next).map_err(|why| self.refused(&next, &why))?;
            tracing::debug!(upstream = %self.host(), to = %next.host().unwrap_or(""), "following redirect");
            uri = next;
            challenged = false;
        }
    }

    /// A redirect to `target` that is not followed, for `why`.
    fn refused(&self, target: &Uri, why: &dyn std::fmt::Display) -> UpstreamError {
        let to = redirect::origin_of(target);
        tracing::warn!(upstream = %self.host(), to = %to, reason = %why, "redirect refused");
        self.counters.redirects_refused.inc();
        self.protocol(format!("refusing a redirect to {to}: {why}"))
    }

    fn client_for(&self, hop: Hop) -> &HttpClient {
        match hop {
            Hop::SameOrigin => &self.client,
            Hop::Elsewhere => &self.redirect_client,
        }
    }

    async fn send_once(
        &self,
        hop: Hop,
        method: &Method,
        uri: &Uri,
        headers: &HeaderMap,
        auth: Option<&http::HeaderValue>,
    ) -> Result<Response<Incoming>, UpstreamError> {
        let mut req = Request::builder().method(method.clone()).uri(uri.clone());
        if let Some(h) = req.headers_mut() {
            h.extend(headers.iter().map(|(k, v)| (k.clone(), v.clone())));
            h.insert(
                http::header::USER_AGENT,
                http::HeaderValue::from_static(USER_AGENT),
            );
            h.remove(AUTHORIZATION);
            if let Some(a) = auth {
                h.insert(AUTHORIZATION, a.clone());
            }
        }
        let req = req
            .body(Full::default())
            .map_err(|e| self.protocol(e.to_string()))?;
        let client = self.client_for(hop);
        match self.answer_deadline.within(client.request(req)).await.ok_or(()) {
            Err(()) => {
                self.observe(method, StatusClass::Failed, None);
                Err(UpstreamError::Timeout {
                    upstream: self.host().to_string(),
                })
            }
            Ok(Err(e)) => {
                if let Some(refusal) = resolve::refusal(&e) {
                    return Err(self.refused(uri, refusal));
                }
                self.observe(method, StatusClass::Failed, None);
                Err(UpstreamError::Connect {
                    upstream: self.host().to_string(),
                    reason: error_chain(&e),
                })
            }
            Ok(Ok(r)) => {
                self.observe(method, StatusClass::of(r.status()), Some(r.headers()));
                Ok(r)
            }
        }
    }
}

pub(super) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}
