//! Validation of the `[storage]` table: where content lives besides the cache directory.
//! `kind = "local"` (the default): the cache directory only. `kind = "s3"`: a bucket of an
//! S3-compatible store shared by every replica, behind the cache directory as a bounded
//! read-through tier. Credentials come from `access_key_id` with `secret_access_key_file`, or
//! from the usual AWS sources (environment, web identity, instance metadata).

use std::path::PathBuf;
use std::time::Duration;

use super::duration;
use super::file::{size, FileStorage};
use crate::secret::Secret;

/// A shared S3-compatible bucket.
#[derive(Debug, Clone)]
pub struct S3Config {
    pub bucket: String,
    /// `http(s)://host:port` of a self-hosted store; None: AWS S3 itself.
    pub endpoint: Option<String>,
    pub region: String,
    /// Prepended to every key (`cache/`), so one bucket can hold other things too.
    pub prefix: String,
    /// `https://endpoint/bucket/key` rather than `https://bucket.endpoint/key`.
    pub path_style: bool,
    /// Static credentials; None: the environment's.
    pub credentials: Option<(String, Secret)>,
    /// The bucket's budget for blobs and manifests, enforced by `regcache bucket gc`.
    pub max_size: Option<u64>,
    /// What was used this recently is never deleted by `regcache bucket gc`.
    pub gc_grace: Duration,
}

impl S3Config {
    /// The egress proxy the bucket's client goes through for its endpoint (AWS's regional S3
    /// host without one), if any.
    pub fn proxy<'a>(&self, egress: &'a super::EgressConfig) -> Option<&'a super::ProxyUrl> {
        let endpoint = self.endpoint.as_deref().and_then(|e| e.parse::<http::Uri>().ok());
        match &endpoint {
            Some(uri) => egress.proxy_for(uri.scheme_str() == Some("https"), uri.host().unwrap_or_default()),
            None => egress.proxy_for(true, &format!("s3.{}.amazonaws.com", self.region)),
        }
    }
}

/// The shortest `gc_grace`: replicas report their uses every minute, and a read from the bucket
/// must end before its object may go.
const MIN_GC_GRACE: Duration = Duration::from_secs(300);

#[derive(Debug, Clone, Default)]
pub enum StorageConfig {
    #[default]
    Local,
    S3(S3Config),
}

pub(super) fn validate(
    errors: &mut Vec<String>,
    raw: Option<FileStorage>,
    egress: &super::EgressConfig,
) -> StorageConfig {
    let storage = validate_shape(errors, raw);
    if let StorageConfig::S3(s3) = &storage {
        if let Some(p) = s3.proxy(egress).filter(|p| p.kind != super::ProxyKind::Http) {
            errors.push(format!(
                "storage: the bucket's client cannot use the SOCKS proxy {} ({}); list its endpoint in fetch.no_proxy or give an http:// proxy",
                p.authority, egress.source
            ));
        }
    }
    storage
}

fn validate_shape(errors: &mut Vec<String>, raw: Option<FileStorage>) -> StorageConfig {
    let Some(raw) = raw else {
        return StorageConfig::Local;
    };
    match raw.kind.as_deref() {
        None | Some("local") => {
            let s3_keys = raw.bucket.is_some() || raw.endpoint.is_some() || raw.access_key_id.is_some();
            if s3_keys {
                errors.push("storage: bucket, endpoint and credentials need kind = \"s3\"".into());
            }
            return StorageConfig::Local;
        }
        Some("s3") => {}
        Some(other) => {
            errors.push(format!("storage.kind: {other:?} is not \"local\" or \"s3\""));
            return StorageConfig::Local;
        }
    }
    let bucket = raw.bucket.unwrap_or_default();
    if bucket.is_empty() {
        errors.push("storage.bucket: required with kind = \"s3\"".into());
    }
    if let Some(e) = &raw.endpoint {
        if let Err(e) = super::parse_url(e) {
            errors.push(format!("storage.endpoint: {e}"));
        }
    }
    let credentials = match (raw.access_key_id, raw.secret_access_key_file) {
        (None, None) => None,
        (Some(id), Some(file)) => match read_secret(&file) {
            Ok(secret) => Some((id, secret)),
            Err(e) => {
                errors.push(format!("storage.secret_access_key_file: {e}"));
                None
            }
        },
        _ => {
            errors.push(
                "storage: access_key_id and secret_access_key_file go together (or leave both out for the AWS_* environment)"
                    .into(),
            );
            None
        }
    };
    let max_size = size(errors, "storage.max_size", raw.max_size);
    let gc_grace = duration(
        errors,
        "storage.gc_grace",
        raw.gc_grace.as_deref(),
        Duration::from_secs(3600),
    );
    if gc_grace < MIN_GC_GRACE {
        errors.push(format!(
            "storage.gc_grace: at least {}s (replicas report their uses every minute)",
            MIN_GC_GRACE.as_secs()
        ));
    }
    let mut prefix = raw.prefix.unwrap_or_default().trim_matches('/').to_string();
    if !prefix.is_empty() {
        prefix.push('/');
    }
    StorageConfig::S3(S3Config {
        path_style: raw.path_style.unwrap_or(raw.endpoint.is_some()),
        bucket,
        endpoint: raw.endpoint.map(|e| e.trim_end_matches('/').to_string()),
        region: raw.region.unwrap_or_else(|| "us-east-1".into()),
        prefix,
        credentials,
        max_size,
        gc_grace,
    })
}

