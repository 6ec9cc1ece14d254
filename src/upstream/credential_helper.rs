//! The docker credential-helper protocol, `get` only: run `docker-credential-<name> get` (or a
//! helper given by path) with the registry on stdin and read `{"ServerURL","Username","Secret"}`
//! from stdout. A helper that answers "credentials not found" means anonymous access. The
//! helper's stdout holds the secret, so no error message ever quotes it.

use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncWriteExt as _;

use crate::config::Credentials;
use crate::secret::Secret;

/// A helper that has not answered in this long is killed.
const HELPER_TIMEOUT: Duration = Duration::from_secs(30);
const MAX_STDERR_SHOWN: usize = 300;

#[derive(Debug, Clone, thiserror::Error)]
pub(super) enum HelperError {
    #[error("cannot run credential helper {program}: {reason}")]
    Spawn { program: String, reason: String },
    #[error("credential helper {program} did not answer within {HELPER_TIMEOUT:?}")]
    Timeout { program: String },
    #[error("credential helper {program} failed ({status}): {stderr}")]
    Failed {
        program: String,
        status: String,
        stderr: String,
    },
    #[error("credential helper {program} printed something other than {{\"Username\",\"Secret\"}} JSON")]
    BadOutput { program: String },
}

/// `ecr-login` → `docker-credential-ecr-login`; a path is used as it is.
pub(super) fn program(helper: &str) -> String {
    if helper.contains('/') {
        helper.to_string()
    } else {
        format!("docker-credential-{helper}")
    }
}

async fn spawn(program: &str) -> std::io::Result<tokio::process::Child> {
    let mut attempts = 0;
    loop {
        let spawned = tokio::process::Command::new(program)
            .arg("get")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn();
        match spawned {
            // ETXTBSY: a just-written helper whose write descriptor a concurrent fork still holds.
            Err(e) if e.kind() == std::io::ErrorKind::ExecutableFileBusy && attempts < 5 => {
                attempts += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            other => return other,
        }
    }
}

#[derive(serde::Deserialize)]
struct Output {
    #[serde(rename = "Username", default)]
    username: String,
    #[serde(rename = "Secret", default)]
    secret: String,
}

/// Asks `helper` for the credentials of `server`. `Ok(None)`: the helper has none.
pub(super) async fn get(helper: &str, server: &str) -> Result<Option<Credentials>, HelperError> {
    let program = program(helper);
    let mut child = spawn(&program).await.map_err(|e| HelperError::Spawn {
        program: program.clone(),
        reason: e.to_string(),
    })?;
    if let Some(mut stdin) = child.stdin.take() {
        // A helper that exits without reading stdin is not an error here; its exit status is.
        let _ = stdin.write_all(server.as_bytes()).await;
    }
    let out = tokio::time::timeout(HELPER_TIMEOUT, child.wait_with_output())
        .await
        .map_err(|_| HelperError::Timeout {
            program: program.clone(),
        })?
        .map_err(|e| HelperError::Spawn {
            program: program.clone(),
            reason: e.to_string(),
        })?;
    if !out.status.success() {
        // The protocol puts "credentials not found in native keychain" on stdout.
        let said = String::from_utf8_lossy(&out.stdout);
        if said.contains("credentials not found") {
            return Ok(None);
        }
        let mut stderr = String::from_utf8_lossy(&out.stderr).trim().replace('\n', " ");
        if stderr.len() > MAX_STDERR_SHOWN {
            let cut = (0..=MAX_STDERR_SHOWN)
                .rev()
                .find(|i| stderr.is_char_boundary(*i))
                .unwrap_or(0);
            stderr.truncate(cut);
        }
        return Err(HelperError::Failed {
            program,
            status: out.status.to_string(),
            stderr,
        });
    }
    let parsed: Output = serde_json::from_slice(&out.stdout).map_err(|_| HelperError::BadOutput {
        program: program.clone(),
    })?;
    if parsed.secret.is_empty() {
        return Ok(None);
    }
    // Docker's convention: Username "<token>" means Secret is an identity (refresh) token.
    Ok(Some(if parsed.username == "<token>" {
        Credentials::IdentityToken(Secret::new(parsed.secret))
    } else {
        Credentials::Basic {
            username: parsed.username,
            password: Secret::new(parsed.secret),
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    fn script(dir: &std::path::Path, body: &str) -> String {
        let path = dir.join("docker-credential-test");
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path.display().to_string()
    }

    #[tokio::test]
    async fn protocol() {
        let dir = tempfile::tempdir().unwrap();
        let ok = script(
            dir.path(),
            r#"read -r host || true
printf '{"ServerURL":"%s","Username":"AWS","Secret":"tok-%s"}' "$host" "$host""#,
        );
        assert_eq!(
            get(&ok, "reg.example").await.unwrap(),
            Some(Credentials::Basic {
                username: "AWS".into(),
                password: Secret::new("tok-reg.example"),
            })
        );
        let token = script(dir.path(), r#"echo '{"Username":"<token>","Secret":"refresh"}'"#);
        assert!(matches!(
            get(&token, "x").await.unwrap(),
            Some(Credentials::IdentityToken(_))
        ));
        let missing = script(
            dir.path(),
            "echo 'credentials not found in native keychain'; exit 1",
        );
        assert_eq!(get(&missing, "x").await.unwrap(), None);
        let broken = script(dir.path(), "echo 'hunter2'; echo 'no AWS session' >&2; exit 3");
        let e = get(&broken, "x").await.unwrap_err().to_string();
        assert!(e.contains("no AWS session") && !e.contains("hunter2"), "{e}");
        let garbage = script(dir.path(), r#"echo '{"Username":1,"Secret":"hunter2"}'"#);
        let e = get(&garbage, "x").await.unwrap_err().to_string();
        assert!(!e.contains("hunter2"), "{e}");
        let e = get("/nonexistent/helper", "x").await.unwrap_err();
        assert!(matches!(e, HelperError::Spawn { .. }), "{e}");
        assert_eq!(program("ecr-login"), "docker-credential-ecr-login");
    }
}
