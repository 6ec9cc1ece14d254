//! The upstream clients' connector: straight to the destination (through the resolver's checks,
//! `resolve.rs`), or through the egress proxy (`[fetch] proxy` or the environment, see
//! `config/egress.rs`) with an HTTP CONNECT tunnel (`tunnel.rs`) or SOCKS5 (`socks.rs`; with
//! `socks5://` regcache resolves the destination through its resolver, so a redirect target is
//! checked address by address as a direct one is). https and plain http
//! destinations alike are tunnelled, so TLS runs end to end and the proxy sees only the
//! destination's name and port. The proxy resolves a tunnelled destination's name, not
//! regcache: a redirect target going through the proxy is checked by what regcache can see,
//! its IP literal or `localhost` (`Resolver::check_unresolved`); hosts in `no_proxy` go direct
//! and are checked address by address as always.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::Uri;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tower_service::Service;

use hyper_util::client::legacy::connect::dns::Name;

use super::resolve::Resolver;
use super::socks;
use super::tunnel::{self, TunnelError};
use crate::config::{EgressConfig, ProxyKind, ProxyUrl};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Connects to a destination directly or through the egress proxy.
#[derive(Clone)]
pub(super) struct Egress {
    direct: HttpConnector<Resolver>,
    /// `None` when no proxy is configured for any destination.
    proxy: Option<Arc<ProxyRoute>>,
}

struct ProxyRoute {
    egress: EgressConfig,
    /// To the proxy itself: the system resolver, no redirect rule (the operator named it).
    to_proxy: HttpConnector,
    /// This client's resolver with its redirect rule: what regcache can check of a target the
    /// proxy resolves, and the resolution of `socks5://` targets.
    rule: Resolver,
    /// Connecting to the proxy and its CONNECT answer together.
    timeout: Duration,
}

impl Egress {
    pub(super) fn new(
        direct: HttpConnector<Resolver>,
        rule: Resolver,
        egress: &EgressConfig,
        timeout: Duration,
    ) -> Egress {
        let proxy = (egress.https.is_some() || egress.http.is_some()).then(|| {
            let mut to_proxy = HttpConnector::new();
            to_proxy.set_connect_timeout(Some(timeout));
            to_proxy.set_nodelay(true);
            Arc::new(ProxyRoute {
                egress: egress.clone(),
                to_proxy,
                rule,
                timeout,
            })
        });
        Egress { direct, proxy }
    }
}

impl Service<Uri> for Egress {
    type Response = TokioIo<TcpStream>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<TokioIo<TcpStream>, BoxError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        // Both connectors are always ready (hyper-util's HttpConnector does no back-pressure).
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, dst: Uri) -> Self::Future {
        let https = dst.scheme() == Some(&http::uri::Scheme::HTTPS);
        let host = dst.host().unwrap_or_default();
        let via = self.proxy.as_ref().and_then(|route| {
            let proxy = route.egress.proxy_for(https, host)?.clone();
            Some((route.clone(), proxy))
        });
        match via {
            None => {
                let connecting = self.direct.call(dst);
                Box::pin(async move { connecting.await.map_err(Into::into) })
            }
            Some((route, proxy)) => Box::pin(async move { route.tunnel(&proxy, &dst, https).await }),
        }
    }
}

impl ProxyRoute {
    /// What a SOCKS5 proxy is asked to connect to: the name (`socks5h://`, or an IP literal), or
    /// the first address this client's resolver gives for it, checked as a direct connection's
    /// would be (`socks5://`).
    async fn socks_dest<'a>(
        &self,
        host: &'a str,
        port: u16,
        remote_dns: bool,
    ) -> Result<socks::Dest<'a>, BoxError> {
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = bare.parse() {
            return Ok(socks::Dest::Addr(ip, port));
        }
        if remote_dns {
            return Ok(socks::Dest::Name(host, port));
        }
        let name: Name = host.parse()?;
        let mut addrs = self.rule.clone().call(name).await?;
        let addr = addrs
            .next()
            .ok_or_else(|| format!("{host} resolves to no address"))?;
        Ok(socks::Dest::Addr(addr.ip(), port))
    }

    async fn tunnel(&self, proxy: &ProxyUrl, dst: &Uri, https: bool) -> Result<TokioIo<TcpStream>, BoxError> {
        let host = dst.host().ok_or("a destination without a host")?;
        self.rule.check_unresolved(host)?;
        let port = dst.port_u16().unwrap_or(if https { 443 } else { 80 });
        let target = format!("{host}:{port}");
        let proxy_uri: Uri = format!("http://{}", proxy.authority).parse()?;
        let opening = async {
            let io = self
                .to_proxy
                .clone()
                .call(proxy_uri)
                .await
                .map_err(|e| TunnelError::Connect {
                    proxy: proxy.authority.clone(),
                    source: e.into(),
                })?;
            let mut stream = io.into_inner();
            let creds = proxy.credentials.as_ref();
            match proxy.kind {
                ProxyKind::Http => tunnel::open(&mut stream, &proxy.authority, &target, creds).await?,
                ProxyKind::Socks5 { remote_dns } => {
                    let dest =
                        self.socks_dest(host, port, remote_dns)
                            .await
                            .map_err(|e| TunnelError::Connect {
                                proxy: proxy.authority.clone(),
                                source: e,
                            })?;
                    socks::open(&mut stream, &proxy.authority, &target, dest, creds).await?
                }
            }
            tracing::debug!(proxy = %proxy.authority, %target, "tunnel opened through the egress proxy");
            Ok::<_, TunnelError>(TokioIo::new(stream))
        };
        match tokio::time::timeout(self.timeout, opening).await {
            Ok(opened) => Ok(opened?),
            Err(_) => Err(TunnelError::Timeout {
                proxy: proxy.authority.clone(),
                target,
                secs: self.timeout.as_secs(),
            }
            .into()),
        }
    }
}
