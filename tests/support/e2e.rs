//! The end-to-end kit: the upstream side (`token_server`, `registry`: a `docker-registry`
//! child process, `images`: deterministic test images), the clients (`skopeo`, `http`,
//! `containerd_pull`: a containerd-like verifying pull, and `podman` with private storage and
//! configuration) and the helpers around them: tool discovery, mirror configuration for skopeo,
//! `dir:` layout comparison, regcache started in-process, and elapsed-time marks for the test
//! output.

pub mod containerd_pull;
pub mod http;
pub mod images;
pub mod podman;
pub mod pushed;
pub mod registry;
pub mod skopeo;
pub mod token_server;

use std::collections::BTreeMap;
use std::path::Path;

pub use containerd_pull::{containerd_pull, prefixed_pull, CONTAINERD_ACCEPT};
pub use http::HttpClient;
pub use skopeo::{Skopeo, SKOPEO_BIN};

/// Names of the required external tools that are missing.
pub fn missing_tools() -> Vec<String> {
    [registry::REGISTRY_BIN, SKOPEO_BIN]
        .into_iter()
        .filter(|tool| super::tools::find(tool).is_none())
        .map(str::to_string)
        .collect()
}

/// True when the external tools are present. Otherwise prints a loud notice and returns false
/// (the test skips), or panics when running under CI.
pub fn tools_present(test: &str) -> bool {
    let missing = missing_tools();
    if missing.is_empty() {
        return true;
    }
    super::tools::missing(
        test,
        &missing,
        "Install them with: apt-get install -y docker-registry skopeo containerd",
    );
    false
}

/// A `registries.conf` that sends `docker.io` to the mirror `mirror_location`
/// (for regcache the CRI-O / podman convention `127.0.0.1:PORT/docker.io`),
/// while the registry's own location is a dead loopback port (the discard
/// port 9) so a fallback can never leave the machine.
pub fn mirror_registries_conf(mirror_location: &str) -> String {
    format!(
        r#"unqualified-search-registries = []

[[registry]]
prefix = "docker.io"
location = "127.0.0.1:9"
insecure = true

[[registry.mirror]]
location = "{mirror_location}"
insecure = true
"#
    )
}

/// Every file (relative name → bytes) in a flat directory.
pub fn read_dir_files(dir: &Path) -> std::io::Result<BTreeMap<String, Vec<u8>>> {
    let mut files = BTreeMap::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_file() {
            files.insert(
                entry.file_name().to_string_lossy().into_owned(),
                std::fs::read(entry.path())?,
            );
        }
    }
    Ok(files)
}

/// Checks that two `dir:` layouts hold the same file names with the same
/// bytes; returns how many files were compared.
pub fn compare_dirs(expected: &Path, actual: &Path) -> Result<usize, String> {
    let a = read_dir_files(expected).map_err(|e| format!("read {}: {e}", expected.display()))?;
    let b = read_dir_files(actual).map_err(|e| format!("read {}: {e}", actual.display()))?;
    let names_a: Vec<&String> = a.keys().collect();
    let names_b: Vec<&String> = b.keys().collect();
    if names_a != names_b {
        return Err(format!(
            "file sets differ:\n  {}: {names_a:?}\n  {}: {names_b:?}",
            expected.display(),
            actual.display()
        ));
    }
    for (name, bytes) in &a {
        if &b[name] != bytes {
            return Err(format!(
                "{name} differs ({} bytes vs {} bytes)",
                bytes.len(),
                b[name].len()
            ));
        }
    }
    Ok(a.len())
}

/// True when `body` is an OCI distribution error document `{"errors":[...]}`
/// with at least one entry that has a `code`.
pub fn is_oci_error_body(body: &[u8]) -> bool {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("errors").and_then(|e| e.as_array()).cloned())
        .is_some_and(|errors| !errors.is_empty() && errors.iter().all(|e| e.get("code").is_some()))
}

/// regcache running in-process with `upstream_url` as its only upstream (`docker.io`, the
/// default), caching in `cache`. `RUST_LOG=regcache=debug` shows its log in test output.
pub async fn start_mirror(upstream_url: &str, cache: &Path, tag_ttl: &str) -> regcache::app::Running {
    start_mirror_also_as(upstream_url, cache, tag_ttl, &[]).await
}

/// As [`start_mirror`], with the same registry configured once more under each of `hosts`
/// (its own `127.0.0.1:PORT`, say): a site that mirrors a registry under its own address.
pub async fn start_mirror_also_as(
    upstream_url: &str,
    cache: &Path,
    tag_ttl: &str,
    hosts: &[&str],
) -> regcache::app::Running {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let mut text = format!(
        r#"
listen = "127.0.0.1:0"
builtin_upstreams = false
[admin]
listen = "127.0.0.1:0"
[cache]
dir = "{dir}"
tag_ttl = "{tag_ttl}"
revalidate_timeout = "2s"
[[upstreams]]
host = "docker.io"
url = "{upstream_url}"
default = true
"#,
        dir = cache.display(),
    );
    for host in hosts {
        text.push_str(&format!(
            "[[upstreams]]\nhost = \"{host}\"\nurl = \"{upstream_url}\"\n"
        ));
    }
    let config = regcache::config::Config::from_toml_str(&text).expect("regcache config");
    regcache::app::start(config).await.expect("start regcache")
}

/// regcache running in-process on loopback with its cache in a new temp dir (returned: it lives
/// as long as the mirror should) and the rest of its configuration from `toml` (upstreams,
/// `[auth]`, `[fetch]`).
pub async fn start_mirror_with(toml: &str) -> (regcache::app::Running, tempfile::TempDir) {
    let cache = tempfile::Builder::new()
        .prefix("regcache-e2e-cache-")
        .tempdir()
        .expect("cache dir");
    let text = format!(
        "listen = \"127.0.0.1:0\"\nbuiltin_upstreams = false\n[admin]\nlisten = \"127.0.0.1:0\"\n\
         [cache]\ndir = \"{}\"\n{toml}",
        cache.path().display()
    );
    let config = regcache::config::Config::from_toml_str(&text).expect("regcache config");
    let running = regcache::app::start(config).await.expect("start regcache");
    (running, cache)
}

/// Elapsed-time log lines for an end-to-end test's output, prefixed with the test's label.
pub struct Clock(pub &'static str, pub std::time::Instant);

impl Clock {
    pub fn new(label: &'static str) -> Clock {
        Clock(label, std::time::Instant::now())
    }

    pub fn mark(&self, what: &str) {
        eprintln!("[{} {:>6.2}s] {what}", self.0, self.1.elapsed().as_secs_f64());
    }
}

/// Runs a client command to its end within `limit`: (stdout, stderr) on success; otherwise a
/// message with `what`, the exit status and both streams.
pub async fn run(
    mut command: tokio::process::Command,
    what: &str,
    limit: std::time::Duration,
) -> Result<(String, String), String> {
    let output = tokio::time::timeout(limit, command.output())
        .await
        .map_err(|_| format!("{what} timed out"))?
        .map_err(|e| format!("{what}: {e}"))?;
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    if output.status.success() {
        Ok((stdout, stderr))
    } else {
        Err(format!(
            "{what} failed ({}):\nstdout: {}\nstderr: {}",
            output.status,
            stdout.trim(),
            stderr.trim()
        ))
    }
}
