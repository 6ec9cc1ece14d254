//! End-to-end test of regcache with the real containerd client, the way
//! production hosts pull: a private `containerd` daemon (started by the test
//! as a child process, its root, state and socket in a tempdir, the CRI plugin
//! off, `isolated` content sharing) and `ctr images pull --hosts-dir` with a
//! `docker.io/hosts.toml` that names regcache as the only working mirror (the
//! `server` is a dead loopback port, so containerd can never fall back to the
//! internet). regcache runs in-process in front of a local CNCF distribution
//! registry behind the test token server. The test pulls the OCI image, the
//! multi-arch index and the Docker schema2 image, checks the digests and bytes
//! containerd stored against what was pushed, checks every request carried
//! `?ns=docker.io`, and pulls again in a fresh namespace (which downloads every
//! blob again) to check that regcache served it all without one upstream blob
//! GET.
//!
//! Layers are unpacked into the overlayfs snapshotter (the native one where
//! overlayfs is unavailable); the images are removed again, garbage collected
//! and no mount is left behind.
//!
//! Needs `docker-registry`, `skopeo`, `containerd` and `ctr` on PATH, and root
//! (containerd's snapshotters mount). Without them the test prints a loud notice
//! and passes, except when `CI` is set, where it fails.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::e2e::images::{self, TestImage, DOCKER_LIST, OCI_INDEX};
use crate::support::e2e::registry::Registry;
use crate::support::e2e::token_server::TokenServer;
use crate::support::e2e::{self, Clock, HttpClient, Skopeo};
use crate::support::tools;

/// The containerd daemon binary.
const CONTAINERD_BIN: &str = "containerd";
/// The containerd command-line client.
const CTR_BIN: &str = "ctr";
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

/// True when every external tool is present (and we are root, which the
/// overlayfs snapshotter needs). Otherwise prints a loud notice and returns
/// false (the test skips), or panics when running under CI.
fn tools_present(test: &str) -> bool {
    let mut missing = e2e::missing_tools();
    for tool in [CONTAINERD_BIN, CTR_BIN] {
        if tools::find(tool).is_none() {
            missing.push(tool.to_string());
        }
    }
    if !running_as_root() {
        missing.push("root (uid 0)".to_string());
    }
    if missing.is_empty() {
        return true;
    }
    tools::missing(
        test,
        &missing,
        "Install the tools with: apt-get install -y docker-registry skopeo containerd\n\
         !! and run the test as root (it starts a private containerd daemon).",
    );
    false
}

/// True when the effective user is root (`Uid:` line of /proc/self/status).
fn running_as_root() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|status| {
        status
            .lines()
            .find_map(|line| line.strip_prefix("Uid:"))
            .and_then(|ids| ids.split_whitespace().nth(1))
            == Some("0")
    })
}

/// The upstream side: token server and registry with the test images pushed.
struct Upstream {
    _token: TokenServer,
    registry: Registry,
    images: Vec<TestImage>,
    _work: tempfile::TempDir,
}

impl Upstream {
    async fn start(clock: &Clock) -> Upstream {
        let token = TokenServer::start().await.expect("token server");
        let registry = Registry::start(&token).await.expect("docker-registry");
        let work = tempfile::Builder::new()
            .prefix("regcache-e2e-ctrd-work-")
            .tempdir()
            .expect("work dir");
        let layouts = work.path().join("layouts");
        let images = tokio::task::spawn_blocking(move || images::build_all(&layouts))
            .await
            .expect("build task")
            .expect("build images");
        let skopeo = Skopeo::new().expect("skopeo setup");
        images::push_all(&skopeo, &images, &registry.host())
            .await
            .unwrap_or_else(|e| panic!("{e}\nregistry log: {}", registry.log_path().display()));

        // The digests the registry answers are the ones built locally.
        let client = HttpClient::new();
        for image in images.iter().filter(|i| i.public) {
            let url = format!("{}/v2/{}/manifests/{}", registry.url(), image.repo, image.tag);
            let head = client
                .pull_request(hyper::Method::HEAD, &url, e2e::CONTAINERD_ACCEPT)
                .await
                .unwrap_or_else(|e| panic!("HEAD {url}: {e}"));
            assert_eq!(head.status, 200, "HEAD {url}");
            assert_eq!(
                head.header("docker-content-digest"),
                Some(image.digest.as_str()),
                "registry digest of {}",
                image.reference()
            );
        }
        clock.mark(&format!(
            "registry {} up, {} images pushed",
            registry.addr(),
            images.len()
        ));
        Upstream {
            _token: token,
            registry,
            images,
            _work: work,
        }
    }

