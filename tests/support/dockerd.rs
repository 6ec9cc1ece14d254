//! A private Docker Engine for the end-to-end tests: it owns one `dockerd` child process whose
//! data root, exec root, pidfile, API socket, key file, `daemon.json`, client config and log all
//! live in one directory the caller owns (so a restart keeps the pulled images), the `docker`
//! client runner that talks to it, and the cleanup: on drop the daemon is stopped (SIGTERM, then
//! SIGKILL), any mount left under its directory is detached and its cgroups are removed.
//!
//! The daemon gets no bridge, no iptables/ip6tables rules, no IP forwarding or masquerading, the
//! cgroupfs driver (no systemd) under its own cgroup parent, and `debug` logging, which is what
//! shows where each pull went. It is meant to run inside the private namespaces of `netns.rs`:
//! dockerd and its containerd still write fixed paths under `/run` whatever the flags say
//! (`/run/docker/plugins`, the shim sockets in `/run/containerd/s`), a private tmpfs there.

pub mod cgroups;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The Docker Engine daemon.
pub const DOCKERD_BIN: &str = "dockerd";
/// Debian's `docker.io` client, the same release as its `dockerd`. A separately installed, newer
/// CLI (say in /usr/local/bin) may come first on PATH; it would work too (the API version is
/// negotiated, `DOCKER_API_VERSION` is removed below), but the matching client is preferred.
pub const DEBIAN_CLI: &str = "/usr/bin/docker";
/// The storage driver of production hosts.
const STORAGE_DRIVER: &str = "overlay2";
/// Plain copies, for kernels or filesystems without overlayfs.
const FALLBACK_STORAGE_DRIVER: &str = "vfs";
/// Prefix of the name of a daemon's directory (a caller's choice) and of the cgroup parent each
/// daemon creates (and removes) under every hierarchy.
pub const PREFIX: &str = "regcache-e2e-docker-";
/// Client environment that could point `docker` at another daemon, pin an API version, sign or
/// proxy requests, or pick a platform.
const CLIENT_ENV_REMOVE: &[&str] = &[
    "DOCKER_HOST",
    "DOCKER_CONTEXT",
    "DOCKER_API_VERSION",
    "DOCKER_TLS_VERIFY",
    "DOCKER_CERT_PATH",
    "DOCKER_CONTENT_TRUST",
    "DOCKER_DEFAULT_PLATFORM",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "ALL_PROXY",
    "http_proxy",
    "https_proxy",
    "all_proxy",
];

/// Names another `docker` client to test with (say a newer CLI, to check API negotiation).
pub const CLI_ENV: &str = "REGCACHE_E2E_DOCKER_CLI";

/// The `docker` client to use: the one [`CLI_ENV`] names, else [`DEBIAN_CLI`] if present, else
/// `docker` from PATH.
pub fn docker_cli() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os(CLI_ENV) {
        return Some(PathBuf::from(path)).filter(|p| p.is_file());
    }
    if std::fs::metadata(DEBIAN_CLI).is_ok_and(|m| m.is_file()) {
        return Some(PathBuf::from(DEBIAN_CLI));
    }
    let paths = std::env::var_os("PATH")?;
    std::env::split_paths(&paths)
        .map(|dir| dir.join("docker"))
        .find(|candidate| std::fs::metadata(candidate).is_ok_and(|m| m.is_file()))
}

/// A `docker version --format` template naming both sides and their API versions.
pub const VERSIONS_FORMAT: &str = "client {{.Client.Version}} (API {{.Client.APIVersion}}), \
server {{.Server.Version}} (API {{.Server.APIVersion}})";

/// What [`Dockerd`] needs and this machine lacks: the daemon, its runtime, a client.
pub fn missing() -> Vec<String> {
    let mut missing: Vec<String> = [DOCKERD_BIN, "runc"]
        .into_iter()
        .filter(|tool| crate::support::tools::find(tool).is_none())
        .map(str::to_string)
        .collect();
    if docker_cli().is_none() {
        missing.push("docker (client)".to_string());
    }
    missing
}

/// A running private `dockerd`.
pub struct Dockerd {
    child: Child,
    socket: PathBuf,
    log_path: PathBuf,
    dir: PathBuf,
    cli: PathBuf,
    cgroup_parent: String,
    /// [`STORAGE_DRIVER`], or [`FALLBACK_STORAGE_DRIVER`] where the daemon cannot use overlay.
    pub storage_driver: &'static str,
}

