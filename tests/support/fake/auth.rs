//! The fake upstream's authentication. Bearer challenges in the styles real registries use
//! (Docker Hub's; quay's Basic and Bearer in one header; ghcr's placeholder scope), a token
//! service that records every request, checks Basic credentials (anonymous callers get a token
//! without access, as Docker Hub's does), exchanges refresh tokens sent by OAuth2 POST, reports
//! `expires_in` and can be slowed down to make concurrent callers overlap; and Basic auth on
//! every request, as ECR does it. Tokens are only good for the repository they were asked for.

use std::sync::Mutex;
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use http::{Request, Response};
use http_body_util::BodyExt as _;
use hyper::body::Incoming;

#[derive(Clone, Debug, PartialEq)]
pub enum Auth {
    None,
    /// 401 + Bearer challenge; tokens from `/token`, valid until `expire_tokens`.
    Bearer {
        expires_in: Option<u64>,
    },
    Basic {
        user: String,
        pass: String,
    },
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ChallengeStyle {
    /// `Bearer realm=…,service=…,scope="repository:<name>:pull"`.
    Docker,
    /// `Basic realm="fake", Bearer realm=…` in one header.
    Quay,
    /// Every challenge names the placeholder scope `repository:user/image:pull`.
    Ghcr,
}

#[derive(Clone, Debug)]
pub struct TokenRequest {
    pub method: String,
    pub query: String,
    pub authorization: Option<String>,
    /// The form body of a POST.
    pub body: String,
}

impl TokenRequest {
    /// A query or form parameter.
    pub fn param(&self, name: &str) -> Option<String> {
        form_urlencoded::parse(self.query.as_bytes())
            .chain(form_urlencoded::parse(self.body.as_bytes()))
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
    }
}

struct Issued {
    token: String,
    /// `None` when the caller may not pull anything (credentials missing or wrong); else the
    /// scope asked for, empty for a token without one (enough for `/v2/`, as on Docker Hub).
    scope: Option<String>,
}

pub struct AuthState {
    pub auth: Mutex<Auth>,
    pub style: Mutex<ChallengeStyle>,
    issued: Mutex<Vec<Issued>>,
    pub requests: Mutex<Vec<TokenRequest>>,
    /// Basic credentials the token service wants; without them tokens carry no access.
    pub token_user: Mutex<Option<(String, String)>>,
    /// A refresh token the token service accepts by POST.
    pub refresh_token: Mutex<Option<String>>,
    pub delay: Mutex<Duration>,
}

impl Default for AuthState {
    fn default() -> Self {
        AuthState {
            auth: Mutex::new(Auth::None),
            style: Mutex::new(ChallengeStyle::Docker),
            issued: Mutex::new(Vec::new()),
            requests: Mutex::new(Vec::new()),
            token_user: Mutex::new(None),
            refresh_token: Mutex::new(None),
            delay: Mutex::new(Duration::ZERO),
        }
    }
}

pub fn basic(user: &str, pass: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"))
    )
}

fn json(status: u16, body: String) -> Response<Bytes> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Bytes::from(body))
        .unwrap()
}

impl AuthState {
    pub fn expire_tokens(&self) {
        self.issued.lock().unwrap().clear();
    }

    /// Answers `/token`.
    pub async fn token(&self, req: Request<Incoming>) -> Response<Bytes> {
        let method = req.method().to_string();
        let query = req.uri().query().unwrap_or_default().to_string();
        let authorization = req
            .headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let body = req
            .into_body()
            .collect()
            .await
            .map(|c| c.to_bytes())
            .unwrap_or_default();
        let record = TokenRequest {
            method,
            query,
            authorization,
            body: String::from_utf8_lossy(&body).into_owned(),
        };
        self.requests.lock().unwrap().push(record.clone());
        let delay = *self.delay.lock().unwrap();
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        let wanted = self.token_user.lock().unwrap().clone();
        let refresh = self.refresh_token.lock().unwrap().clone();
        let allowed = if record.method == "POST" {
            let ok = record.param("grant_type").as_deref() == Some("refresh_token")
                && refresh.is_some()
                && record.param("refresh_token") == refresh;
            if !ok {
                return json(401, r#"{"error":"invalid_grant"}"#.into());
            }
            true
        } else {
            match (&record.authorization, &wanted) {
                (None, None) => true,
                (None, Some(_)) => false,
                (Some(a), Some((u, p))) if *a == basic(u, p) => true,
                (Some(_), _) => return json(401, r#"{"details":"incorrect username or password"}"#.into()),
            }
        };
        let scope = allowed.then(|| record.param("scope").unwrap_or_default());
        let mut issued = self.issued.lock().unwrap();
        let token = format!("tok-{}", issued.len() + 1000);
        issued.push(Issued {
            token: token.clone(),
            scope,
        });
        let expires = match *self.auth.lock().unwrap() {
            Auth::Bearer { expires_in: Some(e) } => format!(r#","expires_in":{e}"#),
            _ => String::new(),
        };
        let field = if record.method == "POST" {
            "access_token"
        } else {
            "token"
        };
        json(200, format!(r#"{{"{field}":"{token}"{expires}}}"#))
    }

    /// `None` when `authorization` may access `name` (empty for `/v2/`), else the 401 to send.
    pub fn check(&self, realm: &str, authorization: Option<&str>, name: &str) -> Option<(String, String)> {
        let auth = self.auth.lock().unwrap().clone();
        match auth {
            Auth::None => None,
            Auth::Basic { user, pass } => (authorization != Some(basic(&user, &pass).as_str())).then(|| {
                (
                    r#"Basic realm="https://fake.example/",service="ecr.amazonaws.com""#.to_string(),
                    "Not Authorized\n".to_string(),
                )
            }),
            Auth::Bearer { .. } => {
                let want = format!("repository:{name}:pull");
                let ok = authorization
                    .and_then(|a| a.strip_prefix("Bearer "))
                    .is_some_and(|t| {
                        self.issued.lock().unwrap().iter().any(|i| {
                            i.token == t && i.scope.as_ref().is_some_and(|s| name.is_empty() || *s == want)
                        })
                    });
                if ok {
                    return None;
                }
                let style = *self.style.lock().unwrap();
                let scope = match style {
                    ChallengeStyle::Ghcr => "repository:user/image:pull".to_string(),
                    _ => want,
                };
                let bearer = if name.is_empty() && style != ChallengeStyle::Ghcr {
                    format!(r#"Bearer realm="{realm}",service="fake""#)
                } else {
                    format!(r#"Bearer realm="{realm}",service="fake",scope="{scope}""#)
                };
                let header = match style {
                    ChallengeStyle::Quay => format!(r#"Basic realm="fake", {bearer}"#),
                    _ => bearer,
                };
                Some((header, r#"{"errors":[{"code":"UNAUTHORIZED"}]}"#.to_string()))
            }
        }
    }
}
