//! The operator commands (`regcache cache stats|ls|gc|purge`, `prefetch`, `unpin`, `export`,
//! `import`, `bucket gc`). They are clients of the admin API when a daemon owns the cache
//! directory, and open the directory themselves when none does. Rendering for people lives here, never in
//! the daemon.

pub mod args;
pub mod bucket_cmd;
pub mod bundle_cmd;
pub mod cache_cmd;
pub mod ls;
pub mod manifest_images;
pub mod prefetch_cmd;
mod prefetch_show;
pub mod probe_cmd;
pub mod render;
