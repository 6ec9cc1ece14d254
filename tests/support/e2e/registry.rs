//! The local upstream registry for the end-to-end tests: it owns a
//! `docker-registry serve` child process (CNCF distribution 2.8) on a free
//! 127.0.0.1 port, its generated configuration (filesystem storage in a
//! tempdir, bearer-token auth against the test token server or none, JSON logs), its
//! log file, and the parsing of that log into per-request records so tests can
//! count what the registry served (for example upstream blob GETs).

use std::fs::File;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use super::token_server::{TokenServer, ISSUER, SERVICE};

/// The registry binary (Debian's `docker-registry` package).
pub const REGISTRY_BIN: &str = "docker-registry";

/// One completed request, as logged by the registry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoggedRequest {
    /// `GET`, `HEAD`, ...
    pub method: String,
    /// Path and query, e.g. `/v2/library/alpine/blobs/sha256:...`.
    pub uri: String,
    /// The HTTP status answered.
    pub status: u16,
}

impl LoggedRequest {
    /// True for `GET /v2/<name>/blobs/sha256:<hex>` (a blob download).
    pub fn is_blob_get(&self) -> bool {
        self.method == "GET" && is_blob_uri(&self.uri)
    }

    /// True for any method on `/v2/<name>/manifests/<reference>`.
    pub fn is_manifest(&self) -> bool {
        let path = self.uri.split('?').next().unwrap_or("");
        path.starts_with("/v2/") && path.contains("/manifests/")
    }
}

/// True for a `/v2/<name>/blobs/sha256:<hex>` path (query ignored).
pub fn is_blob_uri(uri: &str) -> bool {
    let path = uri.split('?').next().unwrap_or("");
    path.starts_with("/v2/")
        && path
            .rsplit_once("/blobs/")
            .is_some_and(|(_, digest)| digest.starts_with("sha256:") && digest.len() == 7 + 64)
}

/// A running `docker-registry`; the child is killed when this is dropped.
pub struct Registry {
    child: Child,
    addr: SocketAddr,
    log_path: PathBuf,
    _dir: tempfile::TempDir,
}

impl Registry {
    /// Starts a registry that trusts `token`'s certificate, and waits until
    /// `/v2/` answers (401 included).
    pub async fn start(token: &TokenServer) -> std::io::Result<Self> {
        Self::start_with(Some(token), false).await
    }

    /// Starts a registry without authentication and with deletion enabled
    /// (`storage.delete.enabled`), for the push conformance suite, which
    /// pushes and deletes anonymously; waits until `/v2/` answers 200.
    pub async fn start_open() -> std::io::Result<Self> {
        Self::start_with(None, true).await
    }

