//! The upstream side of the Docker end-to-end test: the token server, the local registry with
//! the standard test images and the runnable `library/busybox` image pushed, and an account of
//! what that side has answered ([`Seen`]), refused requests included, so a test can tell exactly
//! which upstream requests a round of pulls cost.

use std::time::Duration;

use crate::support::e2e::images::{self, TestImage, OCI_INDEX};
use crate::support::e2e::registry::{LoggedRequest, Registry};
use crate::support::e2e::token_server::TokenServer;
use crate::support::e2e::{Clock, Skopeo};
use crate::support::runnable_image;

/// The images pulled through the mirror, by repository.
pub const PULLED: &[&str] = &[
    "library/alpine",
    "library/multi",
    "library/dockerv2",
    runnable_image::REPO,
];

/// The upstream side: token server and registry with the test images pushed.
pub struct Upstream {
    pub token: TokenServer,
    pub registry: Registry,
    pub images: Vec<TestImage>,
    _work: tempfile::TempDir,
}

impl Upstream {
    pub async fn start(clock: &Clock) -> Upstream {
        let token = TokenServer::start().await.expect("token server");
        let registry = Registry::start(&token).await.expect("docker-registry");
        let work = tempfile::Builder::new()
            .prefix("regcache-e2e-docker-work-")
            .tempdir()
            .expect("work dir");
        let layouts = work.path().join("layouts");
        let busybox = runnable_image::static_busybox().expect("static busybox");
        let images = tokio::task::spawn_blocking(move || {
            let mut all = images::build_all(&layouts)?;
            all.push(runnable_image::build(&layouts.join("busybox"), &busybox)?);
            Ok::<_, std::io::Error>(all)
        })
        .await
        .expect("build task")
        .expect("build images");
        let skopeo = Skopeo::new().expect("skopeo setup");
        images::push_all(&skopeo, &images, &registry.host())
            .await
            .unwrap_or_else(|e| panic!("{e}\nregistry log: {}", registry.log_path().display()));
        clock.mark(&format!(
            "registry {} up, {} images pushed",
            registry.addr(),
            images.len()
        ));
        Upstream {
            token,
            registry,
            images,
            _work: work,
        }
    }

    pub fn image(&self, repo: &str) -> &TestImage {
        self.images.iter().find(|i| i.repo == repo).expect("image")
    }

    /// The images the test pulls, in [`PULLED`] order.
    pub fn pulled(&self) -> Vec<&TestImage> {
        PULLED.iter().map(|repo| self.image(repo)).collect()
    }

    /// What the upstream side has answered so far, once the registry log has been quiet for a
    /// moment.
    pub async fn seen(&self) -> Seen {
        let completed = self
            .registry
            .settled_requests(Duration::from_millis(600), Duration::from_secs(10))
            .await;
        Seen {
            completed,
            refused: refused_requests(&self.registry),
            tokens: self.token.requests().len(),
        }
    }
}

/// Everything the upstream side answered up to some moment.
pub struct Seen {
    /// Registry requests that reached a handler (`response completed`).
    pub completed: Vec<LoggedRequest>,
    /// Registry requests refused for want of a (sufficient) token: (method, URI).
    pub refused: Vec<(String, String)>,
    /// Token server requests.
    pub tokens: usize,
}

impl Seen {
    /// What happened between `earlier` and this: (completed, refused, token requests).
    pub fn since<'a>(&'a self, earlier: &Seen) -> (&'a [LoggedRequest], &'a [(String, String)], usize) {
        (
            &self.completed[earlier.completed.len()..],
            &self.refused[earlier.refused.len()..],
            self.tokens - earlier.tokens,
        )
    }
}

/// Requests the registry refused before any handler ran: distribution logs those as `error
/// authorizing context: ...`, never as `response completed` (which `LoggedRequest` parses).
pub fn refused_requests(registry: &Registry) -> Vec<(String, String)> {
    let text = std::fs::read_to_string(registry.log_path()).unwrap_or_default();
    text.lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|v| {
            v["msg"]
                .as_str()
                .is_some_and(|m| m.starts_with("error authorizing context"))
        })
        .map(|v| {
            let field = |name: &str| v[name].as_str().unwrap_or_default().to_string();
            (field("http.request.method"), field("http.request.uri"))
        })
        .collect()
}

/// The config digest dockerd must record as the image ID: the host platform's for an index.
pub fn expected_image_id(image: &TestImage) -> String {
    let read = |name: &str| -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(image.layout.join(name)).expect("layout file")).expect("json")
    };
    let top = read("manifest.json");
    let manifest = if image.media_type == OCI_INDEX {
        let arch = runnable_image::host_arch();
        let child = top["manifests"]
            .as_array()
            .expect("index")
            .iter()
            .find(|d| d["platform"]["architecture"] == arch)
            .unwrap_or_else(|| panic!("{}: no {arch} manifest", image.repo));
        let digest = child["digest"].as_str().expect("digest");
        read(&format!("{}.manifest.json", digest.trim_start_matches("sha256:")))
    } else {
        top
    };
    manifest["config"]["digest"]
        .as_str()
        .expect("config digest")
        .to_string()
}
