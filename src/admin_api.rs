//! The admin API's paths and payloads, shared by the daemon (`server/admin.rs`) and the
//! operator commands (`cli/`), so the two cannot drift apart.

pub use crate::cache::{GcReport, Stats};

/// `GET`: the cache index statistics (`Stats` as JSON).
pub const CACHE_STATS: &str = "/admin/cache";
/// `POST [?to=SIZE]`: evict now, to the low watermark or down to SIZE (`GcReport` as JSON).
pub const GC: &str = "/admin/gc";
/// Prometheus text format.
pub const METRICS: &str = "/metrics";
/// The process answers.
pub const HEALTHZ: &str = "/healthz";
/// Ready for traffic (fails while draining).
pub const READYZ: &str = "/readyz";

/// The gc path with its target, if any.
pub fn gc_path(to: Option<u64>) -> String {
    match to {
        Some(n) => format!("{GC}?to={n}"),
        None => GC.to_string(),
    }
}
