//! The credentials an upstream's own host gets. Fixed ones come from the config; ones from a
//! Docker config.json or a credential helper are resolved at first use, reused for
//! `credential_lifetime`, and resolved again sooner once the upstream rejects them. One
//! resolution runs at a time and concurrent callers share its result. A resolution that fails
//! after an earlier one worked keeps the last good credentials in use (the ECR helper does the
//! same). Every distinct credential gets a new generation number, so tokens obtained with old
//! credentials are not mixed up with new ones.

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use prometheus::IntCounter;
use tokio::time::Instant;

use super::credential_helper;
use super::UpstreamError;
use crate::config::docker_config::{DockerConfig, DockerCredentials};
use crate::config::{CredentialSource, Credentials, UpstreamConfig};

/// After a failed resolution with older credentials still in use, try again this soon.
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(30);

/// Credentials with the generation they belong to.
#[derive(Debug, Clone)]
pub(super) struct Resolved {
    pub credentials: Credentials,
    pub generation: u64,
}

enum Dynamic {
    DockerConfig(PathBuf),
    Helper(String),
}

enum Source {
    Anonymous,
    /// The credentials live in `CredentialProvider::fixed`, replaceable by a reload.
    Static,
    Dynamic(Dynamic),
}

#[derive(Default)]
struct State {
    current: Option<Credentials>,
    generation: u64,
    /// None: never resolved.
    valid_until: Option<Instant>,
    stale: bool,
}

/// Counters for resolutions (`ok`, `error`).
pub(super) struct ResolutionCounters {
    pub ok: IntCounter,
    pub error: IntCounter,
}

pub(super) struct CredentialProvider {
    upstream: String,
    source: Source,
    /// What a Docker config.json may file the registry under; the first goes to helpers.
    names: Vec<String>,
    lifetime: Duration,
    counters: ResolutionCounters,
    state: Mutex<State>,
    /// Static credentials and their generation (bumped by a reload that changes them).
    fixed: Mutex<(Option<Credentials>, u64)>,
    resolving: tokio::sync::Mutex<()>,
}

/// What a configuration reload did to an upstream's credentials.
#[derive(Debug, PartialEq, Eq)]
pub enum Reloaded {
    Unchanged,
    Replaced,
    /// Dynamic sources are read again at their next use.
    WillReread,
    /// The kind of source changed (e.g. anonymous to a helper): needs a restart.
    NeedsRestart,
}

impl CredentialProvider {
    pub(super) fn new(config: &UpstreamConfig, counters: ResolutionCounters) -> CredentialProvider {
        let mut fixed = (None, 1);
        let source = match &config.credentials {
            CredentialSource::Anonymous => Source::Anonymous,
            CredentialSource::Static(c) => {
                fixed.0 = Some(c.clone());
                Source::Static
            }
            CredentialSource::DockerConfig(p) => Source::Dynamic(Dynamic::DockerConfig(p.clone())),
            CredentialSource::Helper(h) => Source::Dynamic(Dynamic::Helper(h.clone())),
        };
        CredentialProvider {
            upstream: config.host.clone(),
            source,
            names: config.credential_names(),
            lifetime: config.credential_lifetime,
            counters,
            state: Mutex::new(State::default()),
            fixed: Mutex::new(fixed),
            resolving: tokio::sync::Mutex::new(()),
        }
    }

    /// Applies the credentials of a reloaded configuration for this upstream.
    pub(super) fn reload(&self, config: &UpstreamConfig) -> Reloaded {
        match (&self.source, &config.credentials) {
            (Source::Anonymous, CredentialSource::Anonymous) => Reloaded::Unchanged,
            (Source::Static, CredentialSource::Static(c)) => {
                let mut fixed = self.fixed.lock().unwrap_or_else(|e| e.into_inner());
                if fixed.0.as_ref() == Some(c) {
                    return Reloaded::Unchanged;
                }
                // A new generation: tokens fetched with the old credentials are not reused.
                *fixed = (Some(c.clone()), fixed.1 + 1);
                Reloaded::Replaced
            }
            (Source::Dynamic(Dynamic::DockerConfig(a)), CredentialSource::DockerConfig(b)) if a == b => {
                self.state().stale = true;
                Reloaded::WillReread
            }
            (Source::Dynamic(Dynamic::Helper(a)), CredentialSource::Helper(b)) if a == b => {
                self.state().stale = true;
                Reloaded::WillReread
            }
            _ => Reloaded::NeedsRestart,
        }
    }

