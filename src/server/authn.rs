//! Who sent a request: HTTP Basic credentials (an htpasswd user or a robot token), checked by
//! `auth` on every request that carries them, else the connection's client certificate name,
//! else nobody. Credentials that do not check out are refused with 401 and a challenge, never
//! downgraded to anonymous; the password is a `Secret` from the moment it is decoded.

use std::net::IpAddr;

use base64::Engine;
use http::header::AUTHORIZATION;
use http::{HeaderValue, Request};

use super::response::ServeError;
use super::State;
use crate::auth::LoginError;
use crate::registry::Client;
use crate::secret::Secret;

/// The client's address, set per connection by the listener: failed logins count against it.
#[derive(Debug, Clone, Copy)]
pub(super) struct Peer(pub(super) IpAddr);

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
    let Some((user, password)) = basic(value) else {
        return Err(ServeError::Unauthorized(
            "credentials must be HTTP Basic (user:password or robot:token)".into(),
        ));
    };
    let peer = req.extensions().get::<Peer>().map(|p| p.0);
    match state.auth.login(&user, &password, peer).await {
        Ok(identity) => Ok(Client {
            identity: Some(identity),
        }),
        Err(e @ LoginError::Invalid) => Err(ServeError::Unauthorized(e.to_string())),
        Err(LoginError::TooManyAttempts) => Err(ServeError::TooManyLogins),
    }
}

fn basic(value: &HeaderValue) -> Option<(String, Secret)> {
    let (scheme, rest) = value.to_str().ok()?.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(rest.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_string(), Secret::new(password)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_credentials() {
        let v = |s: &str| HeaderValue::from_str(s).unwrap();
        let (u, p) = basic(&v("Basic YWxpY2U6cDpx")).unwrap();
        assert_eq!((u.as_str(), p.expose()), ("alice", "p:q"));
        assert!(basic(&v("Bearer abc")).is_none());
        assert!(basic(&v("Basic !!!")).is_none());
        assert!(basic(&v("basic YWxpY2U=")).is_none(), "no colon");
    }
}
