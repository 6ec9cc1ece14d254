//! `GET /` on the admin listener: a plain HTML status page, rendered on the server with inline
//! CSS only (readable without it), for an operator's browser. It shows what the cache holds (the
//! `cache ls` listing, capped at `MAX_ROWS` rows), the disk budget, hit ratio and bytes served
//! from the cache, downloads in progress, and each upstream's breaker state and last reported
//! rate-limit quota, all read from the daemon's metrics. It names every image pulled, so it is
//! guarded like `GET /admin/cache/ls`. Every value from the cache or the metrics goes through
//! `escape`.

use std::fmt::Write;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use prometheus::proto::MetricFamily;

use crate::admin_api::{EntryKind, ListEntry, Stats};
use crate::metrics::Metrics;
use crate::oci::short_digest;
use crate::units::{self, short_size};

/// The listing rows the page shows; the rest are counted.
const MAX_ROWS: usize = 200;

const STYLE: &str = "body{font-family:sans-serif;margin:1.5em;color:#222}\
table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:2px 8px;text-align:left}\
th{background:#eee}.n{text-align:right}.down{color:#b00;font-weight:bold}";

/// `s` with `&`, `<`, `>`, `"` and `'` replaced by character references, for text and attributes.
pub(super) fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The metric values the page shows, read once per request.
#[derive(Debug, Default)]
pub(super) struct Figures {
    /// Requests answered from the cache (hit, stale) and of all with a cache result.
    hits: f64,
    looked_up: f64,
    bytes_from_cache: f64,
    downloads: f64,
    upstreams: Vec<Upstream>,
}

/// One upstream's line: its host, whether the breaker holds it down, and its last reported
/// rate-limit quota (remaining, limit).
#[derive(Debug)]
struct Upstream {
    host: String,
    down: bool,
    quota: Option<(f64, f64)>,
}

/// A sample's labels and value.
type Sample<'a> = (Vec<(&'a str, &'a str)>, f64);

/// Each sample of the family `name`: its labels and value.
fn samples<'a>(families: &'a [MetricFamily], name: &str) -> Vec<Sample<'a>> {
    let Some(family) = families.iter().find(|f| f.name() == name) else {
        return Vec::new();
    };
    family
        .get_metric()
        .iter()
        .map(|m| {
            let labels = m.get_label().iter().map(|l| (l.name(), l.value())).collect();
            let value = m.get_counter().get_value() + m.get_gauge().get_value();
            (labels, value)
        })
        .collect()
}

fn label<'a>(labels: &[(&str, &'a str)], name: &str) -> &'a str {
    labels.iter().find(|(n, _)| *n == name).map_or("", |(_, v)| v)
}

impl Figures {
    pub(super) fn read(metrics: &Metrics) -> Figures {
        let families = metrics.gather();
        let mut f = Figures {
            downloads: metrics.cache.inflight_downloads.get() as f64,
            ..Figures::default()
        };
        for (labels, v) in samples(&families, "regcache_requests_total") {
            match label(&labels, "result") {
                "hit" | "stale" => (f.hits, f.looked_up) = (f.hits + v, f.looked_up + v),
                "miss" | "coalesced" => f.looked_up += v,
                _ => {}
            }
        }
        for (labels, v) in samples(&families, "regcache_served_bytes_total") {
            if label(&labels, "source") == "cache" {
                f.bytes_from_cache += v;
            }
        }
        let limits = samples(&families, "regcache_upstream_ratelimit_limit");
        let remaining = samples(&families, "regcache_upstream_ratelimit_remaining");
        for (labels, down) in samples(&families, "regcache_upstream_down") {
            let host = label(&labels, "upstream");
            let of = |s: &[Sample<'_>]| {
                s.iter()
                    .find(|(l, _)| label(l, "upstream") == host)
                    .map(|(_, v)| *v)
            };
            let quota = match (of(&remaining), of(&limits)) {
                (Some(r), Some(l)) if l > 0.0 => Some((r, l)),
                _ => None,
            };
            f.upstreams.push(Upstream {
                host: host.to_string(),
                down: down > 0.0,
                quota,
            });
        }
        f.upstreams.sort_by(|a, b| a.host.cmp(&b.host));
        f
    }
}

/// `3m ago`, or `never`.
fn age(then_ms: Option<u64>, now_ms: u64) -> String {
    then_ms.map_or_else(|| "never".to_string(), |then| units::age(then, now_ms))
}

/// `host/repository:tag`, `host/repository@sha256:…` or `(unreferenced)`.
fn image(e: &ListEntry) -> String {
    let place = match (&e.upstream, &e.repository) {
        (Some(u), Some(r)) => format!("{u}/{r}"),
        _ => return "(unreferenced)".to_string(),
    };
    match (&e.kind, &e.tag) {
        (EntryKind::Tag, Some(t)) => format!("{place}:{t}"),
        _ => format!("{place}@{}", short_digest(&e.digest)),
    }
}

