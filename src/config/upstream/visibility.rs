//! Whether an upstream is private: its content is never served to anonymous clients. Explicit
//! `private = true|false` decides; otherwise an upstream regcache holds credentials for (its
//! own or a fallback's) is private unless `public = true` says its content is public anyway
//! (credentials only for higher rate limits, say).

use super::super::file::FileUpstream;
use super::{CredentialSource, UpstreamConfig};

pub(super) fn private(
    errors: &mut Vec<String>,
    at: &str,
    u: &FileUpstream,
    credentials: &CredentialSource,
    fallbacks: &[UpstreamConfig],
) -> bool {
    let anonymous = |c: &CredentialSource| matches!(c, CredentialSource::Anonymous);
    let credentialed = !anonymous(credentials) || fallbacks.iter().any(|f| !anonymous(&f.credentials));
    match (u.private, u.public) {
        (Some(true), Some(true)) => {
            errors.push(format!("{at}: private = true and public = true contradict"));
            true
        }
        (Some(private), _) => private,
        (None, public) => credentialed && public != Some(true),
    }
}

#[cfg(test)]
mod tests {
    use super::super::super::Config;

    fn private(extra: &str) -> Result<bool, String> {
        let text = format!("builtin_upstreams = false\n[[upstreams]]\nhost = \"reg.example\"\n{extra}");
        Config::from_toml_str(&text)
            .map(|c| c.upstreams[0].private)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn credentials_make_private_unless_public() {
        assert_eq!(private(""), Ok(false));
        assert_eq!(private("private = true\n"), Ok(true));
        let creds = "username = \"u\"\npassword = \"p\"\n";
        assert_eq!(private(creds), Ok(true));
        assert_eq!(private(&format!("{creds}public = true\n")), Ok(false));
        assert_eq!(private(&format!("{creds}private = false\n")), Ok(false));
        assert!(private("private = true\npublic = true\n")
            .unwrap_err()
            .contains("contradict"));
    }
}
