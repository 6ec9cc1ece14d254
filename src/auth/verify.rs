//! Checking credentials: robot tokens by their SHA-256 (cheap), htpasswd users by bcrypt (slow
//! on purpose, so off the runtime in `spawn_blocking`). A successful bcrypt check is remembered
//! for `REMEMBER` under (user, SHA-256 of the password), so a pull of fifty layers runs bcrypt
//! once, not fifty times. Only successes are remembered; a changed password misses the cache.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use moka::sync::Cache;
use sha2::{Digest, Sha256};

use super::policy::Policy;
use crate::secret::Secret;

const REMEMBER: Duration = Duration::from_secs(60);

pub(super) struct Verifier {
    verified: Cache<(String, [u8; 32]), ()>,
    bcrypt_runs: AtomicU64,
}

fn sha256(s: &str) -> [u8; 32] {
    Sha256::digest(s.as_bytes()).into()
}

/// Equal without an early exit, so timing does not tell how much of a digest matched.
fn same(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl Verifier {
    pub(super) fn new() -> Verifier {
        Verifier {
            verified: Cache::builder()
                .max_capacity(10_000)
                .time_to_live(REMEMBER)
                .build(),
            bcrypt_runs: AtomicU64::new(0),
        }
    }

    /// Forgets every remembered check (the users changed).
    pub(super) fn forget(&self) {
        self.verified.invalidate_all();
    }

    pub(super) fn bcrypt_runs(&self) -> u64 {
        self.bcrypt_runs.load(Ordering::Relaxed)
    }

    pub(super) async fn check(&self, policy: &Policy, user: &str, password: &Secret) -> bool {
        let digest = sha256(password.expose());
        if let Some(token) = policy.tokens.get(user) {
            return same(token, &digest);
        }
        let Some(hash) = policy.users.get(user) else {
            return false;
        };
        let key = (user.to_string(), digest);
        if self.verified.contains_key(&key) {
            return true;
        }
        self.bcrypt_runs.fetch_add(1, Ordering::Relaxed);
        let (hash, password) = (hash.clone(), password.clone());
        let ok = tokio::task::spawn_blocking(move || {
            bcrypt::verify(password.expose(), hash.expose()).unwrap_or(false)
        })
        .await
        .unwrap_or(false);
        if ok {
            self.verified.insert(key, ());
        }
        ok
    }
}
