//! Probing an upstream for `regcache check-config --probe`: one `GET /v2/` with this
//! upstream's auth, through the same client a pull uses, so one answer says that the address
//! resolves, the egress proxy (if any) tunnels, TLS verifies, the token service answers and the
//! credentials are accepted.

use std::time::{Duration, Instant};

use http::header::HeaderMap;
use http::Method;

use super::{Upstream, UpstreamError};

impl Upstream {
    /// `GET /v2/` with auth (a token without a scope where the registry uses tokens): how long
    /// the answer took, or why there was none.
    pub async fn probe(&self) -> Result<Duration, UpstreamError> {
        let start = Instant::now();
        let url = format!("{}/v2/", self.config.base_url());
        let resp = self.send(&Method::GET, &url, &HeaderMap::new(), "").await?;
        self.classify(resp)?;
        Ok(start.elapsed())
    }

    /// The upstream's fallbacks (`[[upstreams]] fallback`), in the order they are asked.
    pub fn fallbacks(&self) -> &[Upstream] {
        &self.fallbacks
    }
}
