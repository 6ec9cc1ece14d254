//! A private containerd daemon for the end-to-end test, and `ctr` pointed at it.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The containerd daemon binary.
pub(crate) const CONTAINERD_BIN: &str = "containerd";
/// The containerd command-line client.
pub(crate) const CTR_BIN: &str = "ctr";
/// The snapshotter layers are unpacked into, as on production hosts.
const SNAPSHOTTER: &str = "overlayfs";
/// The snapshotter used when the kernel or filesystem offers no overlayfs
/// (plain copies, no overlay mounts).
const FALLBACK_SNAPSHOTTER: &str = "native";
/// Environment variables that could point `ctr` at another daemon, namespace
/// or snapshotter, or send its requests through a proxy.
const CTR_ENV_REMOVE: &[&str] = &[
    "CONTAINERD_ADDRESS",
    "CONTAINERD_NAMESPACE",
    "CONTAINERD_SNAPSHOTTER",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "ALL_PROXY",
    "http_proxy",
    "https_proxy",
    "all_proxy",
];

/// The daemon's configuration: everything under `base`, the CRI plugin and the snapshotters
/// that need more than a directory off, and content not shared between namespaces (so a
/// fresh namespace downloads every blob again).
fn config_toml(base: &Path, socket: &Path) -> String {
    format!(
        r#"version = 2
root = "{root}"
state = "{state}"
disabled_plugins = [
  "io.containerd.grpc.v1.cri",
  "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.zfs",
  "io.containerd.runtime.v1.linux",
]

[grpc]
  address = "{socket}"

[ttrpc]
  address = "{socket}.ttrpc"

[debug]
  address = ""
  level = "info"

[metrics]
  address = ""

[plugins."io.containerd.metadata.v1.bolt"]
  content_sharing_policy = "isolated"

[plugins."io.containerd.internal.v1.opt"]
  path = "{opt}"
"#,
        root = base.join("root").display(),
        state = base.join("state").display(),
        socket = socket.display(),
        opt = base.join("opt").display(),
    )
}

/// A private containerd daemon: its config, root, state, `opt` directory,
/// sockets and log all live in one tempdir. On drop the daemon is stopped
/// (SIGTERM, then SIGKILL), any mount left under the tempdir is detached and
/// the tempdir is removed.
pub(crate) struct Containerd {
    child: Child,
    pub(crate) socket: PathBuf,
    /// [`SNAPSHOTTER`], or [`FALLBACK_SNAPSHOTTER`] when containerd reports
    /// that overlayfs cannot be used here.
    pub(crate) snapshotter: &'static str,
    log_path: PathBuf,
    dir: tempfile::TempDir,
}

impl Containerd {
    /// Writes the config and starts the daemon; waits until `ctr version`
    /// reaches it.
    pub(crate) async fn start() -> Result<Containerd, String> {
        let dir = tempfile::Builder::new()
            .prefix("regcache-e2e-ctrd-")
            .tempdir()
            .map_err(|e| format!("containerd dir: {e}"))?;
        let base = dir.path();
        let socket = base.join("containerd.sock");
        let config_path = base.join("config.toml");
        std::fs::write(&config_path, config_toml(base, &socket))
            .map_err(|e| format!("write containerd config: {e}"))?;
        let log_path = base.join("containerd.log");
        let log = std::fs::File::create(&log_path).map_err(|e| format!("containerd log: {e}"))?;
        let log_err = log.try_clone().map_err(|e| format!("containerd log: {e}"))?;
        let child = Command::new(CONTAINERD_BIN)
            .arg("--config")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn()
            .map_err(|e| format!("spawn {CONTAINERD_BIN}: {e}"))?;
        let mut daemon = Containerd {
            child,
            socket,
            snapshotter: SNAPSHOTTER,
            log_path,
            dir,
        };
        daemon.wait_ready().await?;
        Ok(daemon)
    }