    fn image(&self, repo: &str) -> &TestImage {
        self.images.iter().find(|i| i.repo == repo).expect("image")
    }

    /// Upstream blob GETs once the registry log has been quiet for a moment.
    async fn settled_blob_gets(&self) -> usize {
        self.registry
            .settled_requests(Duration::from_millis(600), Duration::from_secs(10))
            .await
            .iter()
            .filter(|r| r.is_blob_get())
            .count()
    }
}

/// regcache running in-process with the local registry as its only upstream
/// (`docker.io`, default).
struct Mirror {
    running: regcache::app::Running,
    addr: SocketAddr,
    _cache: tempfile::TempDir,
}

impl Mirror {
    async fn start(registry: &Registry) -> Mirror {
        let cache = tempfile::Builder::new()
            .prefix("regcache-e2e-ctrd-cache-")
            .tempdir()
            .expect("cache dir");
        let running = e2e::start_mirror(&registry.url(), cache.path(), "5m").await;
        let addr = running.local_addr();
        Mirror {
            running,
            addr,
            _cache: cache,
        }
    }
}

/// A private containerd daemon: its config, root, state, `opt` directory,
/// sockets and log all live in one tempdir. On drop the daemon is stopped
/// (SIGTERM, then SIGKILL), any mount left under the tempdir is detached and
/// the tempdir is removed.
struct Containerd {
    child: Child,
    socket: PathBuf,
    /// [`SNAPSHOTTER`], or [`FALLBACK_SNAPSHOTTER`] when containerd reports
    /// that overlayfs cannot be used here.
    snapshotter: &'static str,
    log_path: PathBuf,
    dir: tempfile::TempDir,
}

