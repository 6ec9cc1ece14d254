//! The behaviour tests that need nothing but Rust, in one test binary so the daemon is linked
//! once: regcache runs in-process on 127.0.0.1:0 in front of an in-process fake upstream (or,
//! in `process`, `cache_commands` and parts of `upstream_credentials`, as the real binary).
//! One module per capability. Loopback only.

/// Helpers from `tests/support/`; this binary declares the ones it uses (`tests/e2e` declares
/// its own), so no helper is compiled where nothing calls it.
#[path = "../support"]
mod support {
    pub mod binary;
    pub mod commands;
    pub mod connect_proxy;
    pub mod daemon;
    pub mod fake;
    pub mod listeners;
    pub mod oci_push;
    pub mod push_spec;
    pub mod socks_proxy;
    pub mod tools;
}

mod admin_token;
mod bucket_gc;
mod bundles;
mod cache_commands;
mod cache_listing;
mod client_auth;
mod config_file;
mod config_properties;
mod deploy_files;
mod disk_budget;
mod egress_proxy;
mod egress_socks;
mod host_port_prefix;
mod hosted;
mod hostile;
mod lazy_ranges;
mod listeners;
mod operations;
mod prefetch;
mod process;
mod pull_api;
mod purge;
mod refused_writes;
mod repository_links;
mod resilience;
mod sendfile;
mod shared_store;
mod shutdown;
mod single_flight;
mod slow_clients;
mod spec_read_only;
mod stale_while_revalidate;
mod status_page;
mod tag_freshness;
mod tag_lists;
mod tiers;
mod tls;
mod upstream_auth;
mod upstream_credentials;
mod upstream_fallback;
mod upstream_limits;
mod upstream_probe;
mod upstream_redirects;
mod upstream_tls;
