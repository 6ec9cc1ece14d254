//! The upstream table: the built-in upstreams (unless turned off) overlaid with the configured
//! ones, with exactly one default. A configured entry may replace a built-in one of the same
//! host; two configured entries for one host, or hosts that differ only in case, are errors
//! rather than one silently winning.

use super::file::FileUpstream;
use super::{upstream, UpstreamConfig, BUILTIN_UPSTREAMS};

pub(super) fn validate(
    errors: &mut Vec<String>,
    builtin: bool,
    all_offline: bool,
    raw: Vec<FileUpstream>,
) -> Vec<UpstreamConfig> {
    let mut upstreams: Vec<UpstreamConfig> = Vec::new();
    if builtin {
        for (i, (host, url)) in BUILTIN_UPSTREAMS.iter().enumerate() {
            upstreams.push(UpstreamConfig::builtin(host, url, i == 0));
        }
    }
    // (host, index) of the configured entries seen so far.
    let mut configured: Vec<(String, usize)> = Vec::new();
    for (i, u) in raw.into_iter().enumerate() {
        let Some(u) = upstream::validate(errors, i, u) else {
            continue;
        };
        if let Some(problem) = clash(&configured, &upstreams, &u.host) {
            errors.push(format!("upstreams[{i}].host: {:?} {problem}", u.host));
            continue;
        }
        configured.push((u.host.clone(), i));
        if u.default {
            upstreams.iter_mut().for_each(|x| x.default = false);
        }
        match upstreams.iter_mut().find(|x| x.host == u.host) {
            Some(builtin) => *builtin = u,
            None => upstreams.push(u),
        }
    }
    if all_offline {
        upstreams.iter_mut().for_each(|u| u.offline = true);
    }
    let defaults = upstreams.iter().filter(|u| u.default).count();
    if upstreams.is_empty() {
        errors.push("no upstreams: add an [[upstreams]] entry or leave builtin_upstreams on".into());
    } else if defaults > 1 {
        errors.push("more than one upstream has default = true".into());
    } else if defaults == 0 {
        upstreams[0].default = true;
    }
    upstreams
}

/// Why `host` cannot join the table, if it cannot.
fn clash(configured: &[(String, usize)], table: &[UpstreamConfig], host: &str) -> Option<String> {
    if let Some((other, j)) = configured.iter().find(|(h, _)| h.eq_ignore_ascii_case(host)) {
        return Some(if other == host {
            format!("is already configured by upstreams[{j}]")
        } else {
            format!("differs only in case from upstreams[{j}] ({other:?}); host names are one registry")
        });
    }
    table
        .iter()
        .find(|x| x.host != host && x.host.eq_ignore_ascii_case(host))
        .map(|x| {
            format!(
                "differs only in case from the built-in {:?}; write it as {:?} to replace it",
                x.host, x.host
            )
        })
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    #[test]
    fn duplicate_hosts_are_errors_but_replacing_a_builtin_is_not() {
        let e = Config::from_toml_str(
            "[[upstreams]]\nhost = \"lab.example\"\n[[upstreams]]\nhost = \"lab.example\"\n\
             [[upstreams]]\nhost = \"Lab.Example\"\n[[upstreams]]\nhost = \"GHCR.io\"\n",
        )
        .unwrap_err();
        assert_eq!(e.0.len(), 3, "{e}");
        assert!(
            e.0[0].contains("upstreams[1].host: \"lab.example\" is already configured by upstreams[0]"),
            "{e}"
        );
        assert!(
            e.0[1].contains("upstreams[2].host: \"Lab.Example\" differs only in case"),
            "{e}"
        );
        assert!(
            e.0[2].contains("differs only in case from the built-in \"ghcr.io\""),
            "{e}"
        );
        let c = Config::from_toml_str("[[upstreams]]\nhost = \"ghcr.io\"\nurl = \"http://127.0.0.1:1\"\n")
            .unwrap();
        let ghcr: Vec<_> = c.upstreams.iter().filter(|u| u.host == "ghcr.io").collect();
        assert_eq!(ghcr.len(), 1);
        assert_eq!(ghcr[0].base_url(), "http://127.0.0.1:1");
    }
}
