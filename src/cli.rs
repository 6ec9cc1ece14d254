//! The operator commands (`regcache cache stats|gc|purge` today; prefetch, pin, export, import
//! and ls belong here too). They are clients of the admin API when a daemon owns the cache
//! directory, and open the directory themselves when none does. Rendering for people lives here, never in
//! the daemon.

pub mod cache_cmd;
pub mod ls;
pub mod prefetch_cmd;
mod prefetch_show;
pub mod render;