impl Containerd {
    /// Writes the config and starts the daemon; waits until `ctr version`
    /// reaches it.
    async fn start() -> Result<Containerd, String> {
        let dir = tempfile::Builder::new()
            .prefix("regcache-e2e-ctrd-")
            .tempdir()
            .map_err(|e| format!("containerd dir: {e}"))?;
        let base = dir.path();
        let socket = base.join("containerd.sock");
        let config = format!(
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
        );
        let config_path = base.join("config.toml");
        std::fs::write(&config_path, config).map_err(|e| format!("write containerd config: {e}"))?;
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

        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(status)) = daemon.child.try_wait() {
                return Err(format!(
                    "containerd exited early ({status}):\n{}",
                    daemon.log_tail()
                ));
            }
            if daemon.socket.exists() && daemon.ctr("default", &["version"]).await.is_ok() {
                daemon.pick_snapshotter().await?;
                return Ok(daemon);
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "containerd did not answer on {} in 20 s:\n{}",
                    daemon.socket.display(),
                    daemon.log_tail()
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn dir(&self) -> &Path {
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
    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log_path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// `ctr -a SOCKET -n NAMESPACE ARGS`; (stdout, stderr) on success, the
    /// exit status and both streams on failure.
    async fn ctr(&self, namespace: &str, args: &[&str]) -> Result<(String, String), String> {
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
        let output = tokio::time::timeout(Duration::from_secs(60), command.output())
            .await
            .map_err(|_| format!("ctr {args:?} timed out"))?
            .map_err(|e| format!("ctr {args:?}: {e}"))?;
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        if output.status.success() {
            Ok((stdout, stderr))
        } else {
            Err(format!(
                "ctr -n {namespace} {args:?} failed ({}):\nstdout: {}\nstderr: {}",
                output.status,
                stdout.trim(),
                stderr.trim()
            ))
        }
    }

    /// `ctr` that must succeed; returns stdout.
    async fn ctr_ok(&self, namespace: &str, args: &[&str]) -> String {
        match self.ctr(namespace, args).await {
            Ok((stdout, _)) => stdout,
            Err(e) => panic!("{e}\ncontainerd log:\n{}", self.log_tail()),
        }
    }

    /// Mount points at or below the daemon's tempdir.
    fn mounts(&self) -> Vec<PathBuf> {
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

/// The `hosts.toml` for `docker.io`: regcache is the one pull/resolve mirror;
/// the server is the dead discard port on loopback, so a fallback can never
/// leave the machine.
fn docker_io_hosts_toml(mirror: SocketAddr) -> String {
    format!(
        r#"server = "http://127.0.0.1:9"

[host."http://{mirror}"]
  capabilities = ["pull", "resolve"]
"#
    )
}

/// One request line of `ctr --http-dump` output.
#[derive(Clone, Debug, PartialEq, Eq)]
struct DumpedRequest {
    method: String,
    /// Path and query.
    target: String,
    host: String,
}

impl DumpedRequest {
    fn is_blob_get(&self) -> bool {
        self.method == "GET" && e2e::registry::is_blob_uri(&self.target)
    }
}

/// The HTTP requests in `ctr --http-dump` output. ctr logs every request
/// and response, bodies included, line by line to stderr; a body without a
/// final newline runs into the next request line (`...}GET /v2/... HTTP/1.1`),
/// so a request line is any line ending in ` HTTP/1.1`, its method being the
/// capital letters just before the target. The `Host:` header follows on the
/// next line (each dump is written in one piece).
fn parse_http_dump(stderr: &str) -> Vec<DumpedRequest> {
    let mut requests: Vec<DumpedRequest> = Vec::new();
    let mut want_host = false;
    for line in stderr.lines() {
        let text = dump_text(line);
        if want_host {
            want_host = false;
            if let Some(host) = text.strip_prefix("Host:") {
                if let Some(last) = requests.last_mut() {
                    last.host = host.trim().to_string();
                }
                continue;
            }
        }
        let Some((before, target)) = text
            .strip_suffix(" HTTP/1.1")
            .and_then(|request| request.rsplit_once(' '))
        else {
            continue;
        };
        let method_start = before
            .rfind(|c: char| !c.is_ascii_uppercase())
            .map_or(0, |i| i + 1);
        let method = &before[method_start..];
        if method.is_empty() || !target.starts_with('/') {
            continue;
        }
        requests.push(DumpedRequest {
            method: method.to_string(),
            target: target.to_string(),
            host: String::new(),
        });
        want_host = true;
    }
    requests
}

/// The message of one logrus line (`... msg="TEXT"`), unquoted; other lines
/// as they are.
fn dump_text(line: &str) -> String {
    let Some(start) = line.find("msg=") else {
        return line.trim().to_string();
    };
    let rest = &line[start + 4..];
    let Some(quoted) = rest.strip_prefix('"') else {
        return rest.split_whitespace().next().unwrap_or("").to_string();
    };
    let mut out = String::new();
    let mut chars = quoted.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => break,
            '\\' => match chars.next() {
                Some('r') | None => {}
                Some('n') => out.push('\n'),
                Some('t') => out.push('\t'),
                Some(other) => out.push(other),
            },
            c => out.push(c),
        }
    }
    out.trim().to_string()
}

/// One way of pulling one test image.
struct PullSpec<'a> {
    image: &'a TestImage,
    /// Extra `ctr images pull` flags (platform selection).
    flags: &'a [&'a str],
    /// The platform whose content is fetched; `None` for all platforms.
    platform: Option<&'a str>,
}

