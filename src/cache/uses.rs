//! What a replica used lately, for the shared bucket's budget (`shared_gc.rs`): the blobs and
//! manifests it served, filled or read since the last report, written every minute as one small
//! object of its own under `uses/`.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;

/// Where the use records live.
pub(super) const USES: &str = "uses/";

pub(super) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The keys used since the last `take`, with the time of the last use.
#[derive(Default)]
pub(super) struct Uses(Mutex<HashMap<String, u64>>);

impl Uses {
    pub(super) fn note(&self, key: String) {
        let mut uses = self.0.lock().unwrap_or_else(|e| e.into_inner());
        uses.insert(key, now_ms());
    }

    /// The record of the uses noted since the last call (its key and body), if any.
    pub(super) fn take(&self) -> Option<(String, Bytes)> {
        let taken = std::mem::take(&mut *self.0.lock().unwrap_or_else(|e| e.into_inner()));
        if taken.is_empty() {
            return None;
        }
        let mut random = [0u8; 8];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut random).ok()?;
        let hex: String = random.iter().map(|b| format!("{b:02x}")).collect();
        let key = format!("{USES}{}-{}-{hex}.json", now_ms(), std::process::id());
        Some((key, serde_json::to_vec(&taken).ok()?.into()))
    }
}
