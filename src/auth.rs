//! Who a client is and what it may read. `Auth` holds the htpasswd users (bcrypt), robot
//! tokens (SHA-256 digests), groups, the `[[access]]` rules, what anonymous clients may do and
//! which upstreams are private. The server asks it to check credentials (`login`); the registry
//! asks it, through `registry::Access`, before every read (hits included). It knows neither the
//! server nor the registry beyond that trait and `Client`. It also issues and checks the bearer
//! tokens of the token flow (`token.rs`).
//!
//! Decision for a read of `<upstream>/<repo>`: an anonymous client never reads a private
//! upstream; else the first `[[access]]` rule whose pattern matches decides by its `read` list;
//! with no matching rule identified clients read, anonymous ones unless `anonymous = "none"`.

mod limiter;
mod policy;
mod token;
mod verify;

use std::net::IpAddr;
use std::sync::{Arc, RwLock};

use crate::config::AuthConfig;
use crate::registry::{Access, Client, Content, Place};
use crate::secret::Secret;
use limiter::Limiter;
use policy::Policy;
use token::Signer;
pub use token::{Issued, TOKEN_LIFETIME};
use verify::Verifier;

/// Why a login failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LoginError {
    #[error("invalid username or password")]
    Invalid,
    /// Too many failed logins from this address lately.
    #[error("too many failed logins; try again later")]
    TooManyAttempts,
}

pub struct Auth {
    /// Replaced whole on a reload (SIGHUP).
    policy: RwLock<Arc<Policy>>,
    verifier: Verifier,
    limiter: Limiter,
    signer: Signer,
}

impl Auth {
    /// From `[auth]`, `[[access]]` and the client-facing hosts of the private upstreams.
    pub fn new(config: &AuthConfig, private_upstreams: impl IntoIterator<Item = String>) -> Auth {
        Auth {
            policy: RwLock::new(Arc::new(Policy::new(config, private_upstreams))),
            verifier: Verifier::new(),
            limiter: Limiter::new(),
            signer: Signer::new(),
        }
    }

    /// Everyone reads everything: no users, tokens, rules or private upstreams.
    pub fn open() -> Auth {
        Auth::new(&AuthConfig::default(), [])
    }

    /// Applies a reloaded configuration: users, tokens, groups, rules, private upstreams. Remembered
    /// password checks are forgotten, so a removed user or changed password takes effect at once.
    pub fn reload(&self, config: &AuthConfig, private_upstreams: impl IntoIterator<Item = String>) {
        let policy = Arc::new(Policy::new(config, private_upstreams));
        *self.policy.write().unwrap_or_else(|e| e.into_inner()) = policy;
        self.verifier.forget();
    }

    fn policy(&self) -> Arc<Policy> {
        self.policy.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Whether an anonymous `GET /v2/` is answered with a challenge, so `docker login` sends
    /// the credentials it checks: some content needs them, or there is someone to log in as.
    pub fn wants_login(&self) -> bool {
        self.policy().wants_login()
    }

    /// Checks a user's password or a robot token; `Ok` is the client's identity. Failed logins
    /// count against `peer`; too many in a while refuse every login from it for a while.
    pub async fn login(
        &self,
        user: &str,
        password: &Secret,
        peer: Option<IpAddr>,
    ) -> Result<String, LoginError> {
        if peer.is_some_and(|p| self.limiter.is_blocked(p)) {
            return Err(LoginError::TooManyAttempts);
        }
        if self.verifier.check(&self.policy(), user, password).await {
            return Ok(user.to_string());
        }
        if let Some(p) = peer {
            self.limiter.failed(p);
        }
        tracing::info!(user, peer = ?peer, "failed login");
        Err(LoginError::Invalid)
    }

    /// A bearer token naming `identity` (`None`: an anonymous client), for `/token`.
    pub fn issue_token(&self, identity: Option<&str>) -> Issued {
        self.signer.issue(identity)
    }

    /// The identity a bearer token this process issued names (`Ok(None)`: anonymous); `Err` for
    /// a forged, foreign or expired token (clients then fetch a new one).
    pub fn bearer(&self, token: &Secret) -> Result<Option<String>, LoginError> {
        self.signer.verify(token.expose()).ok_or(LoginError::Invalid)
    }

    /// How many passwords went through bcrypt (cached successes do not).
    pub fn password_checks(&self) -> u64 {
        self.verifier.bcrypt_runs()
    }
}

impl Access for Auth {
    fn may_read(&self, client: &Client, place: &Place<'_>, _: Content<'_>) -> Result<(), String> {
        self.policy()
            .may_read(client.identity.as_deref(), place.upstream, place.repo.as_str())
    }

    fn may_write(&self, client: &Client, place: &Place<'_>) -> Result<(), String> {
        self.policy()
            .may_write(client.identity.as_deref(), place.upstream, place.repo.as_str())
    }
}

#[cfg(test)]
mod tests;