impl Dockerd {
    /// Starts a daemon with everything under `dir` and `mirror` (plain HTTP on loopback) as its
    /// one registry mirror; waits until the API answers.
    pub async fn start(dir: &Path, mirror: SocketAddr) -> Result<Dockerd, String> {
        match Self::start_with(dir, mirror, STORAGE_DRIVER).await {
            Err(e) if e.contains("graphdriver") => {
                eprintln!(
                    "!! dockerd cannot use the {STORAGE_DRIVER} storage driver here; \
                     using {FALLBACK_STORAGE_DRIVER} instead:\n{e}"
                );
                Self::start_with(dir, mirror, FALLBACK_STORAGE_DRIVER).await
            }
            other => other,
        }
    }

    async fn start_with(dir: &Path, mirror: SocketAddr, driver: &'static str) -> Result<Dockerd, String> {
        let cli = docker_cli().ok_or("no docker client found")?;
        let name = dir.file_name().and_then(|n| n.to_str()).unwrap_or("dockerd");
        let cgroup_parent = format!("{PREFIX}{}", name.trim_start_matches(PREFIX));
        let config = serde_json::json!({
            "registry-mirrors": [format!("http://{mirror}")],
            "deprecated-key-path": dir.join("key.json"),
            "debug": true,
            "storage-driver": driver,
            "exec-opts": ["native.cgroupdriver=cgroupfs"],
            "cgroup-parent": format!("/{cgroup_parent}"),
            // Containers that ignore SIGTERM are killed after 5 s when the daemon stops.
            "shutdown-timeout": 5,
        });
        let config_path = dir.join("daemon.json");
        std::fs::create_dir_all(dir.join("client")).map_err(|e| format!("client dir: {e}"))?;
        std::fs::write(&config_path, config.to_string()).map_err(|e| format!("daemon.json: {e}"))?;
        let generation = std::fs::read_dir(dir).map_or(0, |entries| {
            entries
                .filter_map(Result::ok)
                .filter(|e| e.file_name().to_string_lossy().starts_with("dockerd-"))
                .count()
        });
        let log_path = dir.join(format!("dockerd-{}.log", generation + 1));
        let log = std::fs::File::create(&log_path).map_err(|e| format!("dockerd log: {e}"))?;
        let log_err = log.try_clone().map_err(|e| format!("dockerd log: {e}"))?;
        let socket = dir.join("docker.sock");
        let child = Command::new(DOCKERD_BIN)
            .arg("--config-file")
            .arg(&config_path)
            .arg("--data-root")
            .arg(dir.join("data"))
            .arg("--exec-root")
            .arg(dir.join("exec"))
            .arg("--pidfile")
            .arg(dir.join("docker.pid"))
            .arg("--host")
            .arg(format!("unix://{}", socket.display()))
            .args(["--bridge=none", "--iptables=false", "--ip6tables=false"])
            .args(["--ip-forward=false", "--ip-masq=false"])
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn()
            .map_err(|e| format!("spawn {DOCKERD_BIN}: {e}"))?;
        let mut daemon = Dockerd {
            child,
            socket,
            log_path,
            dir: dir.to_path_buf(),
            cli,
            cgroup_parent,
            storage_driver: driver,
        };
        daemon.wait_ready().await?;
        Ok(daemon)
    }

