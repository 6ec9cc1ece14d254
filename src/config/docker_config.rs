//! The Docker CLI's `config.json` as a credential source: `auths` entries (`auth` = base64 of
//! `user:password`, or `username`/`password`, or an `identitytoken`), `credHelpers` per registry
//! and the default `credsStore`. Lookup follows the Docker CLI: the registry's own helper, else the
//! store, else the file's own entry. Registry keys are compared by host name, ignoring scheme and
//! path, so `https://index.docker.io/v1/` is Docker Hub. No error message repeats file content:
//! the file holds secrets.

use std::collections::HashMap;
use std::path::Path;

use base64::Engine as _;
use serde::Deserialize;

use super::Credentials;
use crate::secret::Secret;

#[derive(Debug, thiserror::Error)]
pub enum DockerConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// Only the position and kind of the problem: serde's message may quote a secret.
    #[error("{path} is not a Docker config.json (line {line}, column {column}: {kind})")]
    Parse {
        path: String,
        line: usize,
        column: usize,
        kind: &'static str,
    },
    #[error("{path}: the entry for {registry} has an `auth` that is not base64 of user:password")]
    BadAuth { path: String, registry: String },
}

/// What the file says about one registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DockerCredentials {
    /// Run `docker-credential-<name> get`.
    Helper(String),
    Found(Credentials),
    NotFound,
}

#[derive(Debug, Default, Deserialize)]
struct RawConfig {
    #[serde(default)]
    auths: HashMap<String, RawAuth>,
    #[serde(default, rename = "credHelpers")]
    cred_helpers: HashMap<String, String>,
    #[serde(default, rename = "credsStore")]
    creds_store: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct RawAuth {
    auth: Option<String>,
    username: Option<String>,
    password: Option<String>,
    identitytoken: Option<String>,
}

#[derive(Debug)]
pub struct DockerConfig {
    path: String,
    raw: RawConfig,
}

/// `https://index.docker.io/v1/` → `index.docker.io`: what Docker compares registry keys by.
pub fn registry_key(s: &str) -> String {
    let s = s
        .strip_prefix("https://")
        .or_else(|| s.strip_prefix("http://"))
        .unwrap_or(s);
    s.split('/').next().unwrap_or("").to_ascii_lowercase()
}

impl DockerConfig {
    pub fn load(path: &Path) -> Result<DockerConfig, DockerConfigError> {
        let shown = path.display().to_string();
        let bytes = std::fs::read(path).map_err(|source| DockerConfigError::Read {
            path: shown.clone(),
            source,
        })?;
        DockerConfig::parse(&shown, &bytes)
    }

    pub fn parse(path: &str, bytes: &[u8]) -> Result<DockerConfig, DockerConfigError> {
        let raw: RawConfig = serde_json::from_slice(bytes).map_err(|e| DockerConfigError::Parse {
            path: path.to_string(),
            line: e.line(),
            column: e.column(),
            kind: match e.classify() {
                serde_json::error::Category::Io => "read error",
                serde_json::error::Category::Syntax => "syntax error",
                serde_json::error::Category::Data => "unexpected value type",
                serde_json::error::Category::Eof => "unexpected end of file",
            },
        })?;
        let config = DockerConfig {
            path: path.to_string(),
            raw,
        };
        // Decode every entry once so a broken one is reported when the config is checked.
        for registry in config.raw.auths.keys() {
            config.entry(registry)?;
        }
        Ok(config)
    }

    /// The credentials for a registry known by any of `names` (host names or URLs).
    pub fn lookup(&self, names: &[String]) -> Result<DockerCredentials, DockerConfigError> {
        let wanted: Vec<String> = names.iter().map(|n| registry_key(n)).collect();
        let matches = |key: &String| wanted.contains(&registry_key(key));
        if let Some(helper) = self
            .raw
            .cred_helpers
            .iter()
            .find(|(k, _)| matches(k))
            .map(|(_, v)| v)
        {
            return Ok(DockerCredentials::Helper(helper.clone()));
        }
        if let Some(store) = self.raw.creds_store.as_ref().filter(|s| !s.is_empty()) {
            return Ok(DockerCredentials::Helper(store.clone()));
        }
        // Prefer an exact key over another spelling of the same host.
        let mut keys: Vec<&String> = self.raw.auths.keys().filter(|k| matches(k)).collect();
        keys.sort_by_key(|k| (!names.contains(k), k.as_str()));
        for key in keys {
            if let Some(c) = self.entry(key)? {
                return Ok(DockerCredentials::Found(c));
            }
        }
        Ok(DockerCredentials::NotFound)
    }

