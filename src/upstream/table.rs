//! The routing table: every configured upstream by the host name clients use, and the default.

use std::sync::Arc;

use super::{ClientBuildError, Upstream};
use crate::config::Config;
use crate::metrics::Metrics;

/// The routing table: every configured upstream by client-facing host, and the default.
pub struct Upstreams {
    list: Vec<Arc<Upstream>>,
    default: usize,
}

impl Upstreams {
    pub fn from_config(config: &Config, metrics: &Arc<Metrics>) -> Result<Upstreams, ClientBuildError> {
        let mut list = Vec::new();
        let mut default = 0;
        for (i, u) in config.upstreams.iter().enumerate() {
            if u.default {
                default = i;
            }
            list.push(Arc::new(Upstream::new(
                u.clone(),
                &config.fetch,
                metrics.clone(),
            )?));
        }
        Ok(Upstreams { list, default })
    }

    pub fn by_host(&self, host: &str) -> Option<&Arc<Upstream>> {
        let host = if host == "index.docker.io" || host == "registry-1.docker.io" {
            "docker.io"
        } else {
            host
        };
        self.list.iter().find(|u| u.host() == host)
    }

    pub fn default_upstream(&self) -> &Arc<Upstream> {
        &self.list[self.default]
    }

    /// Applies what can change live from a reloaded configuration: each upstream's credentials.
    /// Returns one line per upstream whose change needs a restart (added or removed upstreams,
    /// another kind of credential source, URLs, TLS files, limits).
    pub fn reload(&self, config: &Config) -> Vec<String> {
        let mut needs_restart = Vec::new();
        for new in &config.upstreams {
            match self.list.iter().find(|u| u.host() == new.host) {
                None => needs_restart.push(format!("upstream {} was added", new.host)),
                Some(u) => match u.reload_credentials(new) {
                    super::Reloaded::Replaced => tracing::info!(upstream = %new.host, "credentials replaced"),
                    super::Reloaded::WillReread => {
                        tracing::info!(upstream = %new.host, "credentials will be read again")
                    }
                    super::Reloaded::Unchanged => {}
                    super::Reloaded::NeedsRestart => needs_restart.push(format!(
                        "upstream {}: another kind of credential source",
                        new.host
                    )),
                },
            }
        }
        for u in &self.list {
            if !config.upstreams.iter().any(|n| n.host == u.host()) {
                needs_restart.push(format!("upstream {} was removed", u.host()));
            }
        }
        needs_restart
    }

    pub fn all(&self) -> &[Arc<Upstream>] {
        &self.list
    }
}
