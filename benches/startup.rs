//! How long the daemon takes to be ready on a large cache. Generates the blob files of a cache
//! directly (100,000 by default; `REGCACHE_BENCH_BLOBS=N` to change, `REGCACHE_BENCH_DIR=PATH` to
//! put them somewhere else than the system temp dir), then times `app::start` until it returns
//! with its listeners bound and the index rebuilt: once without a recency snapshot (a first start
//! or after a crash) and once with one (a restart after a clean shutdown). Prints the figures;
//! it never fails on a time.
//!
//! `cargo bench --bench startup`

use std::time::{Duration, Instant};

use regcache::cache::Layout;
use regcache::config::Config;
use regcache::oci::Digest;

fn main() {
    let n: usize = std::env::var("REGCACHE_BENCH_BLOBS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let base = std::env::var_os("REGCACHE_BENCH_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let dir = tempfile::tempdir_in(base).expect("temp dir");
    let layout = Layout::new(dir.path());
    layout.create().expect("cache layout");

    let made = Instant::now();
    let mut bytes = 0u64;
    for i in 0..n {
        let content = format!("regcache startup benchmark blob {i}\n").repeat(1 + i % 7);
        let digest = Digest::sha256_of(content.as_bytes());
        std::fs::write(layout.blob(&digest), &content).expect("write blob");
        bytes += content.len() as u64;
    }
    println!(
        "generated {n} blobs ({bytes} bytes) in {:.2?} under {}",
        made.elapsed(),
        dir.path().display()
    );

    let toml = format!(
        "listen = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\n[log]\nlevel = \"warn\"\n\
         [cache]\ndir = \"{}\"\nmax_size = \"50GiB\"\n",
        dir.path().display()
    );
    let config = Config::from_toml_str(&toml).expect("config");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut times: Vec<(&str, Duration)> = Vec::new();
    for label in [
        "first start, no recency snapshot",
        "restart, with the recency snapshot",
        "restart again",
    ] {
        let started = Instant::now();
        let running = rt
            .block_on(regcache::app::start(config.clone()))
            .expect("daemon starts");
        let ready = started.elapsed();
        let cached = running.metrics().cache.blobs.get();
        assert_eq!(cached as usize, n, "every blob was indexed");
        println!("{label}: ready in {ready:.2?} with {cached} blobs indexed");
        times.push((label, ready));
        let stopping = Instant::now();
        rt.block_on(running.shutdown());
        println!("  shutdown (writes the snapshot) took {:.2?}", stopping.elapsed());
    }
    let worst = times.iter().map(|(_, t)| *t).max().unwrap_or_default();
    println!("slowest start with {n} blobs: {worst:.2?} (goal: under 2 s)");
}
