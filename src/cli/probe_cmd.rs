//! `regcache check-config --probe`: after the configuration checks out, ask every upstream (and
//! each of its fallbacks) for `GET /v2/` the way the daemon would, through the egress proxy
//! where one is set, with its credentials, and say what answered. Offline upstreams are not
//! contacted. All probes run at once; the report keeps the configuration's order.

use std::sync::Arc;

use futures_util::future::join_all;

use crate::config::Config;
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
    Ok((out, all_ok))
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
