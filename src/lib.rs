//! regcache: a pull-through caching mirror for container registries (OCI Distribution API).
//! `app::start` runs the whole daemon from a validated `config::Config`; the binary in
//! `main.rs` only parses the command line around it.
#![forbid(unsafe_code)]
#![warn(unreachable_pub)]

pub mod admin_api;
pub mod app;
pub mod auth;
pub mod bucket;
pub mod cache;
pub mod cli;
pub mod config;
pub mod metrics;
pub mod oci;
pub mod registry;
pub mod secret;
pub mod server;
pub mod splice;
pub mod streams;
pub mod telemetry;
pub mod tls_files;
pub mod units;
pub mod upstream;
