//! The SOCKS5 handshake with an egress proxy (RFC 1928, with RFC 1929's user and password when
//! the proxy URL carries them): ask for a connection to the destination, by name (`socks5h://`,
//! the proxy resolves it) or by the address regcache resolved and checked (`socks5://`), and
//! read the proxy's reply. Success opens the tunnel; anything else is a `TunnelError` naming the
//! proxy, the target and the reply in words.

use std::net::IpAddr;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::tunnel::{Asked, TunnelError};
use crate::secret::Secret;

/// Where the proxy is asked to connect.
pub(super) enum Dest<'a> {
    Name(&'a str, u16),
    Addr(IpAddr, u16),
}

/// Runs the handshake on `io`, a connection to `proxy`; `target` names the destination in errors.
pub(super) async fn open<S>(
    io: &mut S,
    proxy: &str,
    target: &str,
    dest: Dest<'_>,
    credentials: Option<&(String, Secret)>,
) -> Result<(), TunnelError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let asked = Asked { proxy, target };
    let protocol = |what: String| asked.protocol(what);
    let refused = |status: String, hint: &'static str| asked.refused(status, hint);
    let io_error = |e: std::io::Error| protocol(format!("SOCKS5: {e}"));

    let methods: &[u8] = if credentials.is_some() {
        &[0x00, 0x02]
    } else {
        &[0x00]
    };
    let mut hello = vec![0x05, methods.len() as u8];
    hello.extend_from_slice(methods);
    io.write_all(&hello).await.map_err(io_error)?;
    let mut chosen = [0u8; 2];
    io.read_exact(&mut chosen).await.map_err(io_error)?;
    match chosen {
        [0x05, 0x00] => {}
        [0x05, 0x02] => {
            let Some((user, password)) = credentials else {
                return Err(protocol("SOCKS5: asked for a password method not offered".into()));
            };
            let (user, password) = (user.as_bytes(), password.expose().as_bytes());
            if user.len() > 255 || password.len() > 255 {
                return Err(protocol("SOCKS5: user or password longer than 255 bytes".into()));
            }
            let mut auth = vec![0x01, user.len() as u8];
            auth.extend_from_slice(user);
            auth.push(password.len() as u8);
            auth.extend_from_slice(password);
            io.write_all(&auth).await.map_err(io_error)?;
            let mut status = [0u8; 2];
            io.read_exact(&mut status).await.map_err(io_error)?;
            if status[1] != 0x00 {
                return Err(refused(
                    "user and password refused".into(),
                    " (the proxy refused the credentials of the proxy URL)",
                ));
            }
        }
        [0x05, 0xFF] => {
            return Err(refused(
                "no acceptable authentication method".into(),
                match credentials {
                    None => " (the proxy wants credentials: give them in the proxy URL, socks5h://user:password@host:port)",
                    Some(_) => "",
                },
            ))
        }
        other => return Err(protocol(format!("SOCKS5: unexpected method reply {other:?}"))),
    }

    let mut request = vec![0x05, 0x01, 0x00];
    match dest {
        Dest::Name(name, port) => {
            let name = name.as_bytes();
            if name.len() > 255 {
                return Err(protocol("SOCKS5: destination name longer than 255 bytes".into()));
            }
            request.extend_from_slice(&[0x03, name.len() as u8]);
            request.extend_from_slice(name);
            request.extend_from_slice(&port.to_be_bytes());
        }
        Dest::Addr(IpAddr::V4(a), port) => {
            request.push(0x01);
            request.extend_from_slice(&a.octets());
            request.extend_from_slice(&port.to_be_bytes());
        }
        Dest::Addr(IpAddr::V6(a), port) => {
            request.push(0x04);
            request.extend_from_slice(&a.octets());
            request.extend_from_slice(&port.to_be_bytes());
        }
    }
    io.write_all(&request).await.map_err(io_error)?;
    let mut head = [0u8; 4];
    io.read_exact(&mut head).await.map_err(io_error)?;
    if head[0] != 0x05 {
        return Err(protocol(format!("SOCKS5: not a SOCKS5 reply: {head:?}")));
    }
    if head[1] != 0x00 {
        let why = match head[1] {
            0x01 => "general failure",
            0x02 => "not allowed by its rules",
            0x03 => "network unreachable",
            0x04 => "host unreachable",
            0x05 => "connection refused",
            0x06 => "TTL expired",
            0x07 => "command not supported",
            0x08 => "address type not supported",
            _ => "an unknown error",
        };
        return Err(refused(format!("{why} ({})", head[1]), ""));
    }
    // The address the proxy bound, then its port: read and dropped.
    let skip = match head[3] {
        0x01 => 4,
        0x04 => 16,
        0x03 => {
            let mut len = [0u8; 1];
            io.read_exact(&mut len).await.map_err(io_error)?;
            usize::from(len[0])
        }
        other => return Err(protocol(format!("SOCKS5: unknown address type {other}"))),
    };
    let mut rest = vec![0u8; skip + 2];
    io.read_exact(&mut rest).await.map_err(io_error)?;
    Ok(())
}

#[cfg(test)]
mod tests;