    /// Waits (up to 20 s) until `ctr version` reaches the daemon, then picks the snapshotter.
    async fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!(
                    "containerd exited early ({status}):\n{}",
                    self.log_tail()
                ));
            }
            if self.socket.exists() && self.ctr("default", &["version"]).await.is_ok() {
                return self.pick_snapshotter().await;
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "containerd did not answer on {} in 20 s:\n{}",
                    self.socket.display(),
                    self.log_tail()
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub(crate) fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Keeps overlayfs when its plugin loaded (`ok` in `ctr plugins ls`),
    /// else falls back to the native snapshotter with a notice.
    async fn pick_snapshotter(&mut self) -> Result<(), String> {
        let (plugins, _) = self.ctr("default", &["plugins", "ls"]).await?;
        let overlay_ok = plugins.lines().any(|line| {
            let cols: Vec<&str> = line.split_whitespace().collect();
            cols.first() == Some(&"io.containerd.snapshotter.v1")
                && cols.get(1) == Some(&SNAPSHOTTER)
                && cols.last() == Some(&"ok")
        });
        if !overlay_ok {
            eprintln!(
                "!! containerd cannot use the {SNAPSHOTTER} snapshotter here; \
                 unpacking with {FALLBACK_SNAPSHOTTER} instead:\n{plugins}"
            );
            self.snapshotter = FALLBACK_SNAPSHOTTER;
        }
        Ok(())
    }

    /// The last lines of the daemon's log, for failure messages.
    pub(crate) fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log_path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// `ctr -a SOCKET -n NAMESPACE ARGS`; (stdout, stderr) on success, the
    /// exit status and both streams on failure.
    pub(crate) async fn ctr(&self, namespace: &str, args: &[&str]) -> Result<(String, String), String> {
        let mut command = tokio::process::Command::new(CTR_BIN);
        command
            .arg("--address")
            .arg(&self.socket)
            .arg("--namespace")
            .arg(namespace)
            .args(args)
            .stdin(Stdio::null())
            .kill_on_drop(true);
        for name in CTR_ENV_REMOVE {
            command.env_remove(name);
        }
        let what = format!("ctr -n {namespace} {args:?}");
        crate::support::e2e::run(command, &what, Duration::from_secs(60)).await
    }

    /// `ctr` that must succeed; returns stdout.
    pub(crate) async fn ctr_ok(&self, namespace: &str, args: &[&str]) -> String {
        match self.ctr(namespace, args).await {
            Ok((stdout, _)) => stdout,
            Err(e) => panic!("{e}\ncontainerd log:\n{}", self.log_tail()),
        }
    }

    /// `ctr content get DIGEST` as raw bytes.
    pub(crate) async fn content_get(&self, namespace: &str, digest: &str) -> Vec<u8> {
        let mut command = tokio::process::Command::new(CTR_BIN);
        command
            .arg("--address")
            .arg(&self.socket)
            .arg("--namespace")
            .arg(namespace)
            .args(["content", "get", digest])
            .stdin(Stdio::null())
            .kill_on_drop(true);
        for name in CTR_ENV_REMOVE {
            command.env_remove(name);
        }
        let output = tokio::time::timeout(Duration::from_secs(30), command.output())
            .await
            .expect("ctr content get timed out")
            .expect("ctr content get");
        assert!(
            output.status.success(),
            "ctr content get {digest}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        output.stdout
    }

    /// Mount points at or below the daemon's tempdir.
    pub(crate) fn mounts(&self) -> Vec<PathBuf> {
        mounts_under(self.dir())
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        // SIGTERM first so containerd shuts down its plugins cleanly.
        let pid = self.child.id().to_string();
        let _ = Command::new("kill")
            .args(["-TERM", &pid])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        // A pull interrupted by a failure could leave a temporary mount.
        let mut left = self.mounts();
        left.sort_by_key(|p| std::cmp::Reverse(p.as_os_str().len()));
        for mount_point in left {
            eprintln!("!! detaching leftover mount {}", mount_point.display());
            let _ = Command::new("umount")
                .arg("-l")
                .arg(&mount_point)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// Mount points at or below `dir`, from /proc/self/mountinfo.
fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    info.lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(|escaped| PathBuf::from(escaped.replace("\\040", " ")))
        .filter(|mount_point| mount_point.starts_with(dir))
        .collect()
}