    async fn start_with(token: Option<&TokenServer>, delete: bool) -> std::io::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("regcache-e2e-registry-")
            .tempdir()?;
        let mut last_err = None;
        for _attempt in 0..3 {
            match Self::start_once(token, delete, dir.path()).await {
                Ok((child, addr, log_path)) => {
                    return Ok(Self {
                        child,
                        addr,
                        log_path,
                        _dir: dir,
                    })
                }
                Err(e) => last_err = Some(e),
            }
        }
        Err(last_err.unwrap_or_else(|| std::io::Error::other("registry did not start")))
    }

    async fn start_once(
        token: Option<&TokenServer>,
        delete: bool,
        dir: &Path,
    ) -> std::io::Result<(Child, SocketAddr, PathBuf)> {
        let addr = free_port()?;
        let storage = dir.join("storage");
        std::fs::create_dir_all(&storage)?;
        let config_path = dir.join(format!("config-{}.yml", addr.port()));
        // Distribution answers everyone when its configuration has no `auth` section.
        let auth = match token {
            Some(token) => format!(
                "auth:\n  token:\n    realm: {realm}\n    service: {SERVICE}\n    issuer: {ISSUER}\n    rootcertbundle: {bundle}\n",
                realm = token.realm(),
                bundle = token.cert_path().display(),
            ),
            None => String::new(),
        };
        let config = format!(
            r#"version: 0.1
log:
  level: info
  formatter: json
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: {storage}
  delete:
    enabled: {delete}
  maintenance:
    uploadpurging:
      enabled: false
  redirect:
    disable: true
http:
  addr: {addr}
  secret: regcache-e2e-http-secret
{auth}"#,
            storage = storage.display(),
        );
        std::fs::write(&config_path, config)?;
        let log_path = dir.join(format!("registry-{}.log", addr.port()));
        let log = File::create(&log_path)?;
        let mut child = Command::new(REGISTRY_BIN)
            .arg("serve")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;

        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = child.try_wait()? {
                let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                return Err(std::io::Error::other(format!(
                    "docker-registry exited early ({status}):\n{log}"
                )));
            }
            if let Some(status) = probe_v2(addr).await {
                if status == 200 || status == 401 {
                    return Ok((child, addr, log_path));
                }
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(std::io::Error::other(
                    "docker-registry did not answer /v2/ in 20 s",
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The listening address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `127.0.0.1:PORT`, the registry's name in image references.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The registry's log file (stdout and stderr).
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// Every completed request logged so far, oldest first.
    pub fn requests(&self) -> Vec<LoggedRequest> {
        let text = std::fs::read_to_string(&self.log_path).unwrap_or_default();
        parse_log(&text)
    }

    /// Counts logged requests with `method` whose URI matches `pred`.
    pub fn count_requests(&self, method: &str, pred: impl Fn(&str) -> bool) -> usize {
        self.requests()
            .iter()
            .filter(|r| r.method.eq_ignore_ascii_case(method) && pred(&r.uri))
            .count()
    }

    /// Blob downloads (`GET /v2/.../blobs/sha256:...`) logged so far.
    pub fn blob_gets(&self) -> usize {
        self.requests().iter().filter(|r| r.is_blob_get()).count()
    }

    /// Polls the log until the number of logged requests stays the same for
    /// `quiet` (bounded by `max_wait`), then returns every request.
    pub async fn settled_requests(&self, quiet: Duration, max_wait: Duration) -> Vec<LoggedRequest> {
        let deadline = Instant::now() + max_wait;
        let mut last = self.requests();
        let mut stable_since = Instant::now();
        loop {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let now = self.requests();
            if now.len() != last.len() {
                last = now;
                stable_since = Instant::now();
            } else if stable_since.elapsed() >= quiet {
                return now;
            }
            if Instant::now() >= deadline {
                return last;
            }
        }
    }
}

impl Registry {
    /// Kills the registry process (an upstream outage); its port stops answering.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Parses distribution's JSON log lines into completed requests.
pub fn parse_log(text: &str) -> Vec<LoggedRequest> {
    text.lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|v| {
            v.get("msg")
                .and_then(|m| m.as_str())
                .is_some_and(|m| m.starts_with("response completed"))
        })
        .filter_map(|v| {
            Some(LoggedRequest {
                method: v.get("http.request.method")?.as_str()?.to_string(),
                uri: v.get("http.request.uri")?.as_str()?.to_string(),
                status: v
                    .get("http.response.status")
                    .and_then(|s| s.as_u64())
                    .unwrap_or(0) as u16,
            })
        })
        .collect()
}

/// Picks a free loopback port by binding port 0 and releasing it.
pub fn free_port() -> std::io::Result<SocketAddr> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    listener.local_addr()
}

/// `GET /v2/` with a bare HTTP/1.0 request; the status code, if any answered.
async fn probe_v2(addr: SocketAddr) -> Option<u16> {
    let attempt = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
        let request = format!("GET /v2/ HTTP/1.0\r\nHost: {addr}\r\n\r\n");
        stream.write_all(request.as_bytes()).await.ok()?;
        let mut buf = [0u8; 64];
        let mut len = 0;
        while len < 12 {
            let n = stream.read(&mut buf[len..]).await.ok()?;
            if n == 0 {
                break;
            }
            len += n;
        }
        let head = std::str::from_utf8(&buf[..len]).ok()?;
        head.split(' ').nth(1)?.parse().ok()
    };
    tokio::time::timeout(Duration::from_secs(2), attempt)
        .await
        .ok()
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_completed_requests() {
        let log = r#"{"level":"info","msg":"listening on 127.0.0.1:1"}
{"http.request.method":"GET","http.request.uri":"/v2/library/a/blobs/sha256:0000000000000000000000000000000000000000000000000000000000000000","http.response.status":200,"msg":"response completed"}
{"http.request.method":"HEAD","http.request.uri":"/v2/library/a/manifests/latest","http.response.status":404,"msg":"response completed with error"}
not json"#;
        let reqs = parse_log(log);
        assert_eq!(reqs.len(), 2);
        assert!(reqs[0].is_blob_get());
        assert!(!reqs[1].is_blob_get());
        assert!(reqs[1].is_manifest());
        assert_eq!(reqs[1].status, 404);
    }

    #[test]
    fn blob_uri_shapes() {
        let d = "sha256:".to_string() + &"a".repeat(64);
        assert!(is_blob_uri(&format!("/v2/library/a/blobs/{d}")));
        assert!(is_blob_uri(&format!("/v2/a/b/c/blobs/{d}?x=1")));
        assert!(!is_blob_uri("/v2/library/a/blobs/uploads/"));
        assert!(!is_blob_uri(&format!("/v2/library/a/manifests/{d}")));
    }
}
