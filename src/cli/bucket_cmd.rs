//! `regcache bucket gc`: the shared bucket's budget (`[storage] max_size`), enforced once for
//! the cluster by whoever runs it (a CronJob, a timer), on the bucket directly: no daemon is
//! asked, and replicas keep serving meanwhile (what they used within `gc_grace` stays; see
//! `cache/shared_gc.rs`).

use anyhow::{anyhow, bail};

use crate::cache::shared_gc::{self, BucketGc};
use crate::config::{Config, StorageConfig};
use crate::units::short_size;

/// Trims the bucket to `to` bytes (or `[storage] max_size`); with `dry_run`, only says what would go.
pub async fn gc(config: &Config, to: Option<u64>, dry_run: bool) -> anyhow::Result<BucketGc> {
    let StorageConfig::S3(s3) = &config.storage else {
        bail!("no shared bucket is configured ([storage] kind = \"s3\")");
    };
    let budget = to
        .or(s3.max_size)
        .ok_or_else(|| anyhow!("no budget: give --to SIZE or set [storage] max_size"))?;
    let bucket = crate::bucket::open(s3, &config.fetch.egress)?;
    let hosted: Vec<String> = config.hosted.iter().map(|h| h.prefix.clone()).collect();
    shared_gc::collect(&*bucket, budget, s3.gc_grace, dry_run, &hosted)
        .await
        .map_err(|e| anyhow!("bucket {}: {e}", s3.bucket))
}

/// The report for people.
pub fn render(r: &BucketGc) -> String {
    let verb = if r.dry_run { "would delete" } else { "deleted" };
    let mut out = format!(
        "bucket held {} objects, {} (budget {}); {verb} {} objects, {}\n",
        r.objects,
        short_size(r.bytes),
        short_size(r.budget),
        r.deleted,
        short_size(r.deleted_bytes),
    );
    if r.over_budget > 0 {
        out.push_str(&format!(
            "still {} over the budget: the rest was used within gc_grace\n",
            short_size(r.over_budget)
        ));
    }
    if r.errors > 0 {
        out.push_str(&format!(
            "{} deletions failed (tried again next time)\n",
            r.errors
        ));
    }
    out
}