    /// True when credentials may exist (a source is configured).
    pub(super) fn configured(&self) -> bool {
        !matches!(self.source, Source::Anonymous)
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn fresh(&self) -> Option<Option<Resolved>> {
        let s = self.state();
        let live = !s.stale && s.valid_until.is_some_and(|t| Instant::now() < t);
        live.then(|| {
            s.current.clone().map(|credentials| Resolved {
                credentials,
                generation: s.generation,
            })
        })
    }

    /// The credentials to use now; `None` means anonymous.
    pub(super) async fn get(&self) -> Result<Option<Resolved>, UpstreamError> {
        let dynamic = match &self.source {
            Source::Anonymous => return Ok(None),
            Source::Static => {
                let fixed = self.fixed.lock().unwrap_or_else(|e| e.into_inner());
                return Ok(fixed.0.clone().map(|credentials| Resolved {
                    credentials,
                    generation: fixed.1,
                }));
            }
            Source::Dynamic(d) => d,
        };
        if let Some(r) = self.fresh() {
            return Ok(r);
        }
        let _one_at_a_time = self.resolving.lock().await;
        if let Some(r) = self.fresh() {
            return Ok(r);
        }
        let outcome = self.resolve(dynamic).await;
        let mut s = self.state();
        match outcome {
            Ok(c) => {
                self.counters.ok.inc();
                if c != s.current || s.generation == 0 {
                    s.generation += 1;
                }
                s.current = c;
                s.valid_until = Some(Instant::now() + self.lifetime);
                s.stale = false;
                tracing::debug!(upstream = %self.upstream, generation = s.generation, found = s.current.is_some(), "resolved upstream credentials");
            }
            Err(reason) => {
                self.counters.error.inc();
                if s.valid_until.is_none() {
                    return Err(UpstreamError::Credentials {
                        upstream: self.upstream.clone(),
                        reason,
                    });
                }
                tracing::warn!(upstream = %self.upstream, %reason, "could not renew upstream credentials; keeping the last ones");
                s.valid_until = Some(Instant::now() + self.lifetime.min(RETRY_AFTER_FAILURE));
                s.stale = false;
            }
        }
        Ok(s.current.clone().map(|credentials| Resolved {
            credentials,
            generation: s.generation,
        }))
    }

    /// The upstream refused the credentials of `generation`: resolve again on the next `get`.
    pub(super) fn rejected(&self, generation: u64) {
        if matches!(self.source, Source::Dynamic(_)) {
            let mut s = self.state();
            if s.generation == generation {
                s.stale = true;
            }
        }
    }

    async fn resolve(&self, source: &Dynamic) -> Result<Option<Credentials>, String> {
        let helper = match source {
            Dynamic::Helper(h) => h.clone(),
            Dynamic::DockerConfig(path) => {
                // A small file: read it in place rather than on the blocking pool.
                let config = DockerConfig::load(path).map_err(|e| e.to_string())?;
                match config.lookup(&self.names).map_err(|e| e.to_string())? {
                    DockerCredentials::Found(c) => return Ok(Some(c)),
                    DockerCredentials::NotFound => return Ok(None),
                    DockerCredentials::Helper(h) => h,
                }
            }
        };
        credential_helper::get(&helper, &self.names[0])
            .await
            .map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn provider(toml: &str) -> CredentialProvider {
        let text = format!("builtin_upstreams = false\n[[upstreams]]\nhost = \"reg.example\"\n{toml}");
        let c = Config::from_toml_str(&text).unwrap();
        CredentialProvider::new(
            &c.upstreams[0],
            ResolutionCounters {
                ok: IntCounter::new("ok", "ok").unwrap(),
                error: IntCounter::new("error", "error").unwrap(),
            },
        )
    }

    fn user(r: &Option<Resolved>) -> (String, u64) {
        match r {
            Some(Resolved {
                credentials: Credentials::Basic { password, .. },
                generation,
            }) => (password.expose().to_string(), *generation),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn docker_config_is_reread_after_its_lifetime_or_a_rejection() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        let write = |pass: &str| {
            let auth =
                base64::Engine::encode(&base64::engine::general_purpose::STANDARD, format!("u:{pass}"));
            std::fs::write(
                &path,
                format!(r#"{{"auths":{{"reg.example":{{"auth":"{auth}"}}}}}}"#),
            )
            .unwrap();
        };
        write("one");
        let p = provider(&format!(
            "docker_config = \"{}\"\ncredential_lifetime = \"60s\"\n",
            path.display()
        ));
        assert_eq!(user(&p.get().await.unwrap()), ("one".into(), 1));
        write("two");
        tokio::time::advance(Duration::from_secs(59)).await;
        assert_eq!(user(&p.get().await.unwrap()), ("one".into(), 1), "still cached");
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(user(&p.get().await.unwrap()), ("two".into(), 2));
        write("three");
        p.rejected(1); // an old generation changes nothing
        assert_eq!(user(&p.get().await.unwrap()), ("two".into(), 2));
        p.rejected(2);
        assert_eq!(user(&p.get().await.unwrap()), ("three".into(), 3));
        // A broken file later on keeps the last good credentials.
        std::fs::write(&path, "{").unwrap();
        p.rejected(3);
        assert_eq!(user(&p.get().await.unwrap()), ("three".into(), 3));
        assert_eq!(p.counters.error.get(), 1);
        assert_eq!(p.counters.ok.get(), 3);
    }

    #[tokio::test]
    async fn sources_without_credentials() {
        assert!(provider("").get().await.unwrap().is_none());
        assert!(!provider("").configured());
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        std::fs::write(&path, r#"{"auths":{"other.example":{"auth":"dTpw"}}}"#).unwrap();
        let p = provider(&format!("docker_config = \"{}\"\n", path.display()));
        assert!(p.get().await.unwrap().is_none());
        let missing = provider("credential_helper = \"regcache-test-no-such-helper\"\n");
        let e = missing.get().await.unwrap_err();
        assert!(matches!(e, UpstreamError::Credentials { .. }), "{e}");
    }
}