    /// Waits (20 s at most) until `docker version` reaches the daemon.
    async fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("dockerd exited early ({status}):\n{}", self.log_tail()));
            }
            if self.socket.exists() && self.docker(&["version"]).await.is_ok() {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!("dockerd did not answer in 20 s:\n{}", self.log_tail()));
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// The client binary in use.
    pub fn cli(&self) -> &Path {
        &self.cli
    }

    /// `docker --host SOCKET ARGS` with a private client config; (stdout, stderr) on success, the
    /// exit status and both streams on failure.
    pub async fn docker(&self, args: &[&str]) -> Result<(String, String), String> {
        let mut command = tokio::process::Command::new(&self.cli);
        command
            .arg("--host")
            .arg(format!("unix://{}", self.socket.display()))
            .args(args)
            .env("DOCKER_CONFIG", self.dir.join("client"))
            .stdin(Stdio::null())
            .kill_on_drop(true);
        for name in CLIENT_ENV_REMOVE {
            command.env_remove(name);
        }
        crate::support::e2e::run(command, &format!("docker {args:?}"), Duration::from_secs(90)).await
    }

    /// `docker` that must succeed; returns stdout.
    pub async fn docker_ok(&self, args: &[&str]) -> String {
        match self.docker(args).await {
            Ok((stdout, _)) => stdout,
            Err(e) => panic!("{e}\ndockerd log:\n{}", self.log_tail()),
        }
    }

    /// The current length of the daemon's log, to read what comes after with [`Dockerd::log_since`].
    pub fn log_offset(&self) -> usize {
        std::fs::metadata(&self.log_path).map_or(0, |m| m.len() as usize)
    }

    /// The daemon's log from `offset` on.
    pub fn log_since(&self, offset: usize) -> String {
        let bytes = std::fs::read(&self.log_path).unwrap_or_default();
        String::from_utf8_lossy(bytes.get(offset..).unwrap_or_default()).into_owned()
    }

    /// The last lines of the daemon's log, for failure messages.
    pub fn log_tail(&self) -> String {
        let text = self.log_since(0);
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// Stops the daemon and returns the mounts it left under its directory (before they are
    /// detached), so a test can assert there are none.
    pub fn shutdown(mut self) -> Vec<PathBuf> {
        self.stop();
        mounts_under(&self.dir)
    }

    /// SIGTERM (dockerd stops its containers and its containerd), SIGKILL after 15 s.
    fn stop(&mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        eprintln!(
            "!! dockerd {} ignored SIGTERM for 15 s; killing it",
            self.child.id()
        );
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        self.stop();
        let mut left = mounts_under(&self.dir);
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
        for dir in cgroups::named(&self.cgroup_parent) {
            cgroups::remove(&dir);
        }
    }
}

/// Runs `test` inside the namespaces ([`netns::run_test_inside`]) and checks that nothing it did
/// outlived it on the host: no dockerd mount, and no cgroup of the daemons whose directories are
/// named with `dir_prefix` (which starts with [`PREFIX`]). Each test that starts dockerd gives
/// its daemons a prefix of its own, so tests running side by side do not count each other's
/// cgroups as leftovers.
///
/// [`netns::run_test_inside`]: crate::support::netns::run_test_inside
/// A dockerd test's whole entry: inside the namespaces runs `body` within `inside`; outside,
/// when `present` finds what it needs, re-executes the test `name` there (dockerd's directories
/// under `dir_prefix`) within `outside`, failing with its output if it failed.
pub async fn namespaced_test<F: std::future::Future<Output = ()>>(
    name: &str,
    dir_prefix: &str,
    (inside, outside): (Duration, Duration),
    body: F,
    present: impl FnOnce() -> bool,
) {
    if crate::support::netns::inside_runs(inside, body).await || !present() {
        return;
    }
    run_test_inside(name, dir_prefix, outside)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
}

pub async fn run_test_inside(test: &str, dir_prefix: &str, timeout: Duration) -> Result<(), String> {
    assert!(
        dir_prefix.starts_with(PREFIX),
        "{dir_prefix} must start with {PREFIX}"
    );
    cgroups::remove_stale(dir_prefix);
    let mounts_before = host_mounts();
    let cgroups_before = cgroups::with_prefix(dir_prefix);
    let outcome = crate::support::netns::run_test_inside(test, timeout).await;
    // Whatever happened inside, nothing may be left outside.
    assert_eq!(
        host_mounts(),
        mounts_before,
        "dockerd mounts appeared on the host"
    );
    // The kernel may take a moment to let go of a cgroup whose last process just exited: a
    // cgroup still there after 5 s is one left behind.
    let mut cgroups_after = cgroups::with_prefix(dir_prefix);
    for _ in 0..50 {
        if cgroups_after == cgroups_before {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        cgroups_after = cgroups::with_prefix(dir_prefix);
    }
    assert_eq!(cgroups_after, cgroups_before, "dockerd cgroups left behind");
    outcome
}

/// Mount points of this mount namespace that a private dockerd could leave: under a directory
/// named with [`PREFIX`], or at dockerd's and containerd's fixed paths. (Other mounts may come
/// and go while a test runs: other test binaries may run at the same time.)
pub fn host_mounts() -> std::collections::BTreeSet<String> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let fixed = [
        "/run/docker",
        "/run/containerd",
        "/var/run/docker",
        "/var/lib/docker",
    ];
    info.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|m| m.contains(PREFIX) || fixed.iter().any(|f| m.starts_with(f)))
        .map(str::to_string)
        .collect()
}

/// Mount points at or below `dir`, from /proc/self/mountinfo.
pub fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    info.lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(|escaped| PathBuf::from(escaped.replace("\\040", " ")))
        .filter(|mount_point| mount_point.starts_with(dir))
        .collect()
}