    fn entry(&self, registry: &str) -> Result<Option<Credentials>, DockerConfigError> {
        let Some(a) = self.raw.auths.get(registry) else {
            return Ok(None);
        };
        if let Some(token) = a.identitytoken.as_ref().filter(|t| !t.is_empty()) {
            return Ok(Some(Credentials::IdentityToken(Secret::new(token.clone()))));
        }
        if let Some(auth) = a.auth.as_ref().filter(|t| !t.is_empty()) {
            let bad = || DockerConfigError::BadAuth {
                path: self.path.clone(),
                registry: registry.to_string(),
            };
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(auth.trim())
                .map_err(|_| bad())?;
            let decoded = String::from_utf8(decoded).map_err(|_| bad())?;
            let (user, pass) = decoded.split_once(':').ok_or_else(bad)?;
            return Ok(Some(Credentials::Basic {
                username: user.to_string(),
                password: Secret::new(pass),
            }));
        }
        match (&a.username, &a.password) {
            (Some(u), Some(p)) if !u.is_empty() => Ok(Some(Credentials::Basic {
                username: u.clone(),
                password: Secret::new(p.clone()),
            })),
            _ => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn auths_in_every_spelling() {
        let c = DockerConfig::parse(
            "t",
            br#"{"auths":{
                "https://index.docker.io/v1/":{"auth":"dXNlcjpwYTpzcw=="},
                "lab.example:5000":{"username":"robot","password":"pw"},
                "acr.example":{"identitytoken":"refresh"},
                "empty.example":{}
            }}"#,
        )
        .unwrap();
        let hub = c
            .lookup(&names(&["https://index.docker.io/v1/", "docker.io"]))
            .unwrap();
        assert_eq!(
            hub,
            DockerCredentials::Found(Credentials::Basic {
                username: "user".into(),
                password: Secret::new("pa:ss"),
            })
        );
        assert!(matches!(
            c.lookup(&names(&["http://lab.example:5000"])).unwrap(),
            DockerCredentials::Found(Credentials::Basic { username, .. }) if username == "robot"
        ));
        assert!(matches!(
            c.lookup(&names(&["acr.example"])).unwrap(),
            DockerCredentials::Found(Credentials::IdentityToken(_))
        ));
        assert_eq!(
            c.lookup(&names(&["empty.example"])).unwrap(),
            DockerCredentials::NotFound
        );
        assert_eq!(
            c.lookup(&names(&["other.example"])).unwrap(),
            DockerCredentials::NotFound
        );
    }

    #[test]
    fn helpers_come_first() {
        let c = DockerConfig::parse(
            "t",
            br#"{"auths":{"ecr.example":{}},"credHelpers":{"ecr.example":"ecr-login"},"credsStore":"pass"}"#,
        )
        .unwrap();
        assert_eq!(
            c.lookup(&names(&["ecr.example"])).unwrap(),
            DockerCredentials::Helper("ecr-login".into())
        );
        assert_eq!(
            c.lookup(&names(&["other.example"])).unwrap(),
            DockerCredentials::Helper("pass".into())
        );
    }

    #[test]
    fn errors_do_not_quote_the_file() {
        let e = DockerConfig::parse("t", br#"{"auths":{"x":{"auth":"hunter2-not-base64!"}}}"#).unwrap_err();
        assert!(!e.to_string().contains("hunter2"), "{e}");
        let e = DockerConfig::parse("t", br#"{"auths":"hunter2"}"#).unwrap_err();
        assert!(!e.to_string().contains("hunter2"), "{e}");
        assert!(e.to_string().contains("line 1"), "{e}");
    }
}
