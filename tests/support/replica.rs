//! A regcache replica of a cluster run as its own process (the built binary), so a test can kill
//! it with SIGKILL: its configuration (registry and admin ports picked by the kernel, its own
//! cache directory, the shared S3 bucket, one default upstream), its JSON log in a file, the
//! addresses it logged, and its admin `/metrics` read back.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The shared bucket every replica of a test uses.
#[derive(Clone, Debug)]
pub struct BucketConfig {
    pub endpoint: String,
    pub bucket: String,
    pub region: String,
    pub access_key_id: String,
    /// A file holding the secret access key.
    pub secret_file: PathBuf,
}

/// The configuration of one replica: `cache` as its cache directory, `upstream_url` as the
/// default upstream `docker.io`, and the shared bucket.
pub fn config(cache: &Path, upstream_url: &str, bucket: &BucketConfig) -> String {
    format!(
        r#"listen = "127.0.0.1:0"
builtin_upstreams = false
[admin]
listen = "127.0.0.1:0"
[cache]
dir = "{cache}"
tag_ttl = "1h"
revalidate_timeout = "2s"
[storage]
kind = "s3"
bucket = "{bucket_name}"
endpoint = "{endpoint}"
region = "{region}"
path_style = true
access_key_id = "{key}"
secret_access_key_file = "{secret}"
[[upstreams]]
host = "docker.io"
url = "{upstream_url}"
default = true
"#,
        cache = cache.display(),
        bucket_name = bucket.bucket,
        endpoint = bucket.endpoint,
        region = bucket.region,
        key = bucket.access_key_id,
        secret = bucket.secret_file.display(),
    )
}

/// A running replica.
pub struct Replica {
    pub name: String,
    child: Child,
    addr: SocketAddr,
    admin: SocketAddr,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Replica {
    /// Starts `regcache serve` with the configuration [`config`] makes for a new cache directory
    /// and waits until it logged its addresses.
    pub async fn start(name: &str, upstream_url: &str, bucket: &BucketConfig) -> Result<Replica, String> {
        let dir = tempfile::Builder::new()
            .prefix(&format!("regcache-{name}-"))
            .tempdir()
            .map_err(|e| format!("{name}: dir: {e}"))?;
        let cache = dir.path().join("cache");
        let conf = dir.path().join("regcache.toml");
        std::fs::write(&conf, config(&cache, upstream_url, bucket)).map_err(|e| format!("{name}: {e}"))?;
        let log = dir.path().join("regcache.log");
        let file = std::fs::File::create(&log).map_err(|e| format!("{name}: log: {e}"))?;
        let child = Command::new(env!("CARGO_BIN_EXE_regcache"))
            .args(["serve", "--log-format", "json", "--config"])
            .arg(&conf)
            .env("RUST_LOG", "regcache=info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .map_err(|e| format!("{name}: spawn regcache: {e}"))?;
        let mut replica = Replica {
            name: name.to_string(),
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            admin: SocketAddr::from(([127, 0, 0, 1], 0)),
            log,
            _dir: dir,
        };
        let started = Instant::now();
        loop {
            if let Some(line) = replica
                .log_lines()
                .into_iter()
                .find(|v| v["message"] == "regcache listening")
            {
                let addr = |field: &str| line[field].as_str().and_then(|a| a.parse().ok());
                match (addr("listen"), addr("admin")) {
                    (Some(listen), Some(admin)) => {
                        (replica.addr, replica.admin) = (listen, admin);
                        return Ok(replica);
                    }
                    _ => return Err(format!("{name}: unexpected start line {line}")),
                }
            }
            if let Ok(Some(status)) = replica.child.try_wait() {
                return Err(format!("{name} exited ({status}):\n{}", replica.log()));
            }
            if started.elapsed() > Duration::from_secs(20) {
                return Err(format!("{name} did not start in 20 s:\n{}", replica.log()));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The registry port.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Everything it logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn log_lines(&self) -> Vec<serde_json::Value> {
        self.log()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Its admin `/metrics` text.
    pub async fn metrics(&self) -> Result<String, String> {
        let url = format!("http://{}/metrics", self.admin);
        let client = reqwest::Client::builder()
            .no_proxy()
            .build()
            .map_err(|e| e.to_string())?;
        let response = client.get(&url).send().await.map_err(|e| format!("{url}: {e}"))?;
        response.text().await.map_err(|e| format!("{url}: {e}"))
    }

    /// The sum of the samples of `name` whose labels contain every `labels` pair (`op="x"`).
    pub async fn metric(&self, name: &str, labels: &[&str]) -> f64 {
        let text = self.metrics().await.unwrap_or_default();
        sum_samples(&text, name, labels)
    }

    /// SIGKILL, as a crashed machine or an OOM kill would end it.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// The sum of the samples of metric `name` (Prometheus text format) whose label set contains
/// every one of `labels`.
pub fn sum_samples(text: &str, name: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (metric, set) = series.split_once('{').unwrap_or((series, ""));
            (metric == name && labels.iter().all(|p| set.contains(p))).then(|| value.parse::<f64>().ok())?
        })
        .sum()
}
