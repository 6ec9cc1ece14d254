//! Bearer tokens regcache issues at `/token` (the Docker token flow containerd and Kubernetes
//! pull secrets use): `v1.<base64url JSON {sub, exp}>.<base64url HMAC-SHA256>`, signed with a
//! random key made at start. A token says only who the client is (`sub`, absent for anonymous)
//! and until when; what it may read is decided on every request by the same rules as for Basic
//! credentials, so a token never outlives a rule change. A restart invalidates every token;
//! clients fetch a new one on the next 401.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ring::hmac;
use ring::rand::SystemRandom;

/// How long an issued token is valid.
pub const TOKEN_LIFETIME: Duration = Duration::from_secs(300);

/// A freshly issued token.
#[derive(Debug, Clone)]
pub struct Issued {
    pub token: crate::secret::Secret,
    pub expires_in: Duration,
    /// When it was issued, RFC 3339 in UTC (`2026-01-02T03:04:05Z`).
    pub issued_at: String,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Claims {
    #[serde(skip_serializing_if = "Option::is_none")]
    sub: Option<String>,
    exp: u64,
}

pub(super) struct Signer {
    key: hmac::Key,
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Signer {
    pub(super) fn new() -> Signer {
        let key = hmac::Key::generate(hmac::HMAC_SHA256, &SystemRandom::new())
            .unwrap_or_else(|_| unreachable!("the system random source works"));
        Signer { key }
    }

    pub(super) fn issue(&self, identity: Option<&str>) -> Issued {
        let issued = now();
        let claims = Claims {
            sub: identity.map(str::to_string),
            exp: issued + TOKEN_LIFETIME.as_secs(),
        };
        let payload = serde_json::to_vec(&claims).unwrap_or_default();
        let body = format!("v1.{}", URL_SAFE_NO_PAD.encode(payload));
        let tag = hmac::sign(&self.key, body.as_bytes());
        Issued {
            token: crate::secret::Secret::new(format!("{body}.{}", URL_SAFE_NO_PAD.encode(tag.as_ref()))),
            expires_in: TOKEN_LIFETIME,
            issued_at: rfc3339(issued),
        }
    }

    /// The identity of a valid, unexpired token (`Some(None)`: an anonymous token).
    pub(super) fn verify(&self, token: &str) -> Option<Option<String>> {
        let (body, tag) = token.rsplit_once('.')?;
        let tag = URL_SAFE_NO_PAD.decode(tag).ok()?;
        hmac::verify(&self.key, body.as_bytes(), &tag).ok()?;
        let payload = URL_SAFE_NO_PAD.decode(body.strip_prefix("v1.")?).ok()?;
        let claims: Claims = serde_json::from_slice(&payload).ok()?;
        (claims.exp > now()).then_some(claims.sub)
    }
}

/// Seconds since the epoch as RFC 3339 UTC (days to a civil date: Howard Hinnant's algorithm).
fn rfc3339(secs: u64) -> String {
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let (h, m, s) = (rem / 3600, rem / 60 % 60, rem % 60);
    format!("{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}Z")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_name_their_client_and_cannot_be_forged() {
        let signer = Signer::new();
        let alice = signer.issue(Some("alice"));
        assert_eq!(signer.verify(alice.token.expose()), Some(Some("alice".into())));
        let anonymous = signer.issue(None);
        assert_eq!(signer.verify(anonymous.token.expose()), Some(None));
        assert_eq!(Signer::new().verify(alice.token.expose()), None, "another key");
        let (body, tag) = alice.token.expose().rsplit_once('.').unwrap();
        let forged = format!(
            "v1.{}.{tag}",
            URL_SAFE_NO_PAD.encode(br#"{"sub":"root","exp":99999999999}"#)
        );
        assert_eq!(signer.verify(&forged), None);
        assert_eq!(signer.verify(body), None);
        let expired = format!("v1.{}", URL_SAFE_NO_PAD.encode(br#"{"sub":"alice","exp":1}"#));
        let tag = hmac::sign(&signer.key, expired.as_bytes());
        let expired = format!("{expired}.{}", URL_SAFE_NO_PAD.encode(tag.as_ref()));
        assert_eq!(signer.verify(&expired), None);
    }

    #[test]
    fn issued_at_is_rfc3339() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_767_323_045), "2026-01-02T03:04:05Z");
    }
}
