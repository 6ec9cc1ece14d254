//! Who may change state through the admin listener. Reading (`/metrics`, health, cache stats) is
//! open; a state-changing request (`POST /admin/gc`, `POST /admin/purge`; later pin, import)
//! must carry `Authorization: Bearer <token>` with the token of `[admin] token_file`. Without a
//! configured
//! token such requests are served only when the admin listener is bound to a loopback address,
//! where only this machine can reach it. Tokens are compared by their SHA-256 digests in constant
//! time, so neither the token's bytes nor its length leak through timing, and never logged.
//! The cache listing (`GET /admin/cache/ls`) and the status page (`GET /`) read, but name every
//! repository and tag pulled, so they pass the same check.

use std::net::SocketAddr;

use http::{HeaderMap, StatusCode};
use sha2::{Digest, Sha256};

use crate::secret::Secret;

/// The rule for state-changing admin requests, fixed at start.
#[derive(Debug)]
pub enum AdminGuard {
    /// Requests must carry this bearer token.
    Token(Secret),
    /// No token configured, and the listener is on loopback: requests are served.
    Loopback,
    /// No token configured and the listener is reachable from other machines: refused.
    Closed,
}

/// A refused request: its status and a body that says what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denied {
    pub status: StatusCode,
    pub message: &'static str,
}

impl AdminGuard {
    /// The rule for an admin listener bound to `listen`, with the configured token if any.
    pub fn new(token: Option<Secret>, listen: SocketAddr) -> AdminGuard {
        match token {
            Some(token) => AdminGuard::Token(token),
            None if listen.ip().is_loopback() => AdminGuard::Loopback,
            None => AdminGuard::Closed,
        }
    }

    /// Whether a state-changing request with these headers may proceed.
    pub fn check(&self, headers: &HeaderMap) -> Result<(), Denied> {
        let expected = match self {
            AdminGuard::Loopback => return Ok(()),
            AdminGuard::Closed => {
                return Err(Denied {
                    status: StatusCode::FORBIDDEN,
                    message: "state-changing admin requests are off: the admin listener is not on \
                              loopback and [admin] token_file is not set\n",
                })
            }
            AdminGuard::Token(token) => token,
        };
        let given = headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim);
        match given {
            Some(given) if same(given, expected.expose()) => Ok(()),
            Some(_) => Err(Denied {
                status: StatusCode::UNAUTHORIZED,
                message: "the bearer token does not match [admin] token_file\n",
            }),
            None => Err(Denied {
                status: StatusCode::UNAUTHORIZED,
                message: "this admin request needs Authorization: Bearer <the token in [admin] token_file>\n",
            }),
        }
    }
}

/// Equality in time that depends on neither the contents nor the lengths.
fn same(a: &str, b: &str) -> bool {
    let (a, b) = (Sha256::digest(a.as_bytes()), Sha256::digest(b.as_bytes()));
    a.iter().zip(b.iter()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bearer(token: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            http::header::AUTHORIZATION,
            format!("Bearer {token}").parse().unwrap(),
        );
        h
    }

    #[test]
    fn the_rule_follows_the_token_and_the_listener() {
        let loopback: SocketAddr = "127.0.0.1:5001".parse().unwrap();
        let public: SocketAddr = "0.0.0.0:5001".parse().unwrap();
        assert!(AdminGuard::new(None, loopback).check(&HeaderMap::new()).is_ok());
        let closed = AdminGuard::new(None, public).check(&bearer("x")).unwrap_err();
        assert_eq!(closed.status, StatusCode::FORBIDDEN);
        let guard = AdminGuard::new(Some(Secret::new("right")), loopback);
        assert!(guard.check(&bearer("right")).is_ok());
        assert_eq!(
            guard.check(&bearer("wrong")).unwrap_err().status,
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            guard.check(&bearer("righ")).unwrap_err().status,
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            guard.check(&HeaderMap::new()).unwrap_err().status,
            StatusCode::UNAUTHORIZED
        );
        assert!(!format!("{guard:?}").contains("right"));
    }
}
