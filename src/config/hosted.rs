//! Validation of the `[[hosted]]` namespaces: names under a `prefix` (one component such as
//! `local`, or a registry host such as `registry.internal` that clients push to) are regcache's
//! own repositories, pushed to and pulled from, never proxied. A prefix must be a valid name
//! component (or a host), and must be neither a configured upstream's host nor another prefix.

use super::file::{FileHosted, FileSize};
use super::UpstreamConfig;
use crate::oci::RepoName;

/// One hosted namespace and its repository policies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostedConfig {
    /// `local` or `registry.internal`: the first component of a name.
    pub prefix: String,
    /// Docker Hub's rule: the first push creates a repository. Off: ECR's rule, a repository must
    /// be created first (`regcache repo create`).
    pub create_on_push: bool,
    /// ECR's tag immutability: a tag, once pushed, never names other content.
    pub immutable_tags: bool,
    /// The most bytes of content the namespace's repositories may hold together (a push past it
    /// is refused); `None`: no quota of its own.
    pub max_size: Option<u64>,
}

fn components(prefix: &str) -> Vec<&str> {
    prefix.split('/').collect()
}

/// Whether one prefix is a leading part of the other, in whole components.
fn overlaps(a: &str, b: &str) -> bool {
    let (a, b) = (components(a), components(b));
    let n = a.len().min(b.len());
    a[..n] == b[..n]
}

pub(super) fn validate(
    errors: &mut Vec<String>,
    raw: Vec<FileHosted>,
    upstreams: &[UpstreamConfig],
) -> Vec<HostedConfig> {
    let mut out: Vec<HostedConfig> = Vec::new();
    for (i, h) in raw.into_iter().enumerate() {
        let at = format!("hosted[{i}]");
        let Some(prefix) = h.prefix.map(|p| p.trim_matches('/').to_ascii_lowercase()) else {
            errors.push(format!(
                "{at}: prefix is required (like \"local\" or \"registry.internal\")"
            ));
            continue;
        };
        if prefix.contains('/') {
            errors.push(format!(
                "{at}: prefix {prefix:?} has more than one component; use one (\"local\") or a registry host"
            ));
            continue;
        }
        let host_like = prefix.contains(['.', ':']) || prefix == "localhost";
        let checked = match host_like {
            true => prefix.parse::<crate::oci::HostPort>().map(drop).or_else(|_| {
                format!("{prefix}/x")
                    .parse::<RepoName>()
                    .map(drop)
                    .map_err(|e| e.to_string())
            }),
            false => prefix.parse::<RepoName>().map(drop).map_err(|e| e.to_string()),
        };
        if let Err(e) = checked {
            errors.push(format!(
                "{at}: prefix {prefix:?} is not a repository name or registry host: {e}"
            ));
            continue;
        }
        if let Some(u) = upstreams.iter().find(|u| overlaps(&u.host, &prefix)) {
            errors.push(format!(
                "{at}: prefix {prefix:?} is also the upstream {}; a name is either mirrored or hosted",
                u.host
            ));
            continue;
        }
        if let Some(other) = out.iter().find(|o| overlaps(&o.prefix, &prefix)) {
            errors.push(format!(
                "{at}: prefix {prefix:?} overlaps hosted prefix {:?}",
                other.prefix
            ));
            continue;
        }
        let max_size = match h.max_size.map(FileSize::bytes).transpose() {
            Ok(n) => n,
            Err(e) => {
                errors.push(format!("{at}.max_size: {e}"));
                continue;
            }
        };
        out.push(HostedConfig {
            prefix,
            create_on_push: h.create_on_push.unwrap_or(true),
            immutable_tags: h.immutable_tags.unwrap_or(false),
            max_size,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hosted(prefix: &str) -> FileHosted {
        FileHosted {
            prefix: Some(prefix.into()),
            ..FileHosted::default()
        }
    }

    #[test]
    fn prefixes_are_names_or_hosts_and_never_overlap() {
        let mut errors = Vec::new();
        let got = validate(
            &mut errors,
            vec![
                hosted("local"),
                hosted("registry.internal:5000"),
                hosted("local/team"),
                hosted("Bad Name"),
                hosted("docker.io/mine"),
            ],
            &[],
        );
        assert_eq!(got.len(), 2, "{errors:?}");
        assert!(got[0].create_on_push && !got[0].immutable_tags);
        assert_eq!(errors.len(), 3, "{errors:?}");
        assert!(errors[0].contains("more than one component"), "{errors:?}");
        assert!(errors[1].contains("not a repository name"), "{errors:?}");
        assert!(errors[2].contains("more than one component"), "{errors:?}");
        let mut errors = Vec::new();
        let upstream: Vec<UpstreamConfig> = crate::config::Config::from_toml_str(
            "builtin_upstreams = false\n[[upstreams]]\nhost = \"registry.internal\"\nurl = \"https://r.example\"\n",
        )
        .unwrap()
        .upstreams;
        assert!(validate(&mut errors, vec![hosted("registry.internal")], &upstream).is_empty());
        assert!(errors[0].contains("also the upstream"), "{errors:?}");
    }
}
