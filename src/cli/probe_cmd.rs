//! `regcache check-config --probe`: after the configuration checks out, ask every upstream (and
//! each of its fallbacks) for `GET /v2/` the way the daemon would, through the egress proxy
//! where one is set, with its credentials, and say what answered; and, with `[storage] kind =
//! "s3"`, the shared bucket for one object's metadata (a `HEAD`; absent is an answer), with the
//! daemon's client and credentials. Offline upstreams are not contacted. All probes run at once;
//! the report keeps the configuration's order.

use std::sync::Arc;

use futures_util::future::join_all;

use crate::cache::shared::Shared as _;
use crate::config::{Config, S3Config, StorageConfig};
use crate::metrics::Metrics;
use crate::upstream::{Upstream, Upstreams};

/// The report, one line per upstream and fallback, and whether every probe was answered.
pub async fn probe_all(config: &Config) -> Result<(String, bool), String> {
    let metrics = Arc::new(Metrics::new());
    let upstreams = Upstreams::from_config(config, &metrics).map_err(|e| e.to_string())?;
    let mut out = format!(
        "probing {} upstreams (connections: {}):\n",
        upstreams.all().len(),
        config.fetch.egress.describe()
    );
    let lines = join_all(upstreams.all().iter().map(|u| async move {
        let mut lines = vec![line(u, "  ", u.host()).await];
        for f in u.fallbacks() {
            lines.push(line(f, "    ", "fallback").await);
        }
        lines
    }))
    .await;
    let mut all_ok = true;
    for (text, ok) in lines.into_iter().flatten() {
        all_ok &= ok;
        out.push_str(&text);
    }
    if let StorageConfig::S3(s3) = &config.storage {
        let (text, ok) = bucket_line(s3, config).await;
        all_ok &= ok;
        out.push_str(&text);
    }
    Ok((out, all_ok))
}

/// The shared bucket asked for an object's metadata.
async fn bucket_line(s3: &S3Config, config: &Config) -> (String, bool) {
    let name = format!(
        "  shared store s3 bucket {} at {}",
        s3.bucket,
        s3.endpoint.as_deref().unwrap_or("AWS S3")
    );
    let bucket = match crate::bucket::open(s3, &config.fetch.egress) {
        Ok(b) => b,
        Err(e) => return (format!("{name}: FAILED: {e}\n"), false),
    };
    let start = std::time::Instant::now();
    match bucket.head("regcache-probe").await {
        Ok(_) => (
            format!("{name}: ok in {} ms\n", start.elapsed().as_millis()),
            true,
        ),
        Err(e) => (format!("{name}: FAILED: {e}\n"), false),
    }
}

async fn line(u: &Upstream, indent: &str, name: &str) -> (String, bool) {
    let url = u.config().base_url();
    if u.is_offline() {
        return (format!("{indent}{name} {url}: offline, not contacted\n"), true);
    }
    match u.probe().await {
        Ok(took) => (
            format!("{indent}{name} {url}: ok in {} ms\n", took.as_millis()),
            true,
        ),
        Err(e) => (format!("{indent}{name} {url}: FAILED: {e}\n"), false),
    }
}
