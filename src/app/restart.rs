//! What a reloaded configuration changes that only a restart applies, one line each, so a
//! SIGHUP after editing the proxy, a URL or the cache settings says so instead of leaving the
//! old values running in silence. Live on reload: the log level, upstream credentials, client
//! users, tokens, groups and access rules, private upstreams, the TLS files in use; the
//! upstream set and `[tls]` are reported by their own reloaders. Settings are compared by their
//! debug form, in which every secret reads `REDACTED`: a changed secret is the credential
//! reloaders' business, never a line here.

use crate::config::{Config, UpstreamConfig};

/// The settings of `new` that differ from `old` and need a restart.
pub(super) fn needs_restart(old: &Config, new: &Config) -> Vec<String> {
    let same = |a: &dyn std::fmt::Debug, b: &dyn std::fmt::Debug| format!("{a:?}") == format!("{b:?}");
    let mut changes = Vec::new();
    let mut check = |what: &str, a: &dyn std::fmt::Debug, b: &dyn std::fmt::Debug| {
        if !same(a, b) {
            changes.push(what.to_string());
        }
    };
    check("listen", &old.listen, &new.listen);
    check("[admin] listen", &old.admin_listen, &new.admin_listen);
    check("shutdown_grace", &old.shutdown_grace, &new.shutdown_grace);
    check("max_connections", &old.max_connections, &new.max_connections);
    check("idle_timeout", &old.idle_timeout, &new.idle_timeout);
    check("sendfile", &old.sendfile, &new.sendfile);
    check("[cache] settings", &old.cache, &new.cache);
    check(
        "[fetch] settings (timeouts, breaker, egress proxy)",
        &old.fetch,
        &new.fetch,
    );
    check("[[hosted]] namespaces", &old.hosted, &new.hosted);
    check("[storage] settings", &old.storage, &new.storage);
    for n in &new.upstreams {
        if let Some(o) = old.upstreams.iter().find(|o| o.host == n.host) {
            check(
                &format!("upstream {}: url, fallback or connection settings", n.host),
                &connection(o),
                &connection(n),
            );
        }
    }
    if old.admin_token.as_ref().map(|t| t.expose()) != new.admin_token.as_ref().map(|t| t.expose()) {
        changes.push("[admin] token_file's token".to_string());
    }
    changes
}

/// What an upstream connects with, credentials left out.
fn connection(u: &UpstreamConfig) -> impl std::fmt::Debug + '_ {
    (
        (&u.scheme, &u.authority, u.default, u.send_ns, u.offline),
        // A fallback's credentials reload live; where it is does not.
        u.fallback
            .iter()
            .map(|f| (f.base_url(), f.ca_file.clone()))
            .collect::<Vec<_>>(),
        (
            u.max_connections,
            &u.ca_file,
            u.client_cert.as_ref().map(|c| (&c.cert_file, &c.key_file)),
        ),
        (&u.redirect_hosts, u.credential_lifetime),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(text: &str) -> Config {
        Config::from_toml_str(&format!("builtin_upstreams = false\n{text}")).unwrap()
    }

    #[test]
    fn live_settings_are_not_reported_and_the_rest_is() {
        let base = "[[upstreams]]\nhost = \"docker.io\"\nurl = \"https://registry-1.docker.io\"\n";
        let old = config(base);
        let live = config(&format!(
            "[log]\nlevel = \"debug\"\n[auth]\nanonymous = \"none\"\n{base}username = \"u\"\npassword = \"p\"\n"
        ));
        assert_eq!(needs_restart(&old, &live), Vec::<String>::new());
        let moved = config(&format!(
            "listen = \"0.0.0.0:6000\"\n[fetch]\nproxy = \"http://proxy:3128\"\n[cache]\nunused_ttl = \"1d\"\n\
             {base}fallback = [\"https://mirror.gcr.io\"]\n"
        ));
        assert_eq!(
            needs_restart(&old, &moved),
            [
                "listen",
                "[cache] settings",
                "[fetch] settings (timeouts, breaker, egress proxy)",
                "upstream docker.io: url, fallback or connection settings"
            ]
        );
    }
}
