//! Who sent a request: HTTP Basic credentials (an htpasswd user or a robot token) or a bearer
//! token regcache issued (`/token`, `token.rs`), checked by `auth` on every request that carries
//! them, else the connection's client certificate name, else nobody. Credentials that do not
//! check out are refused with 401 and a challenge, never downgraded to anonymous; passwords and
//! tokens are `Secret`s from the moment they are decoded. `challenge` writes the 401's
//! `WWW-Authenticate`: the token flow's challenge alone (Basic credentials are still accepted).

use std::net::IpAddr;

use base64::Engine;
use http::header::{AUTHORIZATION, HOST, WWW_AUTHENTICATE};
use http::{HeaderMap, HeaderValue, Request};

use super::response::ServeError;
use super::route::{self, Parsed};
use super::State;
use crate::auth::LoginError;
use crate::registry::Client;
use crate::secret::Secret;

/// The client's address (failed logins count against it) and whether the connection is TLS
/// (the token realm's scheme); set per connection by the listener.
#[derive(Debug, Clone, Copy)]
pub(super) struct Peer {
    pub(super) ip: IpAddr,
    pub(super) tls: bool,
}

/// The path of the token endpoint.
pub(super) const TOKEN_PATH: &str = "/token";

enum Credentials {
    Basic(String, Secret),
    Bearer(Secret),
}

/// The request's client; `Err` for credentials that do not check out.
pub(super) async fn identify<B>(state: &State, req: &Request<B>) -> Result<Client, ServeError> {
    let connection = req
        .extensions()
        .get::<Client>()
        .cloned()
        .unwrap_or_else(Client::anonymous);
    let Some(value) = req.headers().get(AUTHORIZATION) else {
        return Ok(connection);
    };
    let refused = |e: LoginError| match e {
        LoginError::Invalid => ServeError::Unauthorized(e.to_string()),
        LoginError::TooManyAttempts => ServeError::TooManyLogins,
    };
    let identity = match credentials(value) {
        Some(Credentials::Basic(user, password)) => {
            let peer = req.extensions().get::<Peer>().map(|p| p.ip);
            Some(state.auth.login(&user, &password, peer).await.map_err(refused)?)
        }
        Some(Credentials::Bearer(token)) => state.auth.bearer(&token).map_err(refused)?,
        None => {
            return Err(ServeError::Unauthorized(
                "credentials must be HTTP Basic or a bearer token from /token".into(),
            ))
        }
    };
    Ok(Client {
        identity: identity.or(connection.identity),
    })
}

fn credentials(value: &HeaderValue) -> Option<Credentials> {
    let (scheme, rest) = value.to_str().ok()?.split_once(' ')?;
    if scheme.eq_ignore_ascii_case("bearer") {
        return Some(Credentials::Bearer(Secret::new(rest.trim())));
    }
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(rest.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    Some(Credentials::Basic(user.to_string(), Secret::new(password)))
}

/// A 401's challenge: `Bearer realm="<scheme>://<host>/token",service="regcache",scope=...`
/// (the scope names the repository asked for), replacing `Basic realm="regcache"`. Without a
/// usable host (or for `/token` itself) Basic stays.
pub(super) fn challenge<B>(req: &Request<B>, headers: &mut HeaderMap) {
    let host = req
        .uri()
        .authority()
        .map(|a| a.as_str())
        .or_else(|| req.headers().get(HOST).and_then(|h| h.to_str().ok()));
    let host = host.filter(|h| !h.is_empty() && !h.contains(['"', '\\', '/', ' ']));
    let (Some(host), false) = (host, req.uri().path() == TOKEN_PATH) else {
        return;
    };
    let scheme = match req.extensions().get::<Peer>().is_some_and(|p| p.tls) {
        true => "https",
        false => "http",
    };
    let scope = match route::parse(req.uri().path(), req.uri().query()) {
        Ok(Parsed::Repo(r)) => format!(",scope=\"repository:{}:pull\"", r.client_name),
        _ => String::new(),
    };
    let bearer = format!("Bearer realm=\"{scheme}://{host}{TOKEN_PATH}\",service=\"regcache\"{scope}");
    // Bearer replaces Basic rather than joining it: Docker Engine's client runs the handler of
    // every challenge it knows, and its Basic handler fails a request that has no credentials
    // ("no basic auth credentials"), so an anonymous dockerd could not pull at all (a mirror
    // falls back to Docker Hub). Basic credentials are still accepted on every request.
    if let Ok(bearer) = HeaderValue::from_str(&bearer) {
        headers.insert(WWW_AUTHENTICATE, bearer);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_and_bearer_credentials() {
        let v = |s: &str| HeaderValue::from_str(s).unwrap();
        let Some(Credentials::Basic(u, p)) = credentials(&v("Basic YWxpY2U6cDpx")) else {
            panic!("basic")
        };
        assert_eq!((u.as_str(), p.expose()), ("alice", "p:q"));
        assert!(matches!(credentials(&v("Bearer abc")), Some(Credentials::Bearer(t)) if t.expose() == "abc"));
        assert!(credentials(&v("Digest abc")).is_none());
        assert!(credentials(&v("Basic !!!")).is_none());
        assert!(credentials(&v("basic YWxpY2U=")).is_none(), "no colon");
    }

    #[test]
    fn challenges_name_the_token_realm_and_scope() {
        let req = Request::builder()
            .uri("/v2/ghcr.io/org/app/manifests/1")
            .header(HOST, "mirror.example:5000")
            .body(())
            .unwrap();
        let mut h = HeaderMap::new();
        challenge(&req, &mut h);
        let all: Vec<&str> = h
            .get_all(WWW_AUTHENTICATE)
            .iter()
            .map(|v| v.to_str().unwrap())
            .collect();
        assert_eq!(
            all,
            ["Bearer realm=\"http://mirror.example:5000/token\",service=\"regcache\",scope=\"repository:ghcr.io/org/app:pull\""]
        );
    }

    #[test]
    fn a_scope_keeps_a_host_with_a_port() {
        let req = Request::builder()
            .uri("/v2/registry.internal:5000/team/app/manifests/1")
            .header(HOST, "mirror.example")
            .body(())
            .unwrap();
        let mut h = HeaderMap::new();
        challenge(&req, &mut h);
        let bearer = h.get(WWW_AUTHENTICATE).unwrap().to_str().unwrap();
        assert!(
            bearer.ends_with("scope=\"repository:registry.internal:5000/team/app:pull\""),
            "{bearer}"
        );
    }
}
