//! A small HTTP CONNECT proxy for the egress tests: it answers `CONNECT host:port` by connecting
//! to the address a test routed that target to (so an upstream URL on a loopback port where
//! nothing listens is reachable only through the proxy) or to the target itself, checks
//! `Proxy-Authorization` when told to, and records every target it was asked for. It connects
//! to loopback addresses only and answers 403 to anything else. Loopback only.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use base64::Engine;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[derive(Default)]
struct State {
    targets: Mutex<Vec<String>>,
    routes: Mutex<HashMap<String, SocketAddr>>,
    /// The `Proxy-Authorization` value every CONNECT must carry, if any.
    required: Mutex<Option<String>>,
}

pub struct ConnectProxy {
    pub addr: SocketAddr,
    state: Arc<State>,
}

impl ConnectProxy {
    pub async fn start() -> ConnectProxy {
        let state = Arc::new(State::default());
        let addr = super::listeners::serve_each(state.clone(), serve).await;
        ConnectProxy { addr, state }
    }

    /// `http://127.0.0.1:<port>`, as `[fetch] proxy` takes it.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Tunnels asked for `target` (`host:port`) go to `to`.
    pub fn route(&self, target: &str, to: SocketAddr) {
        self.state.routes.lock().unwrap().insert(target.to_string(), to);
    }

    /// Every CONNECT must carry these Basic credentials; others get a 407.
    pub fn require_basic(&self, user: &str, password: &str) {
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        *self.state.required.lock().unwrap() = Some(format!("Basic {token}"));
    }

    /// The CONNECT targets asked for so far, refused ones included, in order.
    pub fn targets(&self) -> Vec<String> {
        self.state.targets.lock().unwrap().clone()
    }
}

async fn serve(mut client: TcpStream, state: Arc<State>) {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match client.read(&mut byte).await {
            Ok(1) => head.push(byte[0]),
            _ => return,
        }
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let mut lines = head.split("\r\n");
    let request: Vec<&str> = lines.next().unwrap_or_default().split(' ').collect();
    let [method, target, _version] = request[..] else {
        let _ = client.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n").await;
        return;
    };
    if method != "CONNECT" {
        let _ = client.write_all(b"HTTP/1.1 405 Method Not Allowed\r\n\r\n").await;
        return;
    }
    state.targets.lock().unwrap().push(target.to_string());
    let required = state.required.lock().unwrap().clone();
    if let Some(required) = required {
        let given = lines
            .filter_map(|l| l.split_once(':'))
            .find(|(name, _)| name.eq_ignore_ascii_case("proxy-authorization"))
            .map(|(_, value)| value.trim().to_string());
        if given.as_deref() != Some(required.as_str()) {
            let _ = client
                .write_all(b"HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic realm=\"test\"\r\n\r\n")
                .await;
            return;
        }
    }
    let routed = state.routes.lock().unwrap().get(target).copied();
    let to = routed.or_else(|| target.parse::<SocketAddr>().ok());
    let Some(to) = to.filter(|a| a.ip().is_loopback()) else {
        let _ = client.write_all(b"HTTP/1.1 403 Forbidden\r\n\r\n").await;
        return;
    };
    let Ok(mut upstream) = TcpStream::connect(to).await else {
        let _ = client.write_all(b"HTTP/1.1 502 Bad Gateway\r\n\r\n").await;
        return;
    };
    if client
        .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
        .await
        .is_ok()
    {
        let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
    }
}
