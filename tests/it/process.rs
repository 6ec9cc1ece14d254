//! The real binary as an operator runs it: SIGTERM stops accepting, lets a running download and
//! its client finish, and exits 0 with a consistent cache; a download that cannot finish within
//! the grace period leaves nothing half-written behind; SIGHUP applies a new log level and says
//! which changes need a restart; JSON logs
//! are one object per line. `process/startup.rs`: a second daemon on a used directory, plain
//! logs on a pipe. `process/slow_readers.rs`: stalled readers hold no thread each.

mod slow_readers;
mod startup;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::support::fake::{self, bytes_of, Fake, Fault};
use crate::support::listeners::free_port;
use tokio::sync::watch;

struct Proc {
    child: Child,
    port: u16,
    admin: u16,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn spawn(dir: &Path, upstream: &str, grace: &str) -> Proc {
    spawn_with(dir, upstream, grace, "info", &[]).await
}

fn write_config(
    dir: &Path,
    port: u16,
    admin: u16,
    upstream: &str,
    grace: &str,
    level: &str,
) -> std::path::PathBuf {
    let config = dir.join("regcache.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:{port}\"\nbuiltin_upstreams = false\nshutdown_grace = \"{grace}\"\n\
             [admin]\nlisten = \"127.0.0.1:{admin}\"\n[log]\nlevel = \"{level}\"\n[cache]\ndir = \"{}\"\n\
             [[upstreams]]\nhost = \"docker.io\"\nurl = \"{upstream}\"\n",
            dir.join("cache").display()
        ),
    )
    .unwrap();
    config
}

