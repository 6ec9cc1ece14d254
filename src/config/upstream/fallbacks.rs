//! `[[upstreams]] fallback`: a list of URLs (`"https://mirror.gcr.io"`, asked anonymously) or
//! tables with a URL and credentials, as an upstream has them
//! (`{ url = "https://registry-1.docker.io", username = "robot", password_file = "..." }`;
//! `password`, `password_env`, `docker_config`, `credential_helper`, `credential_lifetime` and
//! `ca_file` too). A fallback's credentials are looked up under the upstream's own registry
//! name (Docker Hub's `https://index.docker.io/v1/` in a config.json), since it serves the same
//! registry's content.

use serde::Deserialize;

use super::super::file::FileUpstream;
use super::UpstreamConfig;

/// One fallback table.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileFallback {
    url: Option<String>,
    username: Option<String>,
    password: Option<String>,
    password_file: Option<String>,
    password_env: Option<String>,
    docker_config: Option<String>,
    credential_helper: Option<String>,
    credential_lifetime: Option<String>,
    ca_file: Option<String>,
}

/// The fallbacks of the upstream `at` (client-facing `host`), each validated as an upstream.
pub(super) fn parse_all(
    errors: &mut Vec<String>,
    at: &str,
    host: &str,
    raw: Option<Vec<toml::Value>>,
) -> Vec<UpstreamConfig> {
    let mut all = Vec::new();
    for (j, value) in raw.unwrap_or_default().into_iter().enumerate() {
        let here = format!("{at}.fallback[{j}]");
        let f = match value {
            toml::Value::String(url) => FileFallback {
                url: Some(url),
                ..FileFallback::default()
            },
            table @ toml::Value::Table(_) => match table.try_into::<FileFallback>() {
                Ok(f) => f,
                Err(e) => {
                    errors.push(format!("{here}: {}", e.message().trim_end()));
                    continue;
                }
            },
            _ => {
                errors.push(format!("{here}: a URL, or a table with url and credentials"));
                continue;
            }
        };
        if f.url.is_none() {
            errors.push(format!("{here}: url is required"));
            continue;
        }
        let file = FileUpstream {
            host: Some(host.to_string()),
            url: f.url,
            username: f.username,
            password: f.password,
            password_file: f.password_file,
            password_env: f.password_env,
            docker_config: f.docker_config,
            credential_helper: f.credential_helper,
            credential_lifetime: f.credential_lifetime,
            ca_file: f.ca_file,
            ..FileUpstream::default()
        };
        if let Some(u) = super::validate_at(errors, &here, file) {
            all.push(u);
        }
    }
    all
}
