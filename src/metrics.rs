//! Every Prometheus metric regcache exports, registered in one place on a per-daemon registry,
//! grouped by the component that updates it (`request`, `cache`, `upstream`). Names are
//! `regcache_<what>_<unit>[_total]`; labels come only from bounded sets, and call sites pass
//! typed values (`RequestKind`, `Uncached`, `StatusClass`, an upstream's configured host), never
//! repository names, tags or digests.

mod cache;
mod request;
mod upstream;

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

pub use cache::{CacheMetrics, Uncached};
pub use request::{RequestKind, RequestMetrics, Served};
pub use upstream::{StatusClass, UpstreamCounters, UpstreamMetrics};

pub struct Metrics {
    registry: Registry,
    pub request: RequestMetrics,
    pub cache: CacheMetrics,
    pub upstream: UpstreamMetrics,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let r = Registry::new();
        Metrics {
            request: RequestMetrics::register(&r),
            cache: CacheMetrics::register(&r),
            upstream: UpstreamMetrics::register(&r),
            registry: r,
        }
    }

    /// Every metric's current samples (the status page reads them).
    pub fn gather(&self) -> Vec<prometheus::proto::MetricFamily> {
        self.registry.gather()
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }
}

fn counter_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("metric definition is valid");
    r.register(Box::new(c.clone())).expect("metric names are unique");
    c
}

fn counter(r: &Registry, name: &str, help: &str) -> IntCounter {
    let c = IntCounter::new(name, help).expect("metric definition is valid");
    r.register(Box::new(c.clone())).expect("metric names are unique");
    c
}

fn gauge_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let g = IntGaugeVec::new(Opts::new(name, help), labels).expect("metric definition is valid");
    r.register(Box::new(g.clone())).expect("metric names are unique");
    g
}

fn gauge(r: &Registry, name: &str, help: &str) -> IntGauge {
    let g = IntGauge::new(name, help).expect("metric definition is valid");
    r.register(Box::new(g.clone())).expect("metric names are unique");
    g
}

fn histogram_vec(r: &Registry, name: &str, help: &str, buckets: Vec<f64>, labels: &[&str]) -> HistogramVec {
    let h = HistogramVec::new(HistogramOpts::new(name, help).buckets(buckets), labels)
        .expect("metric definition is valid");
    r.register(Box::new(h.clone())).expect("metric names are unique");
    h
}
