//! The HTTP CONNECT handshake with an egress proxy: ask for a tunnel to `host:port`, with
//! `Proxy-Authorization: Basic` when the proxy URL carries credentials, and read the proxy's
//! answer head. A 2xx opens the tunnel; anything else is an error that names the proxy, the
//! target and the status line, so a 407 or a 403 from a corporate proxy is readable in the
//! client's error and the log. The head is read a byte at a time: the tunnel's first bytes
//! (the TLS handshake) belong to the client and must not be read ahead.

use base64::Engine;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::secret::Secret;

/// The most a proxy's answer head may take.
const MAX_HEAD: usize = 16 * 1024;

/// Why a tunnel through the egress proxy did not open.
#[derive(Debug, thiserror::Error)]
pub(super) enum TunnelError {
    #[error("cannot connect to the egress proxy {proxy}")]
    Connect {
        proxy: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("the egress proxy {proxy} answered \"{status}\" to CONNECT {target}{hint}")]
    Refused {
        proxy: String,
        target: String,
        status: String,
        hint: &'static str,
    },
    #[error("the egress proxy {proxy} did not open a tunnel to {target} within {secs} s")]
    Timeout {
        proxy: String,
        target: String,
        secs: u64,
    },
    #[error("the egress proxy {proxy}, asked for a tunnel to {target}: {what}")]
    Protocol {
        proxy: String,
        target: String,
        what: String,
    },
}

/// A request for a tunnel: the proxy and the target, for the errors that name both.
#[derive(Clone, Copy)]
pub(super) struct Asked<'a> {
    pub(super) proxy: &'a str,
    pub(super) target: &'a str,
}

impl Asked<'_> {
    pub(super) fn protocol(self, what: String) -> TunnelError {
        TunnelError::Protocol {
            proxy: self.proxy.to_string(),
            target: self.target.to_string(),
            what,
        }
    }

    pub(super) fn refused(self, status: String, hint: &'static str) -> TunnelError {
        TunnelError::Refused {
            proxy: self.proxy.to_string(),
            target: self.target.to_string(),
            status,
            hint,
        }
    }
}

/// Sends `CONNECT target` on `io`, a connection to `proxy`, and reads the answer head.
pub(super) async fn open<S>(
    io: &mut S,
    proxy: &str,
    target: &str,
    credentials: Option<&(String, Secret)>,
) -> Result<(), TunnelError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let asked = Asked { proxy, target };
    let protocol = |what: String| asked.protocol(what);
    let mut head = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n");
    if let Some((user, password)) = credentials {
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{}", password.expose()));
        head.push_str(&format!("Proxy-Authorization: Basic {token}\r\n"));
    }
    head.push_str("\r\n");
    io.write_all(head.as_bytes())
        .await
        .map_err(|e| protocol(format!("sending the request: {e}")))?;

    let mut answer = Vec::with_capacity(128);
    while !answer.ends_with(b"\r\n\r\n") {
        if answer.len() == MAX_HEAD {
            return Err(protocol(format!("answer head longer than {MAX_HEAD} bytes")));
        }
        match io.read_u8().await {
            Ok(b) => answer.push(b),
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                return Err(protocol("closed the connection before answering".into()))
            }
            Err(e) => return Err(protocol(format!("reading the answer: {e}"))),
        }
    }
    let line = String::from_utf8_lossy(answer.split(|&b| b == b'\n').next().unwrap_or_default());
    let line = line.trim_end();
    let mut parts = line.splitn(3, ' ');
    let (version, code) = (parts.next().unwrap_or_default(), parts.next().unwrap_or_default());
    let code: u16 = match (version.starts_with("HTTP/1."), code.len() == 3, code.parse()) {
        (true, true, Ok(code)) => code,
        _ => return Err(protocol(format!("not an HTTP answer: {:?}", truncate(line)))),
    };
    if (200..300).contains(&code) {
        return Ok(());
    }
    let hint = match (code, credentials.is_some()) {
        (407, false) => {
            " (the proxy wants credentials: give them in the proxy URL, http://user:password@host:port)"
        }
        (407, true) => " (the proxy refused the credentials of the proxy URL)",
        _ => "",
    };
    Err(asked.refused(
        truncate(line.trim_start_matches(version).trim()).to_string(),
        hint,
    ))
}