fn budget(out: &mut String, stats: &Stats) {
    let used = stats.bytes + stats.reserved_bytes;
    let _ = write!(
        out,
        "<h2>Disk budget</h2><p>{} used",
        escape(&short_size(stats.bytes))
    );
    if stats.reserved_bytes > 0 {
        let _ = write!(out, " (+{} reserved)", escape(&short_size(stats.reserved_bytes)));
    }
    match stats.max_size {
        Some(max) if max > 0 => {
            let pct = (used as f64 / max as f64 * 100.0).min(100.0);
            let _ = write!(
                out,
                " of {} ({pct:.0}%)</p><svg width=\"300\" height=\"14\" role=\"img\" \
                 aria-label=\"{pct:.0}% used\"><rect width=\"300\" height=\"14\" fill=\"#ddd\"/>\
                 <rect width=\"{:.0}\" height=\"14\" fill=\"#48a\"/></svg>",
                escape(&short_size(max)),
                pct * 3.0
            );
        }
        _ => out.push_str(", no limit</p>"),
    }
    let _ = write!(
        out,
        "<p>{} blobs, {} manifests, {} records</p>",
        stats.blobs, stats.manifests, stats.records
    );
}

fn traffic(out: &mut String, f: &Figures) {
    out.push_str("<h2>Traffic</h2><ul>");
    if f.looked_up > 0.0 {
        let _ = write!(
            out,
            "<li>Hit ratio: {:.1}% ({} of {} requests answered from the cache)</li>",
            f.hits / f.looked_up * 100.0,
            f.hits,
            f.looked_up
        );
    } else {
        out.push_str("<li>Hit ratio: no requests yet</li>");
    }
    let _ = write!(
        out,
        "<li>Bytes served from the cache (not fetched upstream): {}</li>\
         <li>Blob downloads in progress: {}</li></ul>",
        escape(&short_size(f.bytes_from_cache as u64)),
        f.downloads
    );
    out.push_str("<h2>Upstreams</h2><table><tr><th>Upstream</th><th>State</th><th>Rate limit</th></tr>");
    for Upstream { host, down, quota } in &f.upstreams {
        let state = match down {
            true => "<span class=\"down\">down</span>",
            false => "up",
        };
        let quota = quota.map_or("not reported".to_string(), |(r, l)| format!("{r} of {l} left"));
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{state}</td><td>{}</td></tr>",
            escape(host),
            escape(&quota)
        );
    }
    out.push_str("</table>");
}

fn listing(out: &mut String, entries: &[ListEntry], now_ms: u64) {
    let _ = write!(out, "<h2>Cached images ({})</h2>", entries.len());
    out.push_str(
        "<table><tr><th>Image</th><th>Digest</th><th>Platforms</th><th>Size</th>\
         <th>Last pulled</th><th>Pinned</th></tr>",
    );
    for e in entries.iter().take(MAX_ROWS) {
        let _ = write!(
            out,
            "<tr><td>{}</td><td title=\"{}\"><code>{}</code></td><td>{}</td><td class=\"n\">{}</td>\
             <td>{}</td><td>{}</td></tr>",
            escape(&image(e)),
            escape(&e.digest),
            escape(short_digest(&e.digest)),
            escape(&e.platforms.join(", ")),
            escape(&short_size(e.size)),
            escape(&age(e.last_pulled_ms, now_ms)),
            if e.pinned { "pinned" } else { "" }
        );
    }
    out.push_str("</table>");
    if entries.len() > MAX_ROWS {
        let _ = write!(
            out,
            "<p>and {} more (see <code>regcache cache ls</code>)</p>",
            entries.len() - MAX_ROWS
        );
    }
}

/// The page. Blocking (it lists the cache): run it off the async threads.
pub(super) fn render(cache: &Arc<crate::cache::Cache>, figures: &Figures) -> String {
    let entries = cache.list(None);
    let stats = cache.stats();
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let mut out = format!(
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>regcache status</title>\
         <style>{STYLE}</style></head><body><h1>regcache {}</h1>",
        escape(env!("CARGO_PKG_VERSION"))
    );
    budget(&mut out, &stats);
    traffic(&mut out, figures);
    listing(&mut out, &entries, now_ms);
    out.push_str("</body></html>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_replaces_every_metacharacter() {
        assert_eq!(
            escape(r#"<a href="x?a=1&b='2'">"#),
            "&lt;a href=&quot;x?a=1&amp;b=&#39;2&#39;&quot;&gt;"
        );
        assert_eq!(escape("library/alpine:3.20"), "library/alpine:3.20");
        assert_eq!(escape("&amp;"), "&amp;amp;");
    }

    #[test]
    fn ages_read_short() {
        assert_eq!(age(Some(0), 90_000), "1m ago");
        assert_eq!(age(None, 5), "never");
    }
}
