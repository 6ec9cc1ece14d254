//! Rounds of `ctr images pull` through regcache, and what each must leave behind: the requests
//! containerd sent, the digests it recorded and the content it stores, byte for byte.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Instant;

use super::daemon::Containerd;
use super::http_dump::{parse_http_dump, DumpedRequest};
use crate::support::e2e::images::{self, TestImage, DOCKER_LIST, OCI_INDEX};
use crate::support::e2e::Clock;

/// The `hosts.toml` for `docker.io`: regcache is the one pull/resolve mirror;
/// the server is the dead discard port on loopback, so a fallback can never
/// leave the machine.
pub(crate) fn docker_io_hosts_toml(mirror: SocketAddr) -> String {
    format!(
        r#"server = "http://127.0.0.1:9"

[host."http://{mirror}"]
  capabilities = ["pull", "resolve"]
"#
    )
}

/// One way of pulling one test image.
pub(crate) struct PullSpec<'a> {
    pub(crate) image: &'a TestImage,
    /// Extra `ctr images pull` flags (platform selection).
    pub(crate) flags: &'a [&'a str],
    /// The platform whose content is fetched; `None` for all platforms.
    pub(crate) platform: Option<&'a str>,
}

impl PullSpec<'_> {
    /// `docker.io/<repo>:<tag>`.
    pub(crate) fn reference(&self) -> String {
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
pub(crate) struct RoundStats {
    requests: usize,
    pub(crate) blob_gets: usize,
}

/// Pulls every spec into `namespace` with `ctr images pull` (unpacking into
/// the daemon's snapshotter) and checks what containerd recorded: the image
/// digest, `ctr images check` (complete and unpacked), the namespace's content
/// (exactly the expected digests, byte for byte the pushed files) and the HTTP
/// requests (all to the mirror, all with `?ns=docker.io`, every blob not yet
/// in the namespace downloaded).
pub(crate) async fn pull_round(
    daemon: &Containerd,
    namespace: &str,
    hosts_dir: &Path,
    mirror: SocketAddr,
    specs: &[PullSpec<'_>],
    clock: &Clock,
) -> RoundStats {
    let round = Round {
        daemon,
        namespace,
        hosts_dir: hosts_dir.to_string_lossy().into_owned(),
        mirror,
    };
    let mut stats = RoundStats::default();
    let mut all_content = BTreeMap::new();
    let mut present = BTreeSet::new();
    for spec in specs {
        let reference = spec.reference();
        let started = Instant::now();
        let requests = round.pull(spec).await;
        let pull_time = started.elapsed();
        round.check_requests(spec, &requests);
        let fetched = round.check_fetched(spec, &requests, &present);
        stats.requests += requests.len();
        stats.blob_gets += requests.iter().filter(|r| r.is_blob_get()).count();
        let recorded = round.check_recorded(spec).await;
        all_content.extend(spec.expected_content());
        present.extend(spec.expected_blobs());
        eprintln!(
            "    {namespace}: {reference} pulled and unpacked in {:.2}s: {} requests, {} blob GETs, digest {recorded}",
            pull_time.as_secs_f64(),
            requests.len(),
            fetched
        );
    }
    round.check_content(&all_content).await;
    clock.mark(&format!(
        "{namespace}: {} images pulled, {} content blobs verified byte for byte",
        specs.len(),
        all_content.len()
    ));
    stats
}

/// One round: pulls into one namespace through the mirror.
struct Round<'a> {
    daemon: &'a Containerd,
    namespace: &'a str,
    hosts_dir: String,
    mirror: SocketAddr,
}

impl Round<'_> {
    /// `ctr images pull --http-dump`; the requests it sent.
    async fn pull(&self, spec: &PullSpec<'_>) -> Vec<DumpedRequest> {
        let (daemon, namespace) = (self.daemon, self.namespace);
        let reference = spec.reference();
        let mut args = vec![
            "images",
            "pull",
            "--hosts-dir",
            &self.hosts_dir,
            "--snapshotter",
            daemon.snapshotter,
            "--http-dump",
        ];
        args.extend_from_slice(spec.flags);
        args.push(&reference);
        let (_, stderr) = daemon.ctr(namespace, &args).await.unwrap_or_else(|e| {
            panic!(
                "{namespace}: pull {reference} through regcache: {e}\ncontainerd log:\n{}",
                daemon.log_tail()
            )
        });
        let requests = parse_http_dump(&stderr);
        assert!(
            !requests.is_empty(),
            "{reference}: no requests found in the --http-dump output:\n{stderr}"
        );
        requests
    }

    /// Every request went to regcache, carrying containerd's `?ns=`, and the tag was resolved
    /// with HEAD.
    fn check_requests(&self, spec: &PullSpec<'_>, requests: &[DumpedRequest]) {
        let reference = spec.reference();
        let mirror_host = self.mirror.to_string();
        for request in requests {
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
    }

    /// The blobs downloaded are exactly those not yet in the namespace; returns how many.
    fn check_fetched(
        &self,
        spec: &PullSpec<'_>,
        requests: &[DumpedRequest],
        present: &BTreeSet<String>,
    ) -> usize {
        let fetched: BTreeSet<String> = requests
            .iter()
            .filter(|r| r.is_blob_get())
            .filter_map(|r| r.target.split('?').next()?.rsplit_once("/blobs/"))
            .map(|(_, digest)| digest.to_string())
            .collect();
        // Blobs an earlier pull put in this namespace are not downloaded again
        // (alpine and dockerv2 share a layer).
        let want: BTreeSet<String> = spec.expected_blobs().difference(present).cloned().collect();
        assert_eq!(
            fetched,
            want,
            "{}: {}: blobs downloaded from the mirror",
            self.namespace,
            spec.reference()
        );
        fetched.len()
    }

    /// The digest containerd recorded is the one pushed, and `ctr images check` finds all
    /// content present and unpacked. Returns the recorded digest.
    async fn check_recorded(&self, spec: &PullSpec<'_>) -> String {
        let (daemon, namespace) = (self.daemon, self.namespace);
        let reference = spec.reference();
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
        recorded
    }

    /// The namespace holds exactly the pulled content, byte for byte.
    async fn check_content(&self, all_content: &BTreeMap<String, PathBuf>) {
        let (daemon, namespace) = (self.daemon, self.namespace);
        let listed = daemon.ctr_ok(namespace, &["content", "ls", "--quiet"]).await;
        let listed: BTreeSet<String> = listed.lines().map(|l| l.trim().to_string()).collect();
        let expected: BTreeSet<String> = all_content.keys().cloned().collect();
        assert_eq!(listed, expected, "{namespace}: content store");
        for (digest, file) in all_content {
            let stored = daemon.content_get(namespace, digest).await;
            let pushed = std::fs::read(file).expect("layout file");
            assert!(
                stored == pushed,
                "{namespace}: {digest}: containerd holds {} bytes that differ from the pushed {} bytes",
                stored.len(),
                pushed.len()
            );
            assert_eq!(&images::sha256_digest(&stored), digest);
        }
    }
}

/// Removes every image of `namespace` (waiting for garbage collection) and
/// checks that no snapshot is left.
pub(crate) async fn remove_images(daemon: &Containerd, namespace: &str) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_toml_names_only_loopback() {
        let text = docker_io_hosts_toml("127.0.0.1:5000".parse().unwrap());
        let parsed: toml::Value = toml::from_str(&text).expect("valid toml");
        assert_eq!(parsed["server"].as_str(), Some("http://127.0.0.1:9"));
        let caps = &parsed["host"]["http://127.0.0.1:5000"]["capabilities"];
        assert_eq!(caps.as_array().map(|a| a.len()), Some(2));
    }
}
