//! The real upstream side with one test image on it: a Docker-Hub-like token server, the
//! distribution registry behind it with the image pushed, a work directory and skopeo.

use std::path::Path;
use std::time::Duration;

use super::images::{self, TestImage};
use super::registry::Registry;
use super::token_server::TokenServer;
use super::Skopeo;

pub struct Pushed {
    pub token: TokenServer,
    pub registry: Registry,
    pub image: TestImage,
    pub skopeo: Skopeo,
    pub work: tempfile::TempDir,
}

impl Pushed {
    /// Starts the token server and registry and pushes the test image `repo` (`library/alpine`,
    /// `myorg/private`, ...); the work directory's name starts with `prefix`.
    pub async fn start(prefix: &str, repo: &str) -> Pushed {
        let token = TokenServer::start().await.expect("token server");
        let registry = Registry::start(&token).await.expect("docker-registry");
        let work = tempfile::Builder::new()
            .prefix(prefix)
            .tempdir()
            .expect("work dir");
        let skopeo = Skopeo::new().expect("skopeo setup");
        let image = images::push_one(&skopeo, &registry.host(), work.path(), repo).await;
        Pushed {
            token,
            registry,
            image,
            skopeo,
            work,
        }
    }

    /// skopeo copies the image from the registry at `mirror` (`127.0.0.1:PORT`) into
    /// `work/<name>` as an anonymous client, within two minutes; the directory it wrote.
    pub async fn pull_from(&self, mirror: &str, name: &str) -> Result<std::path::PathBuf, String> {
        let out = self.work.path().join(name);
        let src = format!("docker://{mirror}/{}", self.image.reference());
        let dst = format!("dir:{}", out.display());
        let copy = self
            .skopeo
            .copy(&src, &dst, &["--src-tls-verify=false", "--src-no-creds"], None);
        tokio::time::timeout(Duration::from_secs(120), copy)
            .await
            .map_err(|_| format!("skopeo copy {src} timed out"))??;
        Ok(out)
    }

    /// Whether `dir` holds exactly the pushed image; the number of files compared.
    pub fn same_as_pushed(&self, dir: &Path) -> Result<usize, String> {
        super::compare_dirs(&self.image.layout, dir)
    }
}
