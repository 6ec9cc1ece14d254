//! TLS on the registry listener (`[tls]`): HTTP/1.1 and HTTP/2 by ALPN with RSA, ECDSA and
//! Ed25519 server keys, byte-identical pulls, clients that do not trust the CA, certificate
//! reload while connections stay open, and client certificates (required, optional, and the
//! identity they give in the access log). Each test makes its own CA.

mod pki;

use std::time::Duration;

use crate::support::binary::Binary;
use crate::support::daemon::DaemonBuilder;
use crate::support::fake::{bytes_of, Fake};
use pki::{client_config, connect, get_once, served_certificate, Http, KeyKind, Pki};

#[tokio::test]
async fn every_server_key_type_serves_http1_and_http2() {
    let up = Fake::start().await;
    let layer = bytes_of(300_000, 7);
    let (_, manifest, layers) = up.add_image("library/alpine", "latest", std::slice::from_ref(&layer));
    for kind in [KeyKind::EcdsaP256, KeyKind::Ed25519, KeyKind::Rsa] {
        let pki = Pki::new("regcache test CA");
        pki.server(kind, "regcache");
        let d = DaemonBuilder::new()
            .upstream(&up)
            .tls(&pki.path("server.crt"), &pki.path("server.key"))
            .start()
            .await;
        for alpn in [&b"http/1.1"[..], b"h2"] {
            let stream = connect(d.addr, pki.client_config(alpn, None)).await.unwrap();
            assert_eq!(stream.get_ref().1.alpn_protocol(), Some(alpn), "{kind:?}");
            let mut http = Http::over(stream).await.unwrap();
            let (status, body) = http.get("/v2/library/alpine/manifests/latest").await.unwrap();
            assert_eq!((status, &body), (200, &manifest), "{kind:?} {alpn:?}");
            let blob = format!("/v2/library/alpine/blobs/{}", layers[0]);
            let (status, body) = http.get(&blob).await.unwrap();
            assert_eq!(
                (status, body.as_ref()),
                (200, layer.as_slice()),
                "{kind:?} {alpn:?}"
            );
        }
        d.stop().await;
    }
}

#[tokio::test]
async fn clients_that_do_not_trust_the_ca_or_stall_get_nothing() {
    let up = Fake::start().await;
    let pki = Pki::new("regcache test CA");
    pki.server(KeyKind::EcdsaP256, "regcache");
    let d = DaemonBuilder::new()
        .upstream(&up)
        .tls(&pki.path("server.crt"), &pki.path("server.key"))
        .start()
        .await;
    let stranger = Pki::new("another CA");
    let e = connect(d.addr, stranger.client_config(b"h2", None))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("UnknownIssuer"), "{e}");
    let system = client_config(rustls::RootCertStore::empty(), b"h2", None);
    assert!(connect(d.addr, system).await.is_err());
    // A client that connects and says nothing does not stop the accept loop; neither does
    // plain HTTP on the TLS port.
    let _silent = tokio::net::TcpStream::connect(d.addr).await.unwrap();
    let plain = plain_get(d.addr).await;
    assert!(!plain.starts_with("HTTP/1.1 200"), "{plain}");
    let (status, _) = get_once(d.addr, pki.client_config(b"h2", None), "/v2/")
        .await
        .unwrap();
    assert_eq!(status, 200);
}

/// A plain-text `GET /v2/` on `addr`; whatever comes back (nothing, from a TLS listener).
async fn plain_get(addr: std::net::SocketAddr) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let _ = tcp.write_all(b"GET /v2/ HTTP/1.1\r\nhost: x\r\n\r\n").await;
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut buf)).await;
    String::from_utf8_lossy(&buf).into_owned()
}

