//! The shared store's budget, enforced once for the whole cluster by `regcache bucket gc` (run
//! by one operator job, a Kubernetes CronJob or a timer, never by every replica).
//!
//! An object store keeps no access times, so the replicas say what they used: every minute each
//! writes the blobs and manifests it served, filled or read since the last minute as one small
//! object of its own (`uses/<ms>-<pid>-<random>.json`, create-only: replicas never write the
//! same object). The collector lists the content, merges every use record with the objects'
//! modification times into a last use per object, and deletes the least recently used until the
//! content fits the budget, never anything used within `grace`: a read in progress on any
//! replica (a fill from the bucket, a ranged read) was noted when it started and reported within
//! a minute, so with a grace well above a minute plus the longest read, nothing is deleted under
//! a reader. It then writes the merged last uses of what is left as one record and deletes the
//! records it read (a record written meanwhile is read next time; its uses are recent anyway).
//! Tag records and repository links are small and stay; a tag whose manifest went is looked up
//! upstream again, as a local miss is. Content a hosted repository links (`protect`: the hosted
//! namespaces) was pushed, not fetched, and is never deleted.

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use serde::Serialize;

use super::origin::OriginError;
use super::shared::{Listed, Shared};
use super::uses::{now_ms, USES};

/// What a collection found and did.
#[derive(Debug, Default, Clone, Serialize, PartialEq, Eq)]
pub struct BucketGc {
    /// Blobs and manifests in the bucket, and their bytes, before.
    pub objects: u64,
    pub bytes: u64,
    pub budget: u64,
    /// Deleted (or, in a dry run, to delete): count and bytes.
    pub deleted: u64,
    pub deleted_bytes: u64,
    /// Bytes still over the budget afterwards: what is left was all used within the grace.
    pub over_budget: u64,
    /// Use records merged.
    pub use_records: u64,
    /// Deletions that failed (the object stays; the next run tries again).
    pub errors: u64,
    pub dry_run: bool,
}

async fn read_uses(store: &dyn Shared, records: &[Listed]) -> Result<HashMap<String, u64>, OriginError> {
    let mut last: HashMap<String, u64> = HashMap::new();
    for r in records {
        let Some((body, _)) = store.get_small(&r.key).await? else {
            continue;
        };
        // A record that is not ours is skipped, not fatal.
        let Ok(uses) = serde_json::from_slice::<HashMap<String, u64>>(&body) else {
            tracing::warn!(key = r.key, "not a use record; skipped");
            continue;
        };
        for (key, at) in uses {
            let e = last.entry(key).or_default();
            *e = (*e).max(at);
        }
    }
    Ok(last)
}

/// Deletes the least recently used blobs and manifests until they fit `budget` bytes, never
/// one used within `grace` (see the module's notes). With `dry_run` nothing is deleted or
/// written.
pub async fn collect(
    store: &dyn Shared,
    budget: u64,
    grace: Duration,
    dry_run: bool,
    protect: &[String],
) -> Result<BucketGc, OriginError> {
    let now = now_ms();
    let mut protected = std::collections::HashSet::new();
    for ns in protect {
        for link in store.list(&format!("records/{ns}/")).await? {
            let Some((_, name)) = link.key.rsplit_once("/@links/") else {
                continue;
            };
            let Some((alg, hex)) = name.split_once('-') else {
                continue;
            };
            protected.insert(format!("blobs/{alg}/{hex}"));
            protected.insert(format!("manifests/{alg}/{hex}"));
        }
    }
    let mut content = store.list("blobs/").await?;
    content.extend(store.list("manifests/").await?);
    let records = store.list(USES).await?;
    let uses = read_uses(store, &records).await?;
    let last_use = |o: &Listed| o.modified_ms.max(uses.get(&o.key).copied().unwrap_or(0));
    content.sort_by_key(|o| (last_use(o), o.key.clone()));
    let mut report = BucketGc {
        objects: content.len() as u64,
        bytes: content.iter().map(|o| o.size).sum(),
        budget,
        use_records: records.len() as u64,
        dry_run,
        ..BucketGc::default()
    };
    let mut total = report.bytes;
    let cutoff = now.saturating_sub(grace.as_millis() as u64);
    let mut kept = Vec::new();
    let mut content = content.into_iter();
    // Oldest last use first: once one is within the grace, so is everything after it.
    while total > budget {
        let Some(o) = content.next() else { break };
        if protected.contains(&o.key) {
            kept.push(o);
            continue;
        }
        if last_use(&o) > cutoff {
            kept.push(o);
            break;
        }
        let deleted = match dry_run {
            true => Ok(()),
            false => store.delete(&o.key).await,
        };
        match deleted {
            Ok(()) => {
                total -= o.size;
                report.deleted += 1;
                report.deleted_bytes += o.size;
            }
            Err(e) => {
                tracing::warn!(key = o.key, error = %e, "cannot delete from the shared store");
                report.errors += 1;
                kept.push(o);
            }
        }
    }
    kept.extend(content);
    report.over_budget = total.saturating_sub(budget);
    if !dry_run && !records.is_empty() {
        merge_records(store, &records, &uses, &kept, now).await?;
    }
    Ok(report)
}

/// Writes the last uses of what is kept as one record, then deletes the records that were read.
async fn merge_records(
    store: &dyn Shared,
    records: &[Listed],
    uses: &HashMap<String, u64>,
    kept: &[Listed],
    now: u64,
) -> Result<(), OriginError> {
    let merged: HashMap<&str, u64> = kept
        .iter()
        .filter_map(|o| {
            uses.get(&o.key)
                .filter(|at| **at > o.modified_ms)
                .map(|at| (o.key.as_str(), *at))
        })
        .collect();
    if !merged.is_empty() {
        let body: Bytes = serde_json::to_vec(&merged)?.into();
        let key = format!("{USES}{now}-merged-{}.json", std::process::id());
        store.put_small(&key, body, None, false).await?;
    }
    for r in records {
        if let Err(e) = store.delete(&r.key).await {
            tracing::warn!(key = r.key, error = %e, "cannot delete a merged use record");
        }
    }
    Ok(())
}
