//! Failed logins per client address: after `MAX_FAILURES` within `WINDOW` of the first, every
//! login from that address is refused for `BLOCK`. Memory is bounded (moka, `MAX_ADDRESSES`);
//! under a flood of addresses the least useful entries go first, which only forgets failures.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use moka::sync::Cache;

pub(super) const MAX_FAILURES: u32 = 10;
const WINDOW: Duration = Duration::from_secs(60);
const BLOCK: Duration = Duration::from_secs(60);
const MAX_ADDRESSES: u64 = 100_000;

pub(super) struct Limiter {
    failures: Cache<IpAddr, Arc<AtomicU32>>,
    blocked: Cache<IpAddr, ()>,
}

impl Limiter {
    pub(super) fn new() -> Limiter {
        Limiter {
            failures: Cache::builder()
                .max_capacity(MAX_ADDRESSES)
                .time_to_live(WINDOW)
                .build(),
            blocked: Cache::builder()
                .max_capacity(MAX_ADDRESSES)
                .time_to_live(BLOCK)
                .build(),
        }
    }

    pub(super) fn is_blocked(&self, peer: IpAddr) -> bool {
        self.blocked.contains_key(&peer)
    }

    pub(super) fn failed(&self, peer: IpAddr) {
        let count = self.failures.get_with(peer, Default::default);
        if count.fetch_add(1, Ordering::Relaxed) + 1 >= MAX_FAILURES {
            self.failures.invalidate(&peer);
            self.blocked.insert(peer, ());
            tracing::warn!(%peer, "too many failed logins; refusing logins from this address for a while");
        }
    }
}