impl PullSpec<'_> {
    /// `docker.io/<repo>:<tag>`.
    fn reference(&self) -> String {
        format!("docker.io/{}", self.image.reference())
    }

    /// Every digest containerd must hold after the pull, with its file in the
    /// image's `dir:` layout: the top manifest, the selected child manifests
    /// of an index, and their configs and layers.
    fn expected_content(&self) -> BTreeMap<String, PathBuf> {
        let layout = &self.image.layout;
        let read = |name: &str| -> serde_json::Value {
            let bytes = std::fs::read(layout.join(name)).expect("layout file");
            serde_json::from_slice(&bytes).expect("layout json")
        };
        let blob_file = |digest: &str| layout.join(digest.trim_start_matches("sha256:"));
        let mut content = BTreeMap::new();
        content.insert(self.image.digest.clone(), layout.join("manifest.json"));
        let top = read("manifest.json");
        let mut manifests = Vec::new();
        if self.image.media_type == OCI_INDEX || self.image.media_type == DOCKER_LIST {
            for desc in top["manifests"].as_array().expect("index manifests") {
                let platform = format!(
                    "{}/{}",
                    desc["platform"]["os"].as_str().unwrap_or(""),
                    desc["platform"]["architecture"].as_str().unwrap_or("")
                );
                if self.platform.is_some_and(|want| want != platform) {
                    continue;
                }
                let digest = desc["digest"].as_str().expect("child digest").to_string();
                let file = format!("{}.manifest.json", digest.trim_start_matches("sha256:"));
                manifests.push(read(&file));
                content.insert(digest, layout.join(file));
            }
        } else {
            manifests.push(top);
        }
        for manifest in manifests {
            let mut descriptors = vec![manifest["config"].clone()];
            descriptors.extend(manifest["layers"].as_array().cloned().unwrap_or_default());
            for desc in descriptors {
                let digest = desc["digest"].as_str().expect("digest").to_string();
                let file = blob_file(&digest);
                content.insert(digest, file);
            }
        }
        content
    }

    /// Config and layer blobs among [`PullSpec::expected_content`].
    fn expected_blobs(&self) -> BTreeSet<String> {
        self.expected_content()
            .into_iter()
            .filter(|(_, file)| {
                let name = file.file_name().and_then(|n| n.to_str()).unwrap_or("");
                !name.ends_with("manifest.json")
            })
            .map(|(digest, _)| digest)
            .collect()
    }
}

/// What one round of pulls (one namespace) sent to the mirror.
#[derive(Debug, Default)]
struct RoundStats {
    requests: usize,
    blob_gets: usize,
}