#[tokio::test]
async fn rewritten_certificate_is_served_to_new_connections_while_open_ones_go_on() {
    let up = Fake::start().await;
    let pki = Pki::new("regcache test CA");
    let first = pki.server(KeyKind::EcdsaP256, "first");
    let d = DaemonBuilder::new()
        .upstream(&up)
        .tls(&pki.path("server.crt"), &pki.path("server.key"))
        .start()
        .await;
    let config = pki.client_config(b"h2", None);
    assert_eq!(served_certificate(d.addr, config.clone()).await, first);
    let mut open = Http::over(connect(d.addr, config.clone()).await.unwrap())
        .await
        .unwrap();
    assert_eq!(open.get("/v2/").await.unwrap().0, 200);

    let second = pki.server(KeyKind::Ed25519, "second");
    let mut served = first.clone();
    for _ in 0..100 {
        served = served_certificate(d.addr, config.clone()).await;
        if served == second {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        served, second,
        "the rewritten certificate is picked up by the file check"
    );
    assert_eq!(
        open.get("/v2/").await.unwrap().0,
        200,
        "the open HTTP/2 connection goes on"
    );

    // A broken rewrite keeps the certificate in use (the SIGHUP path reloads at once).
    std::fs::write(pki.path("server.key"), "not a key").unwrap();
    d.running.as_ref().unwrap().reloader().reload_certificate();
    assert_eq!(served_certificate(d.addr, config.clone()).await, second);
    let (status, _) = get_once(d.addr, config, "/v2/").await.unwrap();
    assert_eq!(status, 200);
}

#[tokio::test]
async fn required_client_certificate_refuses_clients_without_one() {
    let up = Fake::start().await;
    let pki = Pki::new("regcache test CA");
    pki.server(KeyKind::EcdsaP256, "regcache");
    let d = DaemonBuilder::new()
        .upstream(&up)
        .tls(&pki.path("server.crt"), &pki.path("server.key"))
        .client_ca(&pki.path("ca.crt"), None)
        .start()
        .await;
    for alpn in [&b"http/1.1"[..], b"h2"] {
        let anonymous = get_once(d.addr, pki.client_config(alpn, None), "/v2/").await;
        assert!(anonymous.is_err(), "{anonymous:?}");
        let stranger = Pki::new("another CA").client("mallory");
        let forged = get_once(d.addr, pki.client_config(alpn, Some(stranger)), "/v2/").await;
        assert!(forged.is_err(), "{forged:?}");
        let cert = pki.client("builder-7");
        let (status, _) = get_once(d.addr, pki.client_config(alpn, Some(cert)), "/v2/")
            .await
            .unwrap();
        assert_eq!(status, 200);
    }
}

#[tokio::test]
async fn optional_client_certificate_serves_anonymous_clients() {
    let up = Fake::start().await;
    let pki = Pki::new("regcache test CA");
    pki.server(KeyKind::EcdsaP256, "regcache");
    let d = DaemonBuilder::new()
        .upstream(&up)
        .tls(&pki.path("server.crt"), &pki.path("server.key"))
        .client_ca(&pki.path("ca.crt"), Some("optional"))
        .start()
        .await;
    let (status, _) = get_once(d.addr, pki.client_config(b"h2", None), "/v2/")
        .await
        .unwrap();
    assert_eq!(status, 200);
    let cert = pki.client("builder-7");
    let (status, _) = get_once(d.addr, pki.client_config(b"h2", Some(cert)), "/v2/")
        .await
        .unwrap();
    assert_eq!(status, 200);
}

#[tokio::test]
async fn client_certificate_names_the_client_in_the_access_log() {
    let up = Fake::start().await;
    let (_, manifest, _) = up.add_image("library/alpine", "latest", &[bytes_of(1000, 3)]);
    let pki = Pki::new("regcache test CA");
    pki.server(KeyKind::EcdsaP256, "regcache");
    let config = pki.path("regcache.toml");
    let toml = format!(
        "listen = \"127.0.0.1:0\"\nbuiltin_upstreams = false\n[admin]\nlisten = \"127.0.0.1:0\"\n\
         [cache]\ndir = {cache:?}\n[tls]\ncert_file = {cert:?}\nkey_file = {key:?}\nclient_ca_file = {ca:?}\n\
         [[upstreams]]\nhost = \"docker.io\"\nurl = {url:?}\n",
        cache = pki.path("cache").display().to_string(),
        cert = pki.path("server.crt").display().to_string(),
        key = pki.path("server.key").display().to_string(),
        ca = pki.path("ca.crt").display().to_string(),
        url = up.url(),
    );
    std::fs::write(&config, toml).unwrap();
    let regcache = Binary::start(&config, pki.dir.path(), &[]);
    let addr = regcache
        .field("regcache listening", "listen")
        .await
        .parse()
        .unwrap();
    let cert = pki.client("builder-7");
    let path = "/v2/library/alpine/manifests/latest";
    let (status, body) = get_once(addr, pki.client_config(b"h2", Some(cert)), path)
        .await
        .unwrap();
    assert_eq!((status, body), (200, manifest));
    assert_eq!(regcache.field("request", "client").await, "builder-7");
    regcache.stop();
}

#[tokio::test]
async fn check_config_reports_every_tls_problem() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new("regcache test CA");
    pki.server(KeyKind::EcdsaP256, "regcache");
    let other = Pki::new("other");
    other.server(KeyKind::Ed25519, "other");
    let config = dir.path().join("regcache.toml");
    let toml = format!(
        "[tls]\ncert_file = {cert:?}\nkey_file = {key:?}\nclient_ca_file = \"/nonexistent/ca.crt\"\n",
        cert = pki.path("server.crt").display().to_string(),
        key = other.path("server.key").display().to_string(),
    );
    std::fs::write(&config, toml).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_regcache"))
        .args(["check-config", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("does not hold the private key of the certificate"),
        "{err}"
    );
    assert!(
        err.contains("/nonexistent/ca.crt is not a readable file"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 2, "{err}");
}

#[test]
fn every_tls_key_is_documented() {
    let example = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/etc/regcache.toml")).unwrap();
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    for key in ["cert_file", "key_file", "client_ca_file", "client_auth"] {
        assert!(
            example.lines().any(|l| l.starts_with(&format!("# {key} = "))),
            "etc/regcache.toml does not show {key}"
        );
        assert!(
            readme.contains(&format!("{key}`")),
            "README.md does not mention {key}"
        );
    }
}
