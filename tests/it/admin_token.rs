//! The admin listener's guard on state-changing requests: `POST /admin/gc` is refused on a
//! listener other machines reach unless `[admin] token_file` is set, then needs that token as a
//! bearer token; reading (`/metrics`, `/healthz`, `GET /admin/cache`) stays open; and
//! `regcache cache gc` through a running daemon sends the token from the same config file.

use std::path::Path;
use std::process::{Command, Output};

use crate::support::daemon::{Daemon, DaemonBuilder};
use crate::support::fake::{bytes_of, Fake};

fn regcache(args: &[&str], config: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_regcache"))
        .args(args)
        .arg("--config")
        .arg(config)
        .output()
        .unwrap()
}

async fn reads_are_open(d: &Daemon) {
    for path in ["/metrics", "/healthz", "/readyz", "/admin/cache"] {
        assert_eq!(d.admin(path).await.status, 200, "{path}");
    }
}

#[tokio::test]
async fn a_public_admin_listener_without_a_token_refuses_gc() {
    let up = Fake::start().await;
    let d = DaemonBuilder::new()
        .upstream(&up)
        .admin_listen("0.0.0.0:0")
        .start()
        .await;
    reads_are_open(&d).await;
    let r = d.admin_post("/admin/gc").await;
    assert_eq!(r.status, 403);
    assert!(String::from_utf8_lossy(&r.bytes()).contains("token_file"));
    let r = d
        .admin_with("POST", "/admin/gc", &[("authorization", "Bearer guess")])
        .await;
    assert_eq!(r.status, 403, "no token is configured, so none is right");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gc_needs_the_token_of_token_file() {
    let up = Fake::start().await;
    let blob = up.add_blob("library/app", bytes_of(50_000, 7));
    let secrets = tempfile::tempdir().unwrap();
    let token_file = secrets.path().join("admin-token");
    std::fs::write(&token_file, "correct-horse-battery\n").unwrap();
    let d = DaemonBuilder::new()
        .upstream(&up)
        .admin_listen("0.0.0.0:0")
        .admin_token_file(&token_file)
        .start()
        .await;
    reads_are_open(&d).await;
    let r = d.admin_post("/admin/gc").await;
    assert_eq!(r.status, 401);
    assert_eq!(
        r.header("www-authenticate"),
        Some("Bearer realm=\"regcache-admin\"")
    );
    let wrong = [("authorization", "Bearer correct-horse")];
    assert_eq!(d.admin_with("POST", "/admin/gc", &wrong).await.status, 401);
    let right = [("authorization", "Bearer correct-horse-battery")];
    assert_eq!(d.admin_with("POST", "/admin/gc", &right).await.status, 200);

    assert_eq!(d.get(&format!("/v2/library/app/blobs/{blob}")).await.status, 200);
    d.download_settled(&blob).await;
    let config = secrets.path().join("regcache.toml");
    let write = |token: bool| {
        let token = if token {
            format!("token_file = \"{}\"\n", token_file.display())
        } else {
            String::new()
        };
        let text = format!(
            "[admin]\nlisten = \"{}\"\n{token}[cache]\ndir = \"{}\"\n",
            d.admin_addr,
            d.dir.path().display()
        );
        std::fs::write(&config, text).unwrap();
    };
    write(false);
    let out = regcache(&["cache", "gc", "--to", "0"], &config);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("401"), "{err}");
    assert!(err.contains("Authorization: Bearer"), "{err}");
    write(true);
    let out = regcache(&["cache", "gc", "--to", "0"], &config);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        text.contains("evicted 1 entries") && text.contains("running daemon"),
        "{text}"
    );
    assert!(!text.contains("correct-horse"), "{text}");
}