async fn spawn_with(dir: &Path, upstream: &str, grace: &str, level: &str, args: &[&str]) -> Proc {
    let (port, admin) = (free_port(), free_port());
    let config = write_config(dir, port, admin, upstream, grace, level);
    let log = std::fs::File::create(dir.join("regcache.log")).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_regcache"))
        .args(["serve", "--config"])
        .arg(&config)
        .args(args)
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let p = Proc { child, port, admin };
    for _ in 0..200 {
        if std::net::TcpStream::connect(("127.0.0.1", p.admin)).is_ok() {
            return p;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!(
        "regcache did not start: {}",
        std::fs::read_to_string(dir.join("regcache.log")).unwrap_or_default()
    );
}

fn signal(p: &Proc, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &p.child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok);
}

fn sigterm(p: &Proc) {
    signal(p, "-TERM");
}

/// Sends SIGHUP and waits (2 s at most) until the daemon has logged one more reload.
async fn reload(p: &Proc, dir: &Path) {
    let reloads = || log_text(dir).matches("configuration reloaded").count();
    let before = reloads();
    signal(p, "-HUP");
    for _ in 0..100 {
        if reloads() > before {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn get(port: u16, path: &str) -> Result<Vec<u8>, String> {
    use http_body_util::BodyExt;
    let client =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build_http();
    let req = http::Request::get(format!("http://127.0.0.1:{port}{path}"))
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    let resp = client.request(req).await.map_err(|e| e.to_string())?;
    if resp.status() != 200 {
        return Err(format!("status {}", resp.status()));
    }
    resp.into_body()
        .collect()
        .await
        .map(|c| c.to_bytes().to_vec())
        .map_err(|e| e.to_string())
}

async fn wait_exit(p: &mut Proc) -> std::process::ExitStatus {
    for _ in 0..500 {
        if let Some(status) = p.child.try_wait().unwrap() {
            return status;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("regcache did not exit after SIGTERM");
}

fn blob_path(dir: &Path, digest: &str) -> std::path::PathBuf {
    dir.join("cache/blobs/sha256")
        .join(digest.trim_start_matches("sha256:"))
}

fn tmp_is_empty(dir: &Path) -> bool {
    std::fs::read_dir(dir.join("cache/tmp"))
        .map(|d| d.count() == 0)
        .unwrap_or(true)
}

/// A binary whose only pull is a 1 MB blob download held by the upstream after 300 kB: the
/// fake, the process, its directory, the blob, the pull's task and the gate that releases it.
struct HeldDownload {
    _up: Fake,
    p: Proc,
    dir: tempfile::TempDir,
    digest: String,
    blob: Vec<u8>,
    pull: tokio::task::JoinHandle<Result<Vec<u8>, String>>,
    open: watch::Sender<bool>,
}

async fn held_download(seed: u64, grace: &str) -> HeldDownload {
    let up = Fake::start().await;
    let blob = bytes_of(1_000_000, seed);
    let digest = up.add_blob("library/app", blob.clone());
    let (open, gate) = watch::channel(false);
    up.set_fault(Some(Fault::Hold {
        after: 300_000,
        gate,
        then_break: false,
    }));
    let dir = tempfile::tempdir().unwrap();
    let p = spawn(dir.path(), &up.url(), grace).await;
    let port = p.port;
    let path = format!("/v2/library/app/blobs/{digest}");
    let pull = tokio::spawn(async move { get(port, &path).await });
    for _ in 0..200 {
        if up.count("GET", "/blobs/") == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    HeldDownload {
        _up: up,
        p,
        dir,
        digest,
        blob,
        pull,
        open,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_a_running_download_finish() {
    let HeldDownload {
        _up,
        mut p,
        dir,
        digest,
        blob,
        pull,
        open,
    } = held_download(11, "30s").await;
    sigterm(&p);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        p.child.try_wait().unwrap().is_none(),
        "still draining the open request"
    );
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", p.port)).is_err(),
        "no longer accepting"
    );
    open.send(true).unwrap();
    assert_eq!(pull.await.unwrap().expect("the pull completes"), blob);
    assert!(wait_exit(&mut p).await.success());
    assert_eq!(std::fs::read(blob_path(dir.path(), &digest)).unwrap(), blob);
    assert!(tmp_is_empty(dir.path()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_download_cut_by_the_grace_period_leaves_nothing() {
    let HeldDownload {
        _up,
        mut p,
        dir,
        digest,
        pull,
        // Kept, never opened: the upstream holds the body past the grace period.
        open: _held,
        ..
    } = held_download(12, "300ms").await;
    sigterm(&p);
    assert!(wait_exit(&mut p).await.success());
    assert!(
        pull.await.unwrap().is_err(),
        "the cut-off pull must not look complete"
    );
    assert!(!blob_path(dir.path(), &digest).exists());
    assert!(tmp_is_empty(dir.path()), "temp files removed on the way out");
}

fn log_text(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("regcache.log")).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_applies_a_new_log_level() {
    let up = Fake::start().await;
    let dir = tempfile::tempdir().unwrap();
    let p = spawn_with(dir.path(), &up.url(), "1s", "warn", &[]).await;
    assert!(get(p.port, "/v2/").await.is_ok());
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!log_text(dir.path()).contains("request"), "no access log at warn");
    write_config(dir.path(), p.port, p.admin, &up.url(), "1s", "info");
    reload(&p, dir.path()).await;
    assert!(get(p.port, "/v2/").await.is_ok());
    tokio::time::sleep(Duration::from_millis(100)).await;
    let text = log_text(dir.path());
    assert!(text.contains("reloaded"), "{text}");
    assert!(
        text.lines().any(|l| l.contains("request") && l.contains("/v2/")),
        "{text}"
    );
    assert!(
        !text.contains("until a restart"),
        "a live change reported: {text}"
    );
    // A setting only a restart applies is said to be so.
    write_config(dir.path(), p.port, p.admin, &up.url(), "2s", "info");
    reload(&p, dir.path()).await;
    let text = log_text(dir.path());
    assert!(
        text.lines()
            .any(|l| l.contains("not applied until a restart") && l.contains("shutdown_grace")),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_are_one_object_per_line() {
    let up = Fake::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut p = spawn_with(dir.path(), &up.url(), "1s", "info", &["--log-format", "json"]).await;
    assert!(get(p.port, "/v2/").await.is_ok());
    sigterm(&p);
    assert!(wait_exit(&mut p).await.success());
    let text = log_text(dir.path());
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let request = lines
        .iter()
        .find(|v| v["message"] == "request")
        .expect("an access log line");
    assert_eq!(request["status"], 200);
    assert_eq!(request["path"], "/v2/");
    assert_eq!(request["method"], "GET");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_applies_new_upstream_credentials() {
    let up = Fake::start().await;
    up.set_auth(fake::Auth::Basic {
        user: "puller".into(),
        pass: "new-secret".into(),
    });
    let (_, manifest, _) = up.add_image("org/private", "1", &[bytes_of(10, 1)]);
    let dir = tempfile::tempdir().unwrap();
    let with_password = |p: &Proc, password: &str| {
        let config = write_config(dir.path(), p.port, p.admin, &up.url(), "1s", "info");
        let mut text = std::fs::read_to_string(&config).unwrap();
        text.push_str(&format!(
            "username = \"puller\"\npassword = \"{password}\"\npublic = true\n"
        ));
        std::fs::write(&config, text).unwrap();
    };
    let mut p = spawn_with(dir.path(), &up.url(), "1s", "info", &[]).await;
    // Restart on a config with the old password (the port pair stays the same).
    with_password(&p, "old-secret");
    sigterm(&p);
    assert!(wait_exit(&mut p).await.success());
    let config = dir.path().join("regcache.toml");
    let log = std::fs::File::create(dir.path().join("regcache.log")).unwrap();
    p.child = Command::new(env!("CARGO_BIN_EXE_regcache"))
        .args(["serve", "--config"])
        .arg(&config)
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    for _ in 0..200 {
        if std::net::TcpStream::connect(("127.0.0.1", p.admin)).is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        get(p.port, "/v2/org/private/manifests/1").await,
        Err("status 403 Forbidden".into())
    );
    with_password(&p, "new-secret");
    reload(&p, dir.path()).await;
    assert_eq!(
        get(p.port, "/v2/org/private/manifests/1").await.unwrap(),
        manifest.to_vec()
    );
    assert!(
        !log_text(dir.path()).contains("new-secret"),
        "a secret reached the log"
    );
}

#[test]
fn serve_and_cache_commands_refuse_a_directory_that_is_not_a_store() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        free_port(),
        free_port(),
        "http://127.0.0.1:1",
        "1s",
        "info",
    );
    let cache = dir.path().join("cache");
    std::fs::create_dir_all(cache.join("tmp")).unwrap();
    std::fs::write(cache.join("tmp").join("draft.txt"), "precious").unwrap();
    std::fs::write(cache.join("notes.txt"), "precious").unwrap();
    for args in [&["serve"][..], &["cache", "stats"], &["cache", "gc"]] {
        let out = Command::new(env!("CARGO_BIN_EXE_regcache"))
            .args(args)
            .arg("--config")
            .arg(&config)
            .env_remove("RUST_LOG")
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{args:?}: {err}");
        assert!(
            err.contains("is not a regcache cache directory (it holds notes.txt, tmp"),
            "{err}"
        );
    }
    assert_eq!(
        std::fs::read_to_string(cache.join("tmp").join("draft.txt")).unwrap(),
        "precious"
    );
    assert!(!cache.join("regcache-store").exists() && !cache.join("lock").exists());
}
