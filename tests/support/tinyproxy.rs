//! A real egress proxy for the end-to-end tests: Debian's `tinyproxy` (package `tinyproxy-bin`),
//! started in the foreground on a free loopback port, accepting clients from 127.0.0.1 only,
//! with Basic credentials, and logging every CONNECT it is asked for. Killed when dropped.
//! Loopback only: it tunnels to whatever the test's regcache asks for, which is loopback.

use std::fs::File;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const TINYPROXY_BIN: &str = "tinyproxy";

pub struct Tinyproxy {
    child: Child,
    pub addr: SocketAddr,
    log_path: PathBuf,
    _dir: tempfile::TempDir,
}

impl Tinyproxy {
    /// Starts tinyproxy requiring `user:password` and waits until it accepts connections.
    pub async fn start(user: &str, password: &str) -> std::io::Result<Tinyproxy> {
        let dir = tempfile::Builder::new()
            .prefix("regcache-e2e-tinyproxy-")
            .tempdir()?;
        let addr = super::e2e::registry::free_port()?;
        let config = dir.path().join("tinyproxy.conf");
        // No ConnectPort line: CONNECT to any port (the registry's and the token server's).
        std::fs::write(
            &config,
            format!(
                "Port {port}\nListen 127.0.0.1\nAllow 127.0.0.1\nTimeout 60\nMaxClients 64\n\
                 LogLevel Connect\nBasicAuth {user} {password}\nDisableViaHeader Yes\n",
                port = addr.port()
            ),
        )?;
        let log_path = dir.path().join("tinyproxy.log");
        let log = File::create(&log_path)?;
        let mut child = Command::new(TINYPROXY_BIN)
            .arg("-d")
            .arg("-c")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = child.try_wait()? {
                let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                return Err(std::io::Error::other(format!(
                    "tinyproxy exited early ({status}):\n{log}"
                )));
            }
            if tokio::net::TcpStream::connect(addr).await.is_ok() {
                return Ok(Tinyproxy {
                    child,
                    addr,
                    log_path,
                    _dir: dir,
                });
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(std::io::Error::other(
                    "tinyproxy did not accept connections in 10 s",
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// How many requests tinyproxy logged for `authority` (`host:port`), tunnels and plain
    /// `http://` requests alike.
    pub fn requests_to(&self, authority: &str) -> usize {
        let log = std::fs::read_to_string(&self.log_path).unwrap_or_default();
        log.lines()
            .filter(|l| l.contains("): ") && l.contains("Request (") && l.contains(authority))
            .count()
    }

    /// The `host:port` targets of every CONNECT request tinyproxy logged, in order.
    pub fn connect_targets(&self) -> Vec<String> {
        let log = std::fs::read_to_string(&self.log_path).unwrap_or_default();
        log.lines()
            .filter_map(|l| l.split_once("): CONNECT ").map(|(_, rest)| rest))
            .filter_map(|rest| rest.split(' ').next().map(str::to_string))
            .collect()
    }
}

impl Drop for Tinyproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
