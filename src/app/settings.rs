//! What the daemon's parts are built with, from the validated configuration: the typed
//! settings of the cache, the TLS listener, the pull-through policy and the hosted namespaces
//! (nothing below `app` reads `Config`).

use super::StartError;
use crate::cache::{Budget, CacheSettings};
use crate::config::{ClientAuth, Config, StorageConfig, TlsConfig};
use crate::registry::{HostedNs, MirrorPolicy};
use crate::server::tls::TlsSettings;

/// The TLS listener's settings from `[tls]`.
pub(super) fn tls_settings(tls: &TlsConfig) -> TlsSettings {
    TlsSettings {
        cert_file: tls.cert_file.clone(),
        key_file: tls.key_file.clone(),
        client_ca_file: tls.client_ca_file.clone(),
        client_cert_required: tls.client_auth == ClientAuth::Required,
    }
}

/// The cache's settings from `[cache]` and `[fetch]`.
pub fn cache_settings(config: &Config) -> CacheSettings {
    let c = &config.cache;
    CacheSettings {
        dir: c.dir.clone(),
        budget: Budget {
            max: c.max_size,
            high: c.high_watermark,
            low: c.low_watermark,
        },
        read_timeout: config.fetch.read_timeout,
        finish_abandoned: config.fetch.finish_abandoned,
        shared: None,
    }
}

/// The daemon's cache settings: `cache_settings` with the shared bucket of `[storage]`.
pub(super) fn daemon_cache_settings(config: &Config) -> Result<CacheSettings, StartError> {
    let mut settings = cache_settings(config);
    if let StorageConfig::S3(s3) = &config.storage {
        settings.shared = Some(crate::bucket::open(s3, &config.fetch.egress)?);
    }
    Ok(settings)
}

/// The hosted namespaces of `[[hosted]]`, as the registry layer takes them.
pub fn hosted_policy(config: &Config) -> Vec<HostedNs> {
    config
        .hosted
        .iter()
        .map(|h| HostedNs {
            prefix: h.prefix.clone(),
            create_on_push: h.create_on_push,
            immutable_tags: h.immutable_tags,
            max_size: h.max_size,
        })
        .collect()
}

/// The pull-through policy from `[cache]` and `[fetch]`.
pub fn mirror_policy(config: &Config) -> MirrorPolicy {
    MirrorPolicy {
        tag_ttl: config.cache.tag_ttl,
        revalidate_timeout: config.cache.revalidate_timeout,
        revalidate_in_background: config.cache.revalidate_in_background,
        negative_ttl: config.cache.negative_ttl,
        max_manifest_size: config.fetch.max_manifest_size,
    }
}
