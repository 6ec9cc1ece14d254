//! Validation of the `[cache]` table: where the cache lives, how long tags are trusted (and
//! revalidated, and missing tags remembered), and the disk budget (`max_size` with its high and
//! low watermarks).

use std::path::PathBuf;
use std::time::Duration;

use super::file::{size, FileCache};
use super::{duration, CacheConfig, DEFAULT_CACHE_DIR};

pub(super) fn validate(errors: &mut Vec<String>, raw: FileCache) -> CacheConfig {
    let max_size = size(errors, "cache.max_size", raw.max_size);
    if max_size == Some(0) {
        errors.push("cache.max_size: 0 leaves no room; leave it out for an unlimited cache".into());
    }
    if raw.dir.as_deref().is_some_and(|d| d.trim().is_empty()) {
        errors.push("cache.dir: an empty path; name the cache directory (e.g. \"/var/lib/regcache\")".into());
    }
    let high_watermark = raw.high_watermark.unwrap_or(0.95);
    let low_watermark = raw.low_watermark.unwrap_or(0.85);
    if !(low_watermark > 0.0 && low_watermark < high_watermark && high_watermark <= 1.0) {
        errors.push(format!(
            "cache.low_watermark ({low_watermark}) and cache.high_watermark ({high_watermark}) must \
             be fractions with 0 < low_watermark < high_watermark <= 1"
        ));
    }
    CacheConfig {
        dir: PathBuf::from(raw.dir.as_deref().unwrap_or(DEFAULT_CACHE_DIR)),
        tag_ttl: duration(
            errors,
            "cache.tag_ttl",
            raw.tag_ttl.as_deref(),
            Duration::from_secs(300),
        ),
        negative_ttl: duration(
            errors,
            "cache.negative_ttl",
            raw.negative_ttl.as_deref(),
            Duration::from_secs(30),
        ),
        revalidate_timeout: duration(
            errors,
            "cache.revalidate_timeout",
            raw.revalidate_timeout.as_deref(),
            Duration::from_secs(2),
        ),
        revalidate_in_background: match raw.revalidate.as_deref() {
            None | Some("wait") => false,
            Some("background") => true,
            Some(other) => {
                errors.push(format!(
                    "cache.revalidate: {other:?} is not \"wait\" or \"background\""
                ));
                false
            }
        },
        max_size,
        high_watermark,
        low_watermark,
        unused_ttl: raw.unused_ttl.as_deref().and_then(|text| {
            let before = errors.len();
            let d = duration(errors, "cache.unused_ttl", Some(text), Duration::ZERO);
            if d.is_zero() && errors.len() == before {
                errors.push(
                    "cache.unused_ttl: must be longer than 0s (leave it out to keep unused content)".into(),
                );
            }
            (!d.is_zero()).then_some(d)
        }),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::config::Config;

    #[test]
    fn disk_budget_keys() {
        let d = Config::default();
        assert_eq!(d.cache.max_size, None);
        assert_eq!((d.cache.high_watermark, d.cache.low_watermark), (0.95, 0.85));
        let c = Config::from_toml_str("[cache]\nmax_size = \"50GiB\"\nlow_watermark = 0.5\n").unwrap();
        assert_eq!(c.cache.max_size, Some(50 << 30));
        assert_eq!(c.cache.low_watermark, 0.5);
        let c = Config::from_toml_str("[cache]\nmax_size = 1000000\n").unwrap();
        assert_eq!(c.cache.max_size, Some(1_000_000));
        let e = Config::from_toml_str(
            "[cache]\nmax_size = \"lots\"\nhigh_watermark = 0.8\nlow_watermark = 0.9\n",
        )
        .unwrap_err();
        assert_eq!(e.0.len(), 2, "{e}");
        assert!(Config::from_toml_str("[cache]\nmax_size = 0\n").is_err());
        assert_eq!(d.cache.unused_ttl, None);
        let c = Config::from_toml_str("[cache]\nunused_ttl = \"30d\"\n").unwrap();
        assert_eq!(c.cache.unused_ttl, Some(Duration::from_secs(30 * 86400)));
        for bad in ["0s", "soon"] {
            let e = Config::from_toml_str(&format!("[cache]\nunused_ttl = \"{bad}\"\n")).unwrap_err();
            assert_eq!(e.0.len(), 1, "{e}");
            assert!(e.0[0].starts_with("cache.unused_ttl: "), "{e}");
        }
        let e = Config::from_toml_str("[cache]\ndir = \"\"\n[fetch]\nmax_manifest_size = 0\n").unwrap_err();
        assert_eq!(e.0.len(), 2, "{e}");
        assert!(e.0[0].starts_with("cache.dir: an empty path"), "{e}");
        assert!(e.0[1].starts_with("fetch.max_manifest_size: 0"), "{e}");
    }
}