/// Pulls every spec into `namespace` with `ctr images pull` (unpacking into
/// the daemon's snapshotter) and checks what containerd recorded: the image
/// digest, `ctr images check` (complete and unpacked), the namespace's content
/// (exactly the expected digests, byte for byte the pushed files) and the HTTP
/// requests (all to the mirror, all with `?ns=docker.io`, every blob not yet
/// in the namespace downloaded).
async fn pull_round(
    daemon: &Containerd,
    namespace: &str,
    hosts_dir: &Path,
    mirror: SocketAddr,
    specs: &[PullSpec<'_>],
    clock: &Clock,
) -> RoundStats {
    let hosts_dir = hosts_dir.to_string_lossy().into_owned();
    let mut stats = RoundStats::default();
    let mut all_content = BTreeMap::new();
    let mut present = BTreeSet::new();
    for spec in specs {
        let reference = spec.reference();
        let mut args = vec![
            "images",
            "pull",
            "--hosts-dir",
            &hosts_dir,
            "--snapshotter",
            daemon.snapshotter,
            "--http-dump",
        ];
        args.extend_from_slice(spec.flags);
        args.push(&reference);
        let started = Instant::now();
        let (_, stderr) = daemon.ctr(namespace, &args).await.unwrap_or_else(|e| {
            panic!(
                "{namespace}: pull {reference} through regcache: {e}\ncontainerd log:\n{}",
                daemon.log_tail()
            )
        });
        let pull_time = started.elapsed();

        // Every request went to regcache, carrying containerd's `?ns=`.
        let requests = parse_http_dump(&stderr);
        assert!(
            !requests.is_empty(),
            "{reference}: no requests found in the --http-dump output:\n{stderr}"
        );
        let mirror_host = mirror.to_string();
        for request in &requests {
            assert_eq!(
                request.host, mirror_host,
                "{reference}: request not sent to the mirror: {request:?}"
            );
            assert!(
                request.target.starts_with(&format!("/v2/{}/", spec.image.repo))
                    && request.target.ends_with("?ns=docker.io"),
                "{reference}: unexpected request target: {request:?}"
            );
        }
        let head = format!(
            "/v2/{}/manifests/{}?ns=docker.io",
            spec.image.repo, spec.image.tag
        );
        assert!(
            requests.iter().any(|r| r.method == "HEAD" && r.target == head),
            "{reference}: containerd never resolved the tag with HEAD {head}: {requests:?}"
        );
        let fetched: BTreeSet<String> = requests
            .iter()
            .filter(|r| r.is_blob_get())
            .filter_map(|r| r.target.split('?').next()?.rsplit_once("/blobs/"))
            .map(|(_, digest)| digest.to_string())
            .collect();
        // Blobs an earlier pull put in this namespace are not downloaded again
        // (alpine and dockerv2 share a layer).
        let want: BTreeSet<String> = spec.expected_blobs().difference(&present).cloned().collect();
        assert_eq!(
            fetched, want,
            "{namespace}: {reference}: blobs downloaded from the mirror"
        );
        stats.requests += requests.len();
        stats.blob_gets += requests.iter().filter(|r| r.is_blob_get()).count();

        // The digest containerd recorded is the one pushed.
        let listing = daemon.ctr_ok(namespace, &["images", "ls"]).await;
        let recorded = listing
            .lines()
            .map(|line| line.split_whitespace().collect::<Vec<_>>())
            .find(|cols| cols.first() == Some(&reference.as_str()))
            .and_then(|cols| cols.get(2).map(|d| d.to_string()))
            .unwrap_or_else(|| panic!("{reference} missing from `ctr images ls`:\n{listing}"));
        assert_eq!(
            recorded, spec.image.digest,
            "{namespace}: digest containerd recorded for {reference}"
        );

        // `ctr images check`: all content present, unpacked.
        let check = daemon
            .ctr_ok(
                namespace,
                &["images", "check", "--snapshotter", daemon.snapshotter],
            )
            .await;
        let row = check
            .lines()
            .find(|line| line.split_whitespace().next() == Some(reference.as_str()))
            .unwrap_or_else(|| panic!("{reference} missing from `ctr images check`:\n{check}"));
        let cols: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(cols.get(2), Some(&spec.image.digest.as_str()), "{row}");
        assert_eq!(cols.get(3), Some(&"complete"), "{namespace}: {row}");
        assert_eq!(cols.last(), Some(&"true"), "{namespace}: not unpacked: {row}");

        all_content.extend(spec.expected_content());
        present.extend(spec.expected_blobs());
        eprintln!(
            "    {namespace}: {reference} pulled and unpacked in {:.2}s: {} requests, {} blob GETs, digest {recorded}",
            pull_time.as_secs_f64(),
            requests.len(),
            fetched.len()
        );
    }

    // The namespace holds exactly the pulled content, byte for byte.
    let listed = daemon.ctr_ok(namespace, &["content", "ls", "--quiet"]).await;
    let listed: BTreeSet<String> = listed.lines().map(|l| l.trim().to_string()).collect();
    let expected: BTreeSet<String> = all_content.keys().cloned().collect();
    assert_eq!(listed, expected, "{namespace}: content store");
    for (digest, file) in &all_content {
        let stored = content_get(daemon, namespace, digest).await;
        let pushed = std::fs::read(file).expect("layout file");
        assert!(
            stored == pushed,
            "{namespace}: {digest}: containerd holds {} bytes that differ from the pushed {} bytes",
            stored.len(),
            pushed.len()
        );
        assert_eq!(&images::sha256_digest(&stored), digest);
    }
    clock.mark(&format!(
        "{namespace}: {} images pulled, {} content blobs verified byte for byte",
        specs.len(),
        all_content.len()
    ));
    stats
}

/// `ctr content get DIGEST` as raw bytes.
async fn content_get(daemon: &Containerd, namespace: &str, digest: &str) -> Vec<u8> {
    let mut command = tokio::process::Command::new(CTR_BIN);
    command
        .arg("--address")
        .arg(&daemon.socket)
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

/// Removes every image of `namespace` (waiting for garbage collection) and
/// checks that no snapshot is left.
async fn remove_images(daemon: &Containerd, namespace: &str) {
    let refs = daemon.ctr_ok(namespace, &["images", "ls", "--quiet"]).await;
    let refs: Vec<&str> = refs.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    if !refs.is_empty() {
        let mut args = vec!["images", "rm", "--sync"];
        args.extend(refs.iter().copied());
        daemon.ctr_ok(namespace, &args).await;
    }
    let snapshots = daemon
        .ctr_ok(
            namespace,
            &["snapshots", "--snapshotter", daemon.snapshotter, "ls"],
        )
        .await;
    let left: Vec<&str> = snapshots
        .lines()
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .collect();
    assert!(
        left.is_empty(),
        "{namespace}: snapshots left after removing images: {left:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn containerd_pulls_through_mirror() {
    if !tools_present("containerd_pulls_through_mirror") {
        return;
    }
    let clock = Clock::new("e2e-containerd");
    let body = async {
        let upstream = Upstream::start(&clock).await;
        let mirror = Mirror::start(&upstream.registry).await;
        let daemon = Containerd::start().await.unwrap_or_else(|e| panic!("{e}"));
        clock.mark(&format!(
            "regcache on {}, containerd on {} ({} snapshotter)",
            mirror.addr,
            daemon.socket.display(),
            daemon.snapshotter
        ));

        let hosts_dir = daemon.dir().join("certs.d");
        std::fs::create_dir_all(hosts_dir.join("docker.io")).expect("hosts dir");
        std::fs::write(
            hosts_dir.join("docker.io").join("hosts.toml"),
            docker_io_hosts_toml(mirror.addr),
        )
        .expect("write hosts.toml");

        let alpine = upstream.image("library/alpine");
        let multi = upstream.image("library/multi");
        let dockerv2 = upstream.image("library/dockerv2");
        let before = upstream.settled_blob_gets().await;

        // Round 1, cold cache: every platform of the index.
        let cold = [
            PullSpec {
                image: alpine,
                flags: &[],
                platform: None,
            },
            PullSpec {
                image: multi,
                flags: &["--all-platforms"],
                platform: None,
            },
            PullSpec {
                image: dockerv2,
                flags: &[],
                platform: None,
            },
        ];
        let round1 = pull_round(&daemon, "regcache-cold", &hosts_dir, mirror.addr, &cold, &clock).await;
        let after_round1 = upstream.settled_blob_gets().await;
        clock.mark(&format!(
            "cold round: {round1:?} to regcache, {} upstream blob GETs",
            after_round1 - before
        ));
        assert!(after_round1 > before, "a cold pull must fetch blobs upstream");

        // Round 2, warm cache, fresh namespace: isolated content sharing makes
        // containerd download every blob again, all from regcache's cache.
        let warm = [
            PullSpec {
                image: alpine,
                flags: &[],
                platform: None,
            },
            PullSpec {
                image: multi,
                flags: &["--platform", "linux/amd64"],
                platform: Some("linux/amd64"),
            },
            PullSpec {
                image: dockerv2,
                flags: &[],
                platform: None,
            },
        ];
        let round2 = pull_round(&daemon, "regcache-warm", &hosts_dir, mirror.addr, &warm, &clock).await;
        let after_round2 = upstream.settled_blob_gets().await;
        clock.mark(&format!(
            "warm round: {round2:?} to regcache, {} upstream blob GETs",
            after_round2 - after_round1
        ));
        assert!(round2.blob_gets > 0, "the warm round downloaded nothing");
        assert_eq!(
            after_round2, after_round1,
            "warm pulls fetched blobs upstream again"
        );

        // Clean up: images, snapshots, and no mount left behind.
        for namespace in ["regcache-cold", "regcache-warm"] {
            remove_images(&daemon, namespace).await;
        }
        let mounts = daemon.mounts();
        assert!(
            mounts.is_empty(),
            "mounts left under the containerd dir: {mounts:?}"
        );
        drop(daemon);
        tokio::time::timeout(Duration::from_secs(30), mirror.running.shutdown())
            .await
            .expect("regcache shut down in time");
        clock.mark("done");
    };
    tokio::time::timeout(Duration::from_secs(120), body)
        .await
        .expect("test timed out");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_dump_lines_parse() {
        let stderr = concat!(
            "time=\"2024-01-01T00:00:00Z\" level=info msg=\"HEAD /v2/library/a/manifests/latest?ns=docker.io HTTP/1.1\\r\"\n",
            "time=\"2024-01-01T00:00:00Z\" level=info msg=\"Host: 127.0.0.1:5000\\r\"\n",
            "time=\"2024-01-01T00:00:00Z\" level=info msg=\"Accept: */*\\r\"\n",
            "time=\"2024-01-01T00:00:00Z\" level=info msg=\"HTTP/1.1 200 OK\\r\"\n",
            "time=\"2024-01-01T00:00:00Z\" level=info msg=\"  \\\"schemaVersion\\\": 2\"\n",
            "time=\"2024-01-01T00:00:00Z\" level=info msg=\"}GET /v2/library/a/blobs/sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb?ns=docker.io HTTP/1.1\"\n",
            "time=\"2024-01-01T00:00:00Z\" level=info msg=\"Host: 127.0.0.1:5001\"\n",
            "GET /v2/library/a/blobs/sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa?ns=docker.io HTTP/1.1\n",
            "Host: 127.0.0.1:5000\n",
        );
        let requests = parse_http_dump(stderr);
        assert_eq!(requests.len(), 3, "{requests:?}");
        assert_eq!(requests[0].method, "HEAD");
        assert_eq!(requests[0].target, "/v2/library/a/manifests/latest?ns=docker.io");
        assert_eq!(requests[0].host, "127.0.0.1:5000");
        assert!(requests[1].is_blob_get());
        assert_eq!(requests[1].method, "GET");
        assert_eq!(requests[1].host, "127.0.0.1:5001");
        assert!(requests[2].is_blob_get());
        assert_eq!(requests[2].host, "127.0.0.1:5000");
    }

    #[test]
    fn hosts_toml_names_only_loopback() {
        let text = docker_io_hosts_toml("127.0.0.1:5000".parse().unwrap());
        let parsed: toml::Value = toml::from_str(&text).expect("valid toml");
        assert_eq!(parsed["server"].as_str(), Some("http://127.0.0.1:9"));
        let caps = &parsed["host"]["http://127.0.0.1:5000"]["capabilities"];
        assert_eq!(caps.as_array().map(|a| a.len()), Some(2));
    }
}