/// A risky `[storage]`: a bucket reached over plain HTTP beyond this machine.
pub(super) fn warnings(storage: &StorageConfig) -> Vec<String> {
    let StorageConfig::S3(s3) = storage else {
        return Vec::new();
    };
    let Some(endpoint) = s3.endpoint.as_deref().filter(|e| e.starts_with("http://")) else {
        return Vec::new();
    };
    let host = endpoint["http://".len()..]
        .split(['/', ':'])
        .next()
        .unwrap_or_default();
    let loopback = host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback());
    match loopback {
        true => Vec::new(),
        false => vec![format!(
            "the shared store {endpoint} is reached over plain HTTP: blobs, manifests and tag \
             records cross the network unencrypted (bodies are not signed; blobs and manifests are \
             verified by digest, tag records are not); use https"
        )],
    }
}

fn read_secret(file: &str) -> Result<Secret, String> {
    let path = PathBuf::from(file);
    let text = std::fs::read_to_string(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let secret = text.trim();
    if secret.is_empty() {
        return Err(format!("{} is empty", path.display()));
    }
    Ok(Secret::new(secret.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    #[test]
    fn the_bucket_takes_an_http_proxy_but_not_a_socks_one() {
        let storage = "[storage]\nkind = \"s3\"\nbucket = \"b\"\nendpoint = \"http://store.lab:8333\"\n";
        let c = Config::from_toml_str(&format!("[fetch]\nproxy = \"http://p:3128\"\n{storage}")).unwrap();
        let StorageConfig::S3(s3) = &c.storage else {
            panic!("s3")
        };
        assert_eq!(
            s3.proxy(&c.fetch.egress).map(|p| p.authority.as_str()),
            Some("p:3128")
        );
        let e = Config::from_toml_str(&format!("[fetch]\nproxy = \"socks5h://p\"\n{storage}")).unwrap_err();
        assert!(e.to_string().contains("cannot use the SOCKS proxy p:1080"), "{e}");
        let ok = format!("[fetch]\nproxy = \"socks5h://p\"\nno_proxy = [\"store.lab\"]\n{storage}");
        let c = Config::from_toml_str(&ok).unwrap();
        let StorageConfig::S3(s3) = &c.storage else {
            panic!("s3")
        };
        assert!(s3.proxy(&c.fetch.egress).is_none());
    }

    #[test]
    fn local_by_default_and_s3_when_asked() {
        assert!(matches!(Config::default().storage, StorageConfig::Local));
        let c = Config::from_toml_str(
            "[storage]\nkind = \"s3\"\nbucket = \"b\"\nendpoint = \"http://127.0.0.1:8333/\"\nprefix = \"/cache/\"\n",
        )
        .unwrap();
        let StorageConfig::S3(s3) = c.storage else {
            panic!("s3 expected")
        };
        assert_eq!(s3.endpoint.as_deref(), Some("http://127.0.0.1:8333"));
        assert_eq!(
            (s3.prefix.as_str(), s3.path_style, s3.region.as_str()),
            ("cache/", true, "us-east-1")
        );
        assert!(s3.credentials.is_none());
    }

    #[test]
    fn plain_http_beyond_this_machine_is_warned_about() {
        let with = |endpoint: &str| {
            Config::from_toml_str(&format!(
                "listen = \"127.0.0.1:5000\"\n[storage]\nkind = \"s3\"\nbucket = \"b\"\nendpoint = \"{endpoint}\"\n"
            ))
            .unwrap()
            .warnings()
        };
        assert!(with("http://10.0.0.5:8333")[0].contains("plain HTTP"));
        assert!(with("http://127.0.0.1:8333").is_empty());
        assert!(with("https://s3.example").is_empty());
    }

    #[test]
    fn bad_storage_tables_name_the_key() {
        for (text, want) in [
            ("[storage]\nkind = \"s3\"\n", "storage.bucket"),
            ("[storage]\nkind = \"gcs\"\n", "storage.kind"),
            ("[storage]\nbucket = \"b\"\n", "need kind"),
            ("[storage]\nkind = \"s3\"\nbucket = \"b\"\naccess_key_id = \"k\"\n", "go together"),
            ("[storage]\nkind = \"s3\"\nbucket = \"b\"\nendpoint = \"ftp://x\"\n", "storage.endpoint"),
            (
                "[storage]\nkind = \"s3\"\nbucket = \"b\"\naccess_key_id = \"k\"\nsecret_access_key_file = \"/nonexistent/s\"\n",
                "cannot read",
            ),
        ] {
            let e = Config::from_toml_str(text).unwrap_err().to_string();
            assert!(e.contains(want), "{text}: {e}");
        }
    }
}
