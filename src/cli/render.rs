//! Text for people: sizes, times, the reports of `regcache cache stats|gc|purge` and what
//! `check-config` found.

use crate::admin_api::{GcReport, PurgeReport, Stats};
use crate::config::{Anonymous, Config, StorageConfig};

use super::cache_cmd::Via;

/// `1.5 GiB (1610612736 bytes)`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {} ({n} bytes)", UNITS[u])
    }
}

/// A UTC timestamp (`2024-05-01T12:00:00Z`) for milliseconds since the Unix epoch.
pub fn utc(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

pub fn render_stats(s: &Stats, via: Via) -> String {
    let budget = match s.max_size {
        Some(m) => format!(
            "{} (evicts from {:.0}% down to {:.0}%)",
            human_bytes(m),
            s.high_watermark * 100.0,
            s.low_watermark * 100.0
        ),
        None => "unlimited".to_string(),
    };
    let source = match via {
        Via::Directory => "read from the directory (no daemon running)".to_string(),
        Via::Daemon(a) => format!("answered by the running daemon at {a}"),
    };
    format!(
        "entries:       {} ({} blobs, {} manifests, {} tag records and kept listings)\n\
         bytes:         {} ({} of them records)\n\
         reserved:      {} (downloads in progress)\n\
         max_size:      {budget}\n\
         oldest access: {}\n\
         pinned:        {} ({})\n\
         in use:        {}\n\
         source:        {source}\n",
        s.blobs + s.manifests + s.records,
        s.blobs,
        s.manifests,
        s.records,
        human_bytes(s.bytes),
        human_bytes(s.record_bytes),
        human_bytes(s.reserved_bytes),
        s.oldest_access_ms.map_or_else(|| "-".to_string(), utc),
        s.pinned,
        human_bytes(s.pinned_bytes),
        s.in_use,
    )
}

/// What `cache gc` did; `unused_for` when it evicted by age (`--unused-for`).
pub fn render_gc(r: &GcReport, via: Via, unused_for: Option<std::time::Duration>) -> String {
    let target = match (unused_for, r.target) {
        (Some(d), _) => format!("content unused for {}", crate::units::short_duration(d)),
        (None, Some(t)) => human_bytes(t),
        (None, None) => "nothing (unlimited cache, no --to)".to_string(),
    };
    let by = match via {
        Via::Directory => "on the directory (no daemon running)".to_string(),
        Via::Daemon(a) => format!("by the running daemon at {a}"),
    };
    let released = match &r.released {
        Some(h) => format!(
            "released {} blobs and manifests no repository links any more ({} deleted, {}); ",
            h.unpinned,
            h.deleted,
            human_bytes(h.deleted_bytes)
        ),
        None => String::new(),
    };
    format!(
        "{released}evicted {} entries, {} freed, {} now in use; target {target}; done {by}\n",
        r.evicted,
        human_bytes(r.freed_bytes),
        human_bytes(r.bytes),
    )
}

pub fn render_purge(r: &PurgeReport, via: Via) -> String {
    let what = match &r.tag {
        Some(t) => format!("{}/{}:{t}", r.upstream, r.repository),
        None => format!("{}/{} (every tag)", r.upstream, r.repository),
    };
    let source = match via {
        Via::Directory => "read from the directory (no daemon running)".to_string(),
        Via::Daemon(a) => format!("answered by the running daemon at {a}"),
    };
    format!(
        "dropped {} tag records of {what}; the next pull asks the upstream\nsource: {source}\n",
        r.removed
    )
}

/// What `check-config` found: listener, cache, each upstream, client authentication.
pub fn render_config(c: &Config) -> String {
    let mut out = format!(
        "config ok: listen {}, cache {}, {} upstreams (default {})\n",
        c.listen,
        c.cache.dir.display(),
        c.upstreams.len(),
        c.default_upstream().host
    );
    for u in &c.upstreams {
        out.push_str(&format!(
            "  {} {} auth: {}",
            u.host,
            u.base_url(),
            u.credentials.describe()
        ));
        if let Some(n) = u.max_connections {
            out.push_str(&format!(", max_connections {n}"));
        }
        if u.client_cert.is_some() {
            out.push_str(", client certificate");
        }
        if u.private {
            out.push_str(", private (never served to anonymous clients)");
        }
        for f in &u.fallback {
            out.push_str(&format!(
                ", fallback {} auth: {}",
                f.base_url(),
                f.credentials.describe()
            ));
        }
        out.push('\n');
    }
    out.push_str(&format!("upstream connections: {}\n", c.fetch.egress.describe()));
    let a = &c.auth;
    let anonymous = match a.anonymous {
        Anonymous::Read => "read",
        _ => "none",
    };
    out.push_str(&format!(
        "clients: {} users, {} robot tokens, {} groups, {} access rules, anonymous {anonymous}\n",
        a.users.len(),
        a.tokens.len(),
        a.groups.len(),
        a.rules.len(),
    ));
    if let StorageConfig::S3(s3) = &c.storage {
        out.push_str(&format!(
            "shared store: s3 bucket {} at {}{}{}, credentials {}, budget {} (gc_grace {}s)\n",
            s3.bucket,
            s3.endpoint.as_deref().unwrap_or("AWS S3"),
            if s3.prefix.is_empty() {
                String::new()
            } else {
                format!(", prefix {}", s3.prefix)
            },
            if s3.path_style { ", path-style" } else { "" },
            if s3.credentials.is_some() {
                "static"
            } else {
                "from the environment"
            },
            s3.max_size.map_or("none".to_string(), crate::units::short_size),
            s3.gc_grace.as_secs(),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        assert_eq!(utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc(1_709_210_096_000), "2024-02-29T12:34:56Z");
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(3 << 29), "1.5 GiB (1610612736 bytes)");
    }
}
