//! The raw serde shape of the TOML configuration file. Permissive in types (strings for
//! durations and URLs) but strict in keys: an unknown key is an error. `config.rs` turns this
//! into the validated `Config`. `keys.rs` lists the same fields, to name every unknown key
//! at once; a test keeps the two in step.

use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileConfig {
    pub listen: Option<String>,
    pub builtin_upstreams: Option<bool>,
    pub offline: Option<bool>,
    pub shutdown_grace: Option<String>,
    pub max_connections: Option<i64>,
    pub idle_timeout: Option<String>,
    pub sendfile: Option<bool>,
    #[serde(default)]
    pub admin: FileAdmin,
    #[serde(default)]
    pub log: FileLog,
    #[serde(default)]
    pub cache: FileCache,
    #[serde(default)]
    pub fetch: FileFetch,
    #[serde(default)]
    pub upstreams: Vec<FileUpstream>,
    pub tls: Option<FileTls>,
    pub auth: Option<FileAuth>,
    #[serde(default)]
    pub access: Vec<FileAccess>,
    #[serde(default)]
    pub hosted: Vec<FileHosted>,
    pub storage: Option<FileStorage>,
}

/// `[storage]`: the cache directory alone, or in front of a shared S3 bucket.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileStorage {
    pub kind: Option<String>,
    pub bucket: Option<String>,
    pub endpoint: Option<String>,
    pub region: Option<String>,
    pub prefix: Option<String>,
    pub path_style: Option<bool>,
    pub access_key_id: Option<String>,
    pub secret_access_key_file: Option<String>,
    pub max_size: Option<FileSize>,
    pub gc_grace: Option<String>,
}

/// One `[[hosted]]` namespace: names under `prefix` are pushed to regcache, never proxied.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileHosted {
    pub prefix: Option<String>,
    pub create_on_push: Option<bool>,
    pub immutable_tags: Option<bool>,
    pub max_size: Option<FileSize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileCache {
    pub unused_ttl: Option<String>,
    pub dir: Option<String>,
    pub tag_ttl: Option<String>,
    pub negative_ttl: Option<String>,
    pub revalidate_timeout: Option<String>,
    pub revalidate: Option<String>,
    pub max_size: Option<FileSize>,
    pub high_watermark: Option<f64>,
    pub low_watermark: Option<f64>,
}

/// A size as a number of bytes or a string with a unit (`"50GiB"`).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(super) enum FileSize {
    Bytes(u64),
    Text(String),
}

impl FileSize {
    /// The number of bytes, or why the text is no size.
    pub(super) fn bytes(self) -> Result<u64, String> {
        match self {
            FileSize::Bytes(n) => Ok(n),
            FileSize::Text(t) => crate::units::parse_size(&t),
        }
    }
}

/// A size key's bytes (None when absent); a bad one is reported as `key: why`.
pub(super) fn size(errors: &mut Vec<String>, key: &str, raw: Option<FileSize>) -> Option<u64> {
    raw?.bytes().map_err(|e| errors.push(format!("{key}: {e}"))).ok()
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileFetch {
    pub connect_timeout: Option<String>,
    pub read_timeout: Option<String>,
    pub header_timeout: Option<String>,
    pub max_manifest_size: Option<u64>,
    pub finish_abandoned: Option<bool>,
    pub breaker_threshold: Option<u32>,
    pub breaker_probe_interval: Option<String>,
    pub proxy: Option<String>,
    #[serde(default)]
    pub no_proxy: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileUpstream {
    pub host: Option<String>,
    pub url: Option<String>,
    pub default: Option<bool>,
    pub username: Option<String>,
    pub password: Option<String>,
    pub password_file: Option<String>,
    pub password_env: Option<String>,
    pub docker_config: Option<String>,
    pub credential_helper: Option<String>,
    pub credential_lifetime: Option<String>,
    pub max_connections: Option<u32>,
    pub ca_file: Option<String>,
    pub offline: Option<bool>,
    pub client_cert_file: Option<String>,
    pub client_key_file: Option<String>,
    pub redirect_hosts: Option<Vec<String>>,
    pub private: Option<bool>,
    pub public: Option<bool>,
    pub send_ns: Option<bool>,
    /// URLs or tables (`config/upstream/fallbacks.rs`).
    pub fallback: Option<Vec<toml::Value>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileAdmin {
    pub listen: Option<String>,
    pub token_file: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileLog {
    pub format: Option<String>,
    pub level: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileTls {
    pub cert_file: Option<String>,
    pub key_file: Option<String>,
    pub client_ca_file: Option<String>,
    pub client_auth: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileAuth {
    pub htpasswd_file: Option<String>,
    pub tokens_file: Option<String>,
    pub anonymous: Option<String>,
    pub groups: Option<std::collections::BTreeMap<String, Vec<String>>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileAccess {
    pub repository: Option<String>,
    pub read: Option<Vec<String>>,
    pub write: Option<Vec<String>>,
}
