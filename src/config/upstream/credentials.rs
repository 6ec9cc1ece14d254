//! The credential keys of an `[[upstreams]]` entry: `username` with a password from
//! `password`, `password_file` or `password_env`, a Docker `docker_config`, or a
//! `credential_helper`; at most one source, each checked for what can be checked before use,
//! with errors that never repeat a secret.

use std::path::PathBuf;

use super::super::docker_config::DockerConfig;
use super::super::file::FileUpstream;
use super::{CredentialSource, Credentials};
use crate::secret::Secret;

/// A helper is a bare name (`ecr-login` → `docker-credential-ecr-login` on PATH) or a path.
fn helper_problem(helper: &str) -> Option<String> {
    if helper.contains('/') {
        return (!std::path::Path::new(helper).is_file()).then(|| format!("{helper} is not a file"));
    }
    let ok = !helper.is_empty()
        && helper
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    (!ok).then(|| format!("{helper:?} is not a helper name like \"ecr-login\" or a path"))
}

fn password(errors: &mut Vec<String>, at: &str, u: &mut FileUpstream) -> Option<Secret> {
    let given = [
        u.password.is_some(),
        u.password_file.is_some(),
        u.password_env.is_some(),
    ];
    if given.iter().filter(|g| **g).count() > 1 {
        errors.push(format!(
            "{at}: set one of password, password_file and password_env"
        ));
        return None;
    }
    if let Some(p) = u.password.take() {
        return Some(Secret::new(p));
    }
    if let Some(f) = u.password_file.take() {
        return match std::fs::read_to_string(&f) {
            Ok(p) => Some(Secret::new(p.trim_end_matches(['\n', '\r']))),
            Err(e) => {
                errors.push(format!("{at}.password_file: cannot read {f}: {e}"));
                None
            }
        };
    }
    if let Some(name) = u.password_env.take() {
        return match std::env::var(&name) {
            Ok(p) if !p.is_empty() => Some(Secret::new(p)),
            _ => {
                errors.push(format!(
                    "{at}.password_env: environment variable {name} is not set"
                ));
                None
            }
        };
    }
    None
}

pub(super) fn credentials(errors: &mut Vec<String>, at: &str, u: &mut FileUpstream) -> CredentialSource {
    let before = errors.len();
    let password = password(errors, at, u);
    let password_failed = errors.len() > before;
    let username = u.username.take();
    let sources = [
        username.is_some() || password.is_some(),
        u.docker_config.is_some(),
        u.credential_helper.is_some(),
    ];
    if sources.iter().filter(|s| **s).count() > 1 {
        errors.push(format!(
            "{at}: set one of username (with a password), docker_config and credential_helper"
        ));
        return CredentialSource::Anonymous;
    }
    if let Some(path) = u.docker_config.take() {
        if let Err(e) = DockerConfig::load(std::path::Path::new(&path)) {
            errors.push(format!("{at}.docker_config: {e}"));
        }
        return CredentialSource::DockerConfig(PathBuf::from(path));
    }
    if let Some(helper) = u.credential_helper.take() {
        if let Some(p) = helper_problem(&helper) {
            errors.push(format!("{at}.credential_helper: {p}"));
        }
        return CredentialSource::Helper(helper);
    }
    match (username, password) {
        (Some(username), Some(password)) => {
            CredentialSource::Static(Credentials::Basic { username, password })
        }
        (None, None) => CredentialSource::Anonymous,
        (Some(_), None) => {
            if !password_failed {
                errors.push(format!(
                    "{at}: username is set without password, password_file or password_env"
                ));
            }
            CredentialSource::Anonymous
        }
        (None, Some(_)) => {
            errors.push(format!("{at}: a password is set without username"));
            CredentialSource::Anonymous
        }
    }
}
