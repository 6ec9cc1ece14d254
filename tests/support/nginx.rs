//! nginx as the cluster's balancer, run by the test with the shipped configuration
//! (`deploy/cluster/nginx.conf`) changed only where a machine's own values go: the replicas of
//! `upstream regcache_replicas` (their parameters kept), the listen port, the log files, the
//! pid file and the temporary directories (all in a temporary directory), and `user root;`
//! (the test runs as root; a worker needs nothing else). Everything else, the routing map, the
//! hash, the keepalive and the proxy settings, is the shipped text. Started in the foreground
//! in its own process group; dropping [`Nginx`] stops the group (SIGTERM, then SIGKILL).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The nginx binary.
pub const NGINX_BIN: &str = "nginx";
/// Where Debian puts it, outside an unprivileged user's PATH.
const SBIN: &str = "/usr/sbin/nginx";
/// How to get it.
pub const INSTALL: &str = "apt-get install -y nginx-light (or nginx-core)";
/// The shipped balancer configuration, relative to the repository.
pub const SHIPPED: &str = "deploy/cluster/nginx.conf";

/// A running nginx.
pub struct Nginx {
    child: Child,
    addr: SocketAddr,
    dir: tempfile::TempDir,
}

/// The shipped configuration `text` with the replicas, `listen` port and paths under `dir` put
/// in. Panics when the shipped text no longer has a line this relies on.
pub fn derive_config(text: &str, replicas: &[SocketAddr], listen: SocketAddr, dir: &Path) -> String {
    let temp_modules = compiled_temp_paths();
    let mut out = String::new();
    let (mut in_upstream, mut servers_written, mut listens) = (false, 0, 0);
    for line in text.lines() {
        let code = line.split('#').next().unwrap_or("").trim();
        let word = code.split_whitespace().next().unwrap_or("");
        if code.starts_with("upstream regcache_replicas") {
            in_upstream = true;
        } else if in_upstream && code == "}" {
            in_upstream = false;
        }
        match word {
            "user" => out.push_str("user root;\n"),
            // Given on the command line (`-g`), where a second one would be an error.
            "pid" => {}
            "access_log" => out.push_str(&format!("access_log {};\n", dir.join("access.log").display())),
            "error_log" => out.push_str(&format!("error_log {} info;\n", dir.join("error.log").display())),
            "listen" => {
                listens += 1;
                out.push_str(&format!("listen {listen};\n"));
            }
            "server" if in_upstream => {
                // The shipped parameters of the first server line go to every replica.
                let params = code
                    .trim_end_matches(';')
                    .split_whitespace()
                    .skip(2)
                    .collect::<Vec<_>>();
                if servers_written == 0 {
                    for replica in replicas {
                        out.push_str(&format!("server {replica} {};\n", params.join(" ")));
                    }
                }
                servers_written += 1;
            }
            "http" => {
                out.push_str(line);
                out.push('\n');
                for module in ["client_body", "proxy"].iter().chain(&temp_modules) {
                    let path = dir.join(format!("{module}_temp"));
                    out.push_str(&format!("{module}_temp_path {};\n", path.display()));
                }
            }
            _ => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    assert!(
        servers_written > 0,
        "no server line in upstream regcache_replicas of {SHIPPED}"
    );
    assert_eq!(listens, 1, "expected one listen line in {SHIPPED}");
    out
}

/// The nginx binary: on PATH, or in /usr/sbin.
pub fn binary() -> Option<PathBuf> {
    let sbin = Path::new(SBIN);
    crate::support::tools::find(NGINX_BIN).or_else(|| sbin.is_file().then(|| sbin.to_path_buf()))
}

/// The optional modules with temporary directories (`fastcgi`, `uwsgi`, `scgi`) this nginx has:
/// each compiled-in one defaults to a path under /var/lib/nginx, which the test does not use.
fn compiled_temp_paths() -> Vec<&'static str> {
    let output = Command::new(binary().unwrap_or_else(|| NGINX_BIN.into()))
        .arg("-V")
        .output();
    let configure = output
        .map(|o| String::from_utf8_lossy(&o.stderr).into_owned())
        .unwrap_or_default();
    ["fastcgi", "uwsgi", "scgi"]
        .into_iter()
        .filter(|m| !configure.contains(&format!("--without-http_{m}_module")))
        .collect()
}

impl Nginx {
    /// Starts nginx with the shipped configuration routed to `replicas`, on a free loopback
    /// port, and waits until it accepts connections.
    pub async fn start(shipped: &Path, replicas: &[SocketAddr]) -> Result<Nginx, String> {
        crate::support::netns::assert_isolated();
        let dir = tempfile::Builder::new()
            .prefix("regcache-nginx-")
            .tempdir()
            .map_err(|e| format!("nginx dir: {e}"))?;
        let text = std::fs::read_to_string(shipped).map_err(|e| format!("{}: {e}", shipped.display()))?;
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| format!("free port: {e}"))?;
        let conf = dir.path().join("nginx.conf");
        let derived = derive_config(&text, replicas, addr, dir.path());
        std::fs::write(&conf, derived).map_err(|e| format!("nginx.conf: {e}"))?;
        let error_log = dir.path().join("error.log");
        let globals = format!(
            "daemon off; pid {}; error_log {} info;",
            dir.path().join("nginx.pid").display(),
            error_log.display()
        );
        let mut command = Command::new(binary().ok_or("nginx is not installed")?);
        command
            .arg("-p")
            .arg(dir.path())
            .arg("-e")
            .arg(&error_log)
            .arg("-c")
            .arg(&conf)
            .args(["-g", &globals])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        std::os::unix::process::CommandExt::process_group(&mut command, 0);
        let child = command.spawn().map_err(|e| format!("spawn nginx: {e}"))?;
        let mut nginx = Nginx { child, addr, dir };
        let started = Instant::now();
        loop {
            if let Ok(Some(status)) = nginx.child.try_wait() {
                return Err(format!("nginx exited ({status}):\n{}", nginx.error_log()));
            }
            if tokio::net::TcpStream::connect(addr).await.is_ok() {
                return Ok(nginx);
            }
            if started.elapsed() > Duration::from_secs(10) {
                return Err(format!("nginx did not listen in 10 s:\n{}", nginx.error_log()));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `127.0.0.1:PORT`.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// What nginx has logged as errors so far.
    pub fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("error.log")).unwrap_or_default()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        crate::support::process_group::stop(&mut self.child);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shipped file still has every line the derivation replaces, and only those change.
    #[test]
    fn derives_from_the_shipped_configuration() {
        let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join(SHIPPED);
        let text = std::fs::read_to_string(&shipped).expect("shipped nginx.conf");
        let replicas: Vec<SocketAddr> = ["127.0.0.1:4001", "127.0.0.1:4002", "127.0.0.1:4003"]
            .iter()
            .map(|a| a.parse().unwrap())
            .collect();
        let dir = Path::new("/tmp/nginx-test");
        let derived = derive_config(&text, &replicas, "127.0.0.1:4000".parse().unwrap(), dir);
        for replica in &replicas {
            let line = format!("server {replica} max_fails=3 fail_timeout=10s;");
            assert!(derived.contains(&line), "{line} missing:\n{derived}");
        }
        assert!(
            !derived.contains("10.0.0.11"),
            "a shipped replica address is left"
        );
        assert!(derived.contains("listen 127.0.0.1:4000;"));
        assert!(derived.contains("user root;") && !derived.contains("www-data"));
        assert!(!derived.contains("/var/log/") && !derived.contains("/run/nginx.pid"));
        assert!(derived.contains("proxy_temp_path /tmp/nginx-test/proxy_temp;"));
        for kept in [
            "hash $regcache_home consistent;",
            "keepalive 32;",
            "proxy_buffering off;",
            "proxy_next_upstream error timeout http_502 http_503;",
            r#""~/(blobs|manifests)/(?<home_digest>sha256:[0-9a-f]{64})$" $home_digest;"#,
        ] {
            assert!(derived.contains(kept), "{kept} not kept:\n{derived}");
        }
    }
}
