//! Warnings about what a registry listener reachable from other machines serves, and to whom:
//! private upstreams nobody can log in to read, credentialed upstreams made public without any
//! access rule, and passwords over plain HTTP. `check-config` prints them; `serve` logs them.

use super::{Config, CredentialSource};

/// What a registry listener reachable from other machines serves to whom.
pub(super) fn warnings(config: &Config) -> Vec<String> {
    if config.listen.ip().is_loopback() {
        return Vec::new();
    }
    let no_logins = config.auth.users.is_empty() && config.auth.tokens.is_empty() && config.tls.is_none();
    let mut out = Vec::new();
    for u in &config.upstreams {
        let credentialed = !matches!(u.credentials, CredentialSource::Anonymous);
        if u.private && no_logins {
            out.push(format!(
                "upstream {} is private and no users, tokens or client certificates are \
                 configured: no client on {} can read it",
                u.host, config.listen
            ));
        } else if credentialed && !u.private && config.auth.rules.is_empty() {
            out.push(format!(
                "upstream {} has credentials and is marked public: whatever they can read is \
                 served to anyone who reaches {}",
                u.host, config.listen
            ));
        }
    }
    if config.tls.is_none() && !(config.auth.users.is_empty() && config.auth.tokens.is_empty()) {
        out.push(format!(
            "{} serves plain HTTP: passwords and tokens cross the network readable; configure [tls]",
            config.listen
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    fn warnings(toml: &str) -> Vec<String> {
        Config::from_toml_str(toml).unwrap().warnings()
    }

    const CREDENTIALED: &str = "builtin_upstreams = false\n[[upstreams]]\nhost = \"reg.example\"\n\
        url = \"https://reg.example\"\nusername = \"u\"\npassword = \"p\"\n";

    #[test]
    fn a_listener_on_the_network_is_told_what_it_exposes() {
        let open = format!("listen = \"0.0.0.0:5000\"\n{CREDENTIALED}");
        let w = warnings(&open);
        assert!(w.iter().any(|l| l.contains("reg.example is private")), "{w:?}");
        let public = format!("{open}public = true\n");
        let w = warnings(&public);
        assert!(w.iter().any(|l| l.contains("served to anyone")), "{w:?}");
        let loopback = format!("listen = \"127.0.0.1:5000\"\n{CREDENTIALED}");
        assert!(warnings(&loopback).is_empty());
    }
}
