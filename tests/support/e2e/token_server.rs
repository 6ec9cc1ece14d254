//! A small Docker-Hub-like bearer token server for the end-to-end tests: it owns
//! the signing key, the self-signed certificate that the local registry trusts
//! (`auth.token.rootcertbundle`), the fixed user table and the `GET /token`
//! endpoint that issues ES256 JWTs in the form CNCF distribution 2.8 accepts.
//!
//! Users: `admin:admin-secret` may pull and push everywhere, `reader:reader-secret`
//! may pull everywhere, anonymous callers may pull `library/*` only and get an
//! empty grant elsewhere. A wrong password (or unknown user) answers 401.

mod encoding;
mod grants;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use rcgen::PublicKeyData as _;
use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use serde_json::json;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use encoding::{libtrust_key_id, rfc3339, unix_now};
use grants::{basic_user, grant, Credentials};

/// The `service` (JWT audience) the local registry is configured with.
pub const SERVICE: &str = "registry.docker.io";
/// The `iss` claim of every token and the registry's trusted issuer.
pub const ISSUER: &str = "regcache-e2e-token-issuer";

/// Settings of a token server.
#[derive(Clone, Debug)]
pub struct TokenServerOptions {
    /// Lifetime advertised in `expires_in` and enforced through `exp`.
    pub expires_in: u64,
    /// Whether the JWT header also carries the certificate in `x5c`.
    pub x5c: bool,
}

impl Default for TokenServerOptions {
    fn default() -> Self {
        Self {
            expires_in: 300,
            x5c: false,
        }
    }
}

/// Request counters, as seen so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TokenCounts {
    /// Token requests without credentials.
    pub anonymous: u64,
    /// Token requests with valid Basic credentials.
    pub authenticated: u64,
    /// Token requests refused with 401 (bad credentials).
    pub rejected: u64,
}

/// One answered token request, for debugging and assertions.
#[derive(Clone, Debug)]
pub struct TokenRequestRecord {
    /// The Basic user, `None` when anonymous.
    pub user: Option<String>,
    /// The `service` query parameter.
    pub service: Option<String>,
    /// The `account` query parameter (Docker clients send the user name).
    pub account: Option<String>,
    /// The raw `scope` values asked for.
    #[allow(dead_code, reason = "shown in failure messages through Debug")]
    pub scopes: Vec<String>,
    /// HTTP status answered.
    pub status: u16,
}

struct State {
    key: EcdsaKeyPair,
    rng: SystemRandom,
    kid: String,
    cert_der: Vec<u8>,
    expires_in: AtomicU64,
    x5c: AtomicBool,
    anonymous: AtomicU64,
    authenticated: AtomicU64,
    rejected: AtomicU64,
    serial: AtomicU64,
    log: Mutex<Vec<TokenRequestRecord>>,
}

/// A running token server; stops accepting when dropped.
pub struct TokenServer {
    addr: SocketAddr,
    cert_path: PathBuf,
    state: Arc<State>,
    task: JoinHandle<()>,
    _dir: tempfile::TempDir,
}

impl TokenServer {
    /// Starts a token server with default options on 127.0.0.1 and a free port.
    pub async fn start() -> std::io::Result<Self> {
        Self::start_with(TokenServerOptions::default()).await
    }

    /// Starts a token server with the given options.
    pub async fn start_with(options: TokenServerOptions) -> std::io::Result<Self> {
        let key_pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(io_err)?;
        let mut params =
            rcgen::CertificateParams::new(vec!["regcache-e2e-token".to_string()]).map_err(io_err)?;
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "regcache e2e token signer");
        let cert = params.self_signed(&key_pair).map_err(io_err)?;
        let rng = SystemRandom::new();
        let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, key_pair.serialized_der(), &rng)
            .map_err(io_err)?;
        let kid = libtrust_key_id(&key_pair.subject_public_key_info());

        let dir = tempfile::Builder::new().prefix("regcache-e2e-token-").tempdir()?;
        let cert_path = dir.path().join("token-root.pem");
        std::fs::write(&cert_path, cert.pem())?;

        let state = Arc::new(State {
            key,
            rng,
            kid,
            cert_der: cert.der().to_vec(),
            expires_in: AtomicU64::new(options.expires_in),
            x5c: AtomicBool::new(options.x5c),
            anonymous: AtomicU64::new(0),
            authenticated: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            serial: AtomicU64::new(0),
            log: Mutex::new(Vec::new()),
        });

        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let accept_state = state.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let state = accept_state.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        let state = state.clone();
                        async move { Ok::<_, Infallible>(handle(&state, req)) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });

        Ok(Self {
            addr,
            cert_path,
            state,
            task,
            _dir: dir,
        })
    }

    /// The listening address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The token endpoint, used as the registry's `realm`.
    pub fn realm(&self) -> String {
        format!("{}/token", self.url())
    }

    /// PEM file holding the signing certificate (the registry's root bundle).
    pub fn cert_path(&self) -> &Path {
        &self.cert_path
    }

    /// Changes the lifetime of tokens issued from now on.
    pub fn set_expires_in(&self, seconds: u64) {
        self.state.expires_in.store(seconds, Ordering::SeqCst);
    }

    /// Whether tokens issued from now on carry the certificate in `x5c`.
    pub fn set_x5c(&self, on: bool) {
        self.state.x5c.store(on, Ordering::SeqCst);
    }

    /// Counters of requests answered so far.
    pub fn counts(&self) -> TokenCounts {
        TokenCounts {
            anonymous: self.state.anonymous.load(Ordering::SeqCst),
            authenticated: self.state.authenticated.load(Ordering::SeqCst),
            rejected: self.state.rejected.load(Ordering::SeqCst),
        }
    }

    /// Every request answered so far, oldest first.
    pub fn requests(&self) -> Vec<TokenRequestRecord> {
        self.state.log.lock().expect("token log").clone()
    }
}

