//! A small Docker-Hub-like bearer token server for the end-to-end tests: it owns
//! the signing key, the self-signed certificate that the local registry trusts
//! (`auth.token.rootcertbundle`), the fixed user table and the `GET /token`
//! endpoint that issues ES256 JWTs in the form CNCF distribution 2.8 accepts.
//!
//! Users: `admin:admin-secret` may pull and push everywhere, `reader:reader-secret`
//! may pull everywhere, anonymous callers may pull `library/*` only and get an
//! empty grant elsewhere. A wrong password (or unknown user) answers 401.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

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
use sha2::{Digest as _, Sha256};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// The `service` (JWT audience) the local registry is configured with.
pub const SERVICE: &str = "registry.docker.io";
/// The `iss` claim of every token and the registry's trusted issuer.
pub const ISSUER: &str = "regcache-e2e-token-issuer";

/// Known users: (name, password, may push).
const USERS: &[(&str, &str, bool)] = &[
    ("admin", "admin-secret", true),
    ("reader", "reader-secret", false),
];

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

fn handle(state: &State, req: Request<Incoming>) -> Response<Full<Bytes>> {
    if req.uri().path() != "/token" {
        return json_response(StatusCode::NOT_FOUND, json!({"details": "not found"}));
    }
    if req.method() != Method::GET {
        return json_response(StatusCode::METHOD_NOT_ALLOWED, json!({"details": "GET only"}));
    }

    let mut service = None;
    let mut account = None;
    let mut scopes = Vec::new();
    for (k, v) in form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes()) {
        match k.as_ref() {
            "service" => service = Some(v.into_owned()),
            "account" => account = Some(v.into_owned()),
            "scope" => scopes.extend(v.split(' ').filter(|s| !s.is_empty()).map(str::to_string)),
            _ => {}
        }
    }

    let user = match basic_user(&req) {
        Credentials::None => None,
        Credentials::Valid(name, may_push) => Some((name, may_push)),
        Credentials::Invalid(name) => {
            state.rejected.fetch_add(1, Ordering::SeqCst);
            record(state, Some(name), service, account, scopes, 401);
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

    let access: Vec<serde_json::Value> = scopes
        .iter()
        .filter_map(|scope| grant(scope, user.as_ref().map(|(_, push)| *push)))
        .collect();

    let now = unix_now();
    let expires_in = state.expires_in.load(Ordering::SeqCst);
    let serial = state.serial.fetch_add(1, Ordering::SeqCst);
    let subject = user.as_ref().map(|(n, _)| n.clone()).unwrap_or_default();
    let claims = json!({
        "iss": ISSUER,
        "sub": subject,
        "aud": service.clone().unwrap_or_default(),
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
    let signature = match state.key.sign(&state.rng, signing_input.as_bytes()) {
        Ok(sig) => sig,
        Err(_) => {
            return json_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                json!({"details": "signing failed"}),
            )
        }
    };
    let token = format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(signature.as_ref()));

    record(state, user.map(|(n, _)| n), service, account, scopes, 200);
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

fn record(
    state: &State,
    user: Option<String>,
    service: Option<String>,
    account: Option<String>,
    scopes: Vec<String>,
    status: u16,
) {
    state.log.lock().expect("token log").push(TokenRequestRecord {
        user,
        service,
        account,
        scopes,
        status,
    });
}

enum Credentials {
    None,
    Valid(String, bool),
    Invalid(String),
}

fn basic_user(req: &Request<Incoming>) -> Credentials {
    let Some(value) = req.headers().get(hyper::header::AUTHORIZATION) else {
        return Credentials::None;
    };
    let value = value.to_str().unwrap_or("");
    let Some((scheme, encoded)) = value.split_once(' ') else {
        return Credentials::Invalid(String::new());
    };
    if !scheme.eq_ignore_ascii_case("basic") {
        return Credentials::Invalid(String::new());
    }
    let Some(decoded) = STANDARD
        .decode(encoded.trim())
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
    else {
        return Credentials::Invalid(String::new());
    };
    let (name, password) = decoded.split_once(':').unwrap_or((decoded.as_str(), ""));
    match USERS.iter().find(|(n, p, _)| *n == name && *p == password) {
        Some((n, _, push)) => Credentials::Valid(n.to_string(), *push),
        None => Credentials::Invalid(name.to_string()),
    }
}

/// Grants for one scope. `may_push` is `None` for anonymous callers.
fn grant(scope: &str, may_push: Option<bool>) -> Option<serde_json::Value> {
    let mut parts = scope.split(':');
    let kind = parts.next()?;
    let rest: Vec<&str> = parts.collect();
    if rest.len() < 2 {
        return None;
    }
    let name = rest[..rest.len() - 1].join(":");
    let wanted = rest[rest.len() - 1];
    let kind = kind.split('(').next().unwrap_or(kind);
    if kind != "repository" {
        return None;
    }
    let allowed: Vec<&str> = wanted
        .split(',')
        .filter(|action| match (may_push, *action) {
            (None, "pull") => name.starts_with("library/"),
            (None, _) => false,
            (Some(_), "pull") => true,
            (Some(true), "push" | "delete" | "*") => true,
            (Some(_), _) => false,
        })
        .collect();
    if allowed.is_empty() {
        return None;
    }
    Some(json!({"type": "repository", "name": name, "actions": allowed}))
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// The libtrust key id of a public key: base32 (RFC 4648, no padding) of the
/// first 240 bits of SHA-256 over the DER SubjectPublicKeyInfo, in 12 groups
/// of 4 characters joined by ':'.
pub fn libtrust_key_id(spki_der: &[u8]) -> String {
    let hash = Sha256::digest(spki_der);
    let encoded = base32(&hash[..30]);
    encoded
        .as_bytes()
        .chunks(4)
        .map(|c| std::str::from_utf8(c).expect("ascii"))
        .collect::<Vec<_>>()
        .join(":")
}

fn base32(data: &[u8]) -> String {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut out = String::with_capacity(data.len().div_ceil(5) * 8);
    let mut buffer: u32 = 0;
    let mut bits = 0u32;
    for &byte in data {
        buffer = (buffer << 8) | u32::from(byte);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(ALPHABET[((buffer >> bits) & 31) as usize] as char);
        }
        buffer &= (1 << bits) - 1;
    }
    if bits > 0 {
        out.push(ALPHABET[((buffer << (5 - bits)) & 31) as usize] as char);
    }
    out
}

/// `YYYY-MM-DDTHH:MM:SSZ` for a Unix time (days-to-civil conversion).
fn rfc3339(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base32_matches_rfc4648_vectors() {
        assert_eq!(base32(b""), "");
        assert_eq!(base32(b"f"), "MY");
        assert_eq!(base32(b"foobar"), "MZXW6YTBOI");
    }

    #[test]
    fn rfc3339_known_dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
    }

    #[test]
    fn grants_follow_the_user_table() {
        assert_eq!(
            grant("repository:library/a:pull", None).unwrap()["actions"],
            json!(["pull"])
        );
        assert!(grant("repository:myorg/p:pull", None).is_none());
        assert_eq!(
            grant("repository:myorg/p:pull,push", Some(false)).unwrap()["actions"],
            json!(["pull"])
        );
        assert_eq!(
            grant("repository:myorg/p:pull,push", Some(true)).unwrap()["actions"],
            json!(["pull", "push"])
        );
        assert!(grant("registry:catalog:*", Some(true)).is_none());
    }
}
