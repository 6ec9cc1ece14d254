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

    pub fn all(&self) -> &[Arc<Upstream>] {
        &self.list
    }
}
