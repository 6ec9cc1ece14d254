//! skopeo, run with a private trust policy, auth file and registries.conf, so the machine's own
//! configuration never takes part and only loopback registries can be contacted.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// The skopeo binary.
pub const SKOPEO_BIN: &str = "skopeo";

/// Runs `skopeo` with a private trust policy (accept anything), an empty auth
/// file for copies and, unless a test passes its own, an empty
/// `registries.conf` (through skopeo's hidden global `--registries-conf` flag;
/// skopeo 1.9 ignores `CONTAINERS_REGISTRIES_CONF`).
#[derive(Clone)]
pub struct Skopeo {
    dir: Arc<tempfile::TempDir>,
    policy: PathBuf,
    registries_conf: PathBuf,
    authfile: PathBuf,
}

impl Skopeo {
    /// Writes the private policy, auth and registries files.
    pub fn new() -> std::io::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("regcache-e2e-skopeo-")
            .tempdir()?;
        let policy = dir.path().join("policy.json");
        std::fs::write(&policy, r#"{"default":[{"type":"insecureAcceptAnything"}]}"#)?;
        let registries_conf = dir.path().join("registries.conf");
        std::fs::write(&registries_conf, "unqualified-search-registries = []\n")?;
        let authfile = dir.path().join("auth.json");
        std::fs::write(&authfile, r#"{"auths":{}}"#)?;
        std::fs::create_dir_all(dir.path().join("tmp"))?;
        Ok(Self {
            dir: Arc::new(dir),
            policy,
            registries_conf,
            authfile,
        })
    }

    /// `skopeo copy [args] SRC DST`; `Err` carries the exit status and stderr.
    pub async fn copy(
        &self,
        src: &str,
        dst: &str,
        args: &[&str],
        registries_conf: Option<&Path>,
    ) -> Result<(), String> {
        // Only loopback registries, named directly or reached through a
        // test registries.conf, may be contacted.
        for reference in [src, dst] {
            if let Some(name) = reference.strip_prefix("docker://") {
                let host = name.split('/').next().unwrap_or("");
                let loopback = host.starts_with("127.0.0.1:") || host.starts_with("localhost:");
                if !loopback && registries_conf.is_none() {
                    return Err(format!(
                        "refusing to copy {reference}: not a loopback registry and no registries.conf given"
                    ));
                }
            }
        }
        let authfile = self.authfile.to_string_lossy();
        let mut full = vec!["copy", "--quiet", "--authfile", &authfile];
        full.extend_from_slice(args);
        full.push(src);
        full.push(dst);
        self.run(&full, registries_conf).await.map(|_| ())
    }

    /// `skopeo <args>`; stdout on success, status and stderr on failure.
    pub async fn run(&self, args: &[&str], registries_conf: Option<&Path>) -> Result<String, String> {
        let tmp = self.dir.path().join("tmp");
        let mut command = tokio::process::Command::new(SKOPEO_BIN);
        command
            .arg("--policy")
            .arg(&self.policy)
            .arg("--tmpdir")
            .arg(&tmp)
            .arg("--command-timeout")
            .arg("90s")
            .arg("--registries-conf")
            .arg(registries_conf.unwrap_or(&self.registries_conf))
            .args(args)
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true);
        let output = tokio::time::timeout(Duration::from_secs(120), command.output())
            .await
            .map_err(|_| format!("skopeo {args:?} timed out"))?
            .map_err(|e| format!("skopeo {args:?}: {e}"))?;
        if output.status.success() {
            Ok(String::from_utf8_lossy(&output.stdout).into_owned())
        } else {
            Err(format!(
                "skopeo {args:?} failed ({}): {}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            ))
        }
    }
}