impl Drop for TokenServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn io_err(e: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::other(e.to_string())
}

fn json_response(status: StatusCode, body: serde_json::Value) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body.to_string())));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    resp
}

/// What a token request asked for (its query).
struct Asked {
    service: Option<String>,
    account: Option<String>,
    scopes: Vec<String>,
}

impl Asked {
    fn of(req: &Request<Incoming>) -> Asked {
        let mut asked = Asked {
            service: None,
            account: None,
            scopes: Vec::new(),
        };
        for (k, v) in form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes()) {
            match k.as_ref() {
                "service" => asked.service = Some(v.into_owned()),
                "account" => asked.account = Some(v.into_owned()),
                "scope" => asked
                    .scopes
                    .extend(v.split(' ').filter(|s| !s.is_empty()).map(str::to_string)),
                _ => {}
            }
        }
        asked
    }
}

fn handle(state: &State, req: Request<Incoming>) -> Response<Full<Bytes>> {
    if req.uri().path() != "/token" {
        return json_response(StatusCode::NOT_FOUND, json!({"details": "not found"}));
    }
    if req.method() != Method::GET {
        return json_response(StatusCode::METHOD_NOT_ALLOWED, json!({"details": "GET only"}));
    }
    let asked = Asked::of(&req);
    let user = match basic_user(&req) {
        Credentials::None => None,
        Credentials::Valid(name, may_push) => Some((name, may_push)),
        Credentials::Invalid(name) => {
            state.rejected.fetch_add(1, Ordering::SeqCst);
            record(state, Some(name), asked, 401);
            let mut resp = json_response(
                StatusCode::UNAUTHORIZED,
                json!({"details": "incorrect username or password"}),
            );
            resp.headers_mut().insert(
                hyper::header::WWW_AUTHENTICATE,
                hyper::header::HeaderValue::from_static("Basic realm=\"regcache-e2e\""),
            );
            return resp;
        }
    };
    match &user {
        Some(_) => state.authenticated.fetch_add(1, Ordering::SeqCst),
        None => state.anonymous.fetch_add(1, Ordering::SeqCst),
    };
    let now = unix_now();
    let expires_in = state.expires_in.load(Ordering::SeqCst);
    let Some(token) = sign(state, &asked, user.as_ref(), now, expires_in) else {
        return json_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            json!({"details": "signing failed"}),
        );
    };
    record(state, user.map(|(n, _)| n), asked, 200);
    json_response(
        StatusCode::OK,
        json!({
            "token": token,
            "access_token": token,
            "expires_in": expires_in,
            "issued_at": rfc3339(now),
        }),
    )
}

/// An ES256 JWT granting `user` (name, may push; `None` when anonymous) what it may have of
/// the scopes asked for.
fn sign(
    state: &State,
    asked: &Asked,
    user: Option<&(String, bool)>,
    now: i64,
    expires_in: u64,
) -> Option<String> {
    let access: Vec<serde_json::Value> = asked
        .scopes
        .iter()
        .filter_map(|scope| grant(scope, user.map(|(_, push)| *push)))
        .collect();
    let serial = state.serial.fetch_add(1, Ordering::SeqCst);
    let subject = user.map(|(n, _)| n.clone()).unwrap_or_default();
    let claims = json!({
        "iss": ISSUER,
        "sub": subject,
        "aud": asked.service.clone().unwrap_or_default(),
        // distribution 2.8 allows 60 s of leeway past `exp`; subtract it so the
        // token really stops working after `expires_in`.
        "exp": now + expires_in as i64 - 60,
        "nbf": now - 1,
        "iat": now,
        "jti": format!("regcache-e2e-{now}-{serial}"),
        "access": access,
    });
    let mut header = json!({"typ": "JWT", "alg": "ES256", "kid": state.kid});
    if state.x5c.load(Ordering::SeqCst) {
        header["x5c"] = json!([STANDARD.encode(&state.cert_der)]);
    }
    let signing_input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let signature = state.key.sign(&state.rng, signing_input.as_bytes()).ok()?;
    Some(format!(
        "{signing_input}.{}",
        URL_SAFE_NO_PAD.encode(signature.as_ref())
    ))
}

fn record(state: &State, user: Option<String>, asked: Asked, status: u16) {
    state.log.lock().expect("token log").push(TokenRequestRecord {
        user,
        service: asked.service,
        account: asked.account,
        scopes: asked.scopes,
        status,
    });
}
