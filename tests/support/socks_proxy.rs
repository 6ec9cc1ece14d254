//! A small SOCKS5 proxy for the egress tests (RFC 1928, with RFC 1929's user and password when
//! told to require them): it records every destination it is asked for (`name:port` for a
//! name, `ip:port` / `[v6]:port` for an address), connects to the address a test routed that
//! destination to, and answers success with a zero bound address. It connects to loopback only
//! and refuses anything else (reply 2, not allowed). Loopback only.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[derive(Default)]
struct State {
    targets: Mutex<Vec<String>>,
    routes: Mutex<HashMap<String, SocketAddr>>,
    required: Mutex<Option<(String, String)>>,
}

pub struct SocksProxy {
    pub addr: SocketAddr,
    state: Arc<State>,
}

impl SocksProxy {
    pub async fn start() -> SocksProxy {
        let state = Arc::new(State::default());
        let addr = super::listeners::serve_each(state.clone(), |client, state| async move {
            let _ = serve(client, state).await;
        })
        .await;
        SocksProxy { addr, state }
    }

    /// Connections asked for `target` go to `to`.
    pub fn route(&self, target: &str, to: SocketAddr) {
        self.state.routes.lock().unwrap().insert(target.to_string(), to);
    }

    /// Every client must authenticate with this user and password.
    pub fn require(&self, user: &str, password: &str) {
        *self.state.required.lock().unwrap() = Some((user.into(), password.into()));
    }

    /// The destinations asked for so far, in order.
    pub fn targets(&self) -> Vec<String> {
        self.state.targets.lock().unwrap().clone()
    }
}

async fn serve(mut c: TcpStream, state: Arc<State>) -> std::io::Result<()> {
    let mut head = [0u8; 2];
    c.read_exact(&mut head).await?;
    let mut methods = vec![0u8; usize::from(head[1])];
    c.read_exact(&mut methods).await?;
    let required = state.required.lock().unwrap().clone();
    match &required {
        None => c.write_all(&[0x05, 0x00]).await?,
        Some(_) if !methods.contains(&0x02) => return c.write_all(&[0x05, 0xFF]).await,
        Some((user, password)) => {
            c.write_all(&[0x05, 0x02]).await?;
            let mut v = [0u8; 2];
            c.read_exact(&mut v).await?;
            let mut u = vec![0u8; usize::from(v[1])];
            c.read_exact(&mut u).await?;
            let mut plen = [0u8; 1];
            c.read_exact(&mut plen).await?;
            let mut p = vec![0u8; usize::from(plen[0])];
            c.read_exact(&mut p).await?;
            if u != user.as_bytes() || p != password.as_bytes() {
                return c.write_all(&[0x01, 0x01]).await;
            }
            c.write_all(&[0x01, 0x00]).await?;
        }
    }
    let mut req = [0u8; 4];
    c.read_exact(&mut req).await?;
    let host = match req[3] {
        0x01 => {
            let mut a = [0u8; 4];
            c.read_exact(&mut a).await?;
            Ipv4Addr::from(a).to_string()
        }
        0x04 => {
            let mut a = [0u8; 16];
            c.read_exact(&mut a).await?;
            format!("[{}]", Ipv6Addr::from(a))
        }
        _ => {
            let mut len = [0u8; 1];
            c.read_exact(&mut len).await?;
            let mut name = vec![0u8; usize::from(len[0])];
            c.read_exact(&mut name).await?;
            String::from_utf8_lossy(&name).into_owned()
        }
    };
    let mut port = [0u8; 2];
    c.read_exact(&mut port).await?;
    let target = format!("{host}:{}", u16::from_be_bytes(port));
    state.targets.lock().unwrap().push(target.clone());
    let routed = state.routes.lock().unwrap().get(&target).copied();
    let to = routed.or_else(|| target.parse::<SocketAddr>().ok());
    let reply = |code: u8| [0x05, code, 0x00, 0x01, 0, 0, 0, 0, 0, 0];
    let Some(to) = to.filter(|a| a.ip().is_loopback() || a.ip() == IpAddr::from([127, 0, 0, 1])) else {
        return c.write_all(&reply(0x02)).await;
    };
    let Ok(mut upstream) = TcpStream::connect(to).await else {
        return c.write_all(&reply(0x05)).await;
    };
    c.write_all(&reply(0x00)).await?;
    tokio::io::copy_bidirectional(&mut c, &mut upstream)
        .await
        .map(|_| ())
}