fn truncate(s: &str) -> &str {
    match s.char_indices().nth(120) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the proxy received, and the handshake's outcome, for a scripted `answer`.
    async fn handshake(
        answer: &'static [u8],
        credentials: Option<(String, Secret)>,
    ) -> (String, Result<(), TunnelError>) {
        let (mut client, mut proxy) = tokio::io::duplex(64 * 1024);
        let server = tokio::spawn(async move {
            let mut got = Vec::new();
            let mut byte = [0u8; 1];
            while !got.ends_with(b"\r\n\r\n") {
                proxy.read_exact(&mut byte).await.unwrap();
                got.push(byte[0]);
            }
            proxy.write_all(answer).await.unwrap();
            // The client's first tunnel bytes follow the answer; they must still be there.
            proxy.write_all(b"tunnel bytes").await.unwrap();
            String::from_utf8(got).unwrap()
        });
        let out = open(
            &mut client,
            "proxy.corp:3128",
            "ghcr.io:443",
            credentials.as_ref(),
        )
        .await;
        let got = server.await.unwrap();
        if out.is_ok() {
            let mut rest = [0u8; 12];
            client.read_exact(&mut rest).await.unwrap();
            assert_eq!(&rest, b"tunnel bytes", "nothing past the head may be read");
        }
        (got, out)
    }

    #[tokio::test]
    async fn a_2xx_opens_the_tunnel_and_credentials_go_as_basic() {
        let creds = Some(("robot".to_string(), Secret::new("s3cret")));
        let (got, out) = handshake(
            b"HTTP/1.1 200 Connection established\r\nVia: squid\r\n\r\n",
            creds,
        )
        .await;
        out.unwrap();
        assert_eq!(
            got,
            "CONNECT ghcr.io:443 HTTP/1.1\r\nHost: ghcr.io:443\r\nProxy-Authorization: Basic cm9ib3Q6czNjcmV0\r\n\r\n"
        );
        let (got, out) = handshake(b"HTTP/1.0 200 OK\r\n\r\n", None).await;
        out.unwrap();
        assert!(!got.contains("Proxy-Authorization"), "{got}");
    }

    #[tokio::test]
    async fn refusals_name_the_proxy_the_target_and_the_status() {
        let (_, out) = handshake(b"HTTP/1.1 407 Proxy Authentication Required\r\n\r\n", None).await;
        assert_eq!(
            out.unwrap_err().to_string(),
            "the egress proxy proxy.corp:3128 answered \"407 Proxy Authentication Required\" to CONNECT ghcr.io:443 (the proxy wants credentials: give them in the proxy URL, http://user:password@host:port)"
        );
        let (_, out) = handshake(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n", None).await;
        assert_eq!(
            out.unwrap_err().to_string(),
            "the egress proxy proxy.corp:3128 answered \"403 Forbidden\" to CONNECT ghcr.io:443"
        );
        let (_, out) = handshake(b"SSH-2.0-OpenSSH\r\n\r\n", None).await;
        let e = out.unwrap_err().to_string();
        assert!(e.ends_with("not an HTTP answer: \"SSH-2.0-OpenSSH\""), "{e}");
    }

    #[tokio::test]
    async fn a_proxy_that_hangs_up_or_babbles_is_an_error() {
        let (mut client, proxy) = tokio::io::duplex(1024);
        drop(proxy);
        let e = open(&mut client, "p:1", "t:443", None)
            .await
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("the egress proxy p:1, asked for a tunnel to t:443: "),
            "{e}"
        );

        let (mut client, mut proxy) = tokio::io::duplex(64 * 1024);
        tokio::spawn(async move {
            let _ = proxy.write_all(&[b'x'; MAX_HEAD + 10]).await;
            let mut sink = Vec::new();
            let _ = proxy.read_to_end(&mut sink).await;
        });
        let e = open(&mut client, "p:1", "t:443", None)
            .await
            .unwrap_err()
            .to_string();
        assert!(e.ends_with("answer head longer than 16384 bytes"), "{e}");
    }
}
