//! Real egress proxies for the end-to-end tests, started in the foreground on a free loopback
//! port with credentials, logging what they are asked for, killed when dropped: Debian's
//! `tinyproxy` (package `tinyproxy-bin`; HTTP CONNECT, clients from 127.0.0.1 only) and
//! `microsocks` (SOCKS5). Loopback only: they connect to whatever the test's regcache asks for,
//! which is loopback.

use std::fs::File;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const TINYPROXY_BIN: &str = "tinyproxy";
pub const MICROSOCKS_BIN: &str = "microsocks";

/// A proxy process and its log.
pub struct Proxy {
    child: Child,
    pub addr: SocketAddr,
    log_path: PathBuf,
    _dir: tempfile::TempDir,
}

impl Proxy {
    /// Starts tinyproxy requiring `user:password` and waits until it accepts connections.
    pub async fn tinyproxy(user: &str, password: &str) -> std::io::Result<Proxy> {
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
        let mut cmd = Command::new(TINYPROXY_BIN);
        cmd.arg("-d").arg("-c").arg(&config);
        Proxy::spawn(cmd, addr, dir).await
    }

    /// Starts microsocks requiring `user:password` and waits until it accepts connections.
    pub async fn microsocks(user: &str, password: &str) -> std::io::Result<Proxy> {
        let dir = tempfile::Builder::new()
            .prefix("regcache-e2e-microsocks-")
            .tempdir()?;
        let addr = super::e2e::registry::free_port()?;
        let mut cmd = Command::new(MICROSOCKS_BIN);
        cmd.args([
            "-i",
            "127.0.0.1",
            "-p",
            &addr.port().to_string(),
            "-u",
            user,
            "-P",
            password,
        ]);
        Proxy::spawn(cmd, addr, dir).await
    }

    async fn spawn(mut cmd: Command, addr: SocketAddr, dir: tempfile::TempDir) -> std::io::Result<Proxy> {
        let name = cmd.get_program().to_string_lossy().into_owned();
        let log_path = dir.path().join(format!("{name}.log"));
        let log = File::create(&log_path)?;
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = child.try_wait()? {
                return Err(std::io::Error::other(format!(
                    "{name} exited early ({status}):\n{}",
                    read(&log_path)
                )));
            }
            if tokio::net::TcpStream::connect(addr).await.is_ok() {
                return Ok(Proxy {
                    child,
                    addr,
                    log_path,
                    _dir: dir,
                });
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(std::io::Error::other(format!(
                    "{name} did not accept connections in 10 s"
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// How many requests tinyproxy logged for `authority` (`host:port`), tunnels and plain
    /// `http://` requests alike.
    pub fn requests_to(&self, authority: &str) -> usize {
        read(&self.log_path)
            .lines()
            .filter(|l| l.contains("): ") && l.contains("Request (") && l.contains(authority))
            .count()
    }

    /// The `host:port` targets of every CONNECT request tinyproxy logged, in order.
    pub fn connect_targets(&self) -> Vec<String> {
        read(&self.log_path)
            .lines()
            .filter_map(|l| l.split_once("): CONNECT ").map(|(_, rest)| rest))
            .filter_map(|rest| rest.split(' ').next().map(str::to_string))
            .collect()
    }

    /// The destinations microsocks logged connecting to (`client[N] IP: connected to HOST:PORT`).
    pub fn socks_targets(&self) -> Vec<String> {
        read(&self.log_path)
            .lines()
            .filter_map(|l| l.split_once(": connected to ").map(|(_, t)| t.trim().to_string()))
            .collect()
    }
}

/// Whether the proxy `program` is on PATH; if not, reports it for `test` (loudly; a failure
/// under CI) and says how to install it.
pub fn present(test: &str, program: &str) -> bool {
    if super::tools::find(program).is_some() {
        return true;
    }
    let package = if program == TINYPROXY_BIN {
        "tinyproxy-bin"
    } else {
        program
    };
    super::tools::missing(
        test,
        &[program.to_string()],
        &format!("Install it with: apt-get install -y {package}"),
    );
    false
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
