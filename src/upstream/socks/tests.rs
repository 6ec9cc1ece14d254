use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;

/// What the proxy received, and the handshake's outcome, for scripted `answers` (each sent
/// after reading `reads[i]` bytes).
async fn handshake(
    dest: Dest<'static>,
    credentials: Option<(String, Secret)>,
    script: &'static [(usize, &'static [u8])],
) -> (Vec<u8>, Result<(), TunnelError>) {
    let (mut client, mut proxy) = tokio::io::duplex(4096);
    let server = tokio::spawn(async move {
        let mut got = Vec::new();
        for (read, answer) in script {
            let mut buf = vec![0u8; *read];
            if proxy.read_exact(&mut buf).await.is_err() {
                break;
            }
            got.extend_from_slice(&buf);
            proxy.write_all(answer).await.unwrap();
        }
        proxy.write_all(b"tunnel").await.unwrap();
        got
    });
    let out = open(
        &mut client,
        "socks.corp:1080",
        "ghcr.io:443",
        dest,
        credentials.as_ref(),
    )
    .await;
    if out.is_ok() {
        let mut rest = [0u8; 6];
        client.read_exact(&mut rest).await.unwrap();
        assert_eq!(&rest, b"tunnel", "nothing past the reply may be read");
    }
    drop(client);
    (server.await.unwrap(), out)
}

const OK_V4: &[u8] = &[0x05, 0x00, 0x00, 0x01, 10, 0, 0, 1, 0x1F, 0x90];

#[tokio::test]
async fn a_name_without_credentials() {
    let (got, out) = handshake(
        Dest::Name("ghcr.io", 443),
        None,
        &[(3, &[0x05, 0x00]), (7 + 7, OK_V4)],
    )
    .await;
    out.unwrap();
    let mut want = vec![0x05, 0x01, 0x00, 0x05, 0x01, 0x00, 0x03, 7];
    want.extend_from_slice(b"ghcr.io");
    want.extend_from_slice(&[0x01, 0xBB]);
    assert_eq!(got, want);
}

#[tokio::test]
async fn an_address_with_credentials_and_a_domain_bound_reply() {
    let creds = Some(("robot".to_string(), Secret::new("pw")));
    const REPLY: &[u8] = &[0x05, 0x00, 0x00, 0x03, 3, b'p', b'x', b'y', 0x00, 0x50];
    let (got, out) = handshake(
        Dest::Addr("::1".parse().unwrap(), 5000),
        creds,
        &[(4, &[0x05, 0x02]), (10, &[0x01, 0x00]), (22, REPLY)],
    )
    .await;
    out.unwrap();
    assert_eq!(&got[..4], &[0x05, 0x02, 0x00, 0x02]);
    assert_eq!(
        &got[4..14],
        &[0x01, 5, b'r', b'o', b'b', b'o', b't', 2, b'p', b'w']
    );
    assert_eq!(&got[14..18], &[0x05, 0x01, 0x00, 0x04]);
    assert_eq!(&got[34..], &[0x13, 0x88]);
}

#[tokio::test]
async fn refusals_are_named() {
    let (_, out) = handshake(Dest::Name("ghcr.io", 443), None, &[(3, &[0x05, 0xFF])]).await;
    let e = out.unwrap_err().to_string();
    assert!(
        e.contains("\"no acceptable authentication method\"") && e.contains("wants credentials"),
        "{e}"
    );

    let creds = Some(("robot".to_string(), Secret::new("bad")));
    let (_, out) = handshake(
        Dest::Name("ghcr.io", 443),
        creds,
        &[(4, &[0x05, 0x02]), (11, &[0x01, 0x01])],
    )
    .await;
    let e = out.unwrap_err().to_string();
    assert!(e.contains("user and password refused"), "{e}");

    let (_, out) = handshake(
        Dest::Name("ghcr.io", 443),
        None,
        &[
            (3, &[0x05, 0x00]),
            (14, &[0x05, 0x05, 0x00, 0x01, 0, 0, 0, 0, 0, 0]),
        ],
    )
    .await;
    assert_eq!(
        out.unwrap_err().to_string(),
        "the egress proxy socks.corp:1080 answered \"connection refused (5)\" to CONNECT ghcr.io:443"
    );
}
