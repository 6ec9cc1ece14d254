//! The admin listener's status page (`GET /`): after an image is pulled it is an HTML page that
//! names the image's repository:tag and its short digest, and it is refused without the admin
//! token exactly like `GET /admin/cache/ls`. (Escaping is a unit test of the page's helper: names
//! with HTML metacharacters cannot be pulled.)

use crate::support::daemon::DaemonBuilder;
use crate::support::fake::{bytes_of, Fake};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_lists_a_pulled_image() {
    let up = Fake::start().await;
    let (digest, _, _) = up.add_image("library/app", "v1", &[bytes_of(1_000, 1)]);
    let d = DaemonBuilder::new().upstream(&up).start().await;
    assert_eq!(d.get("/v2/library/app/manifests/v1").await.status, 200);
    let r = d.admin("/").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("text/html; charset=utf-8"));
    let page = String::from_utf8(r.bytes().to_vec()).unwrap();
    assert!(page.starts_with("<!DOCTYPE html>"), "{page}");
    assert!(page.contains("library/app:v1"), "{page}");
    let hex = digest.strip_prefix("sha256:").unwrap();
    assert!(page.contains(&hex[..12]), "{page}");
    assert!(!page.contains("<script"), "{page}");
    assert_eq!(d.admin_post("/").await.status, 405);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_needs_the_admin_token_like_the_listing() {
    let up = Fake::start().await;
    up.add_image("library/app", "v1", &[bytes_of(10, 1)]);
    let secrets = tempfile::tempdir().unwrap();
    let token_file = secrets.path().join("admin-token");
    std::fs::write(&token_file, "correct-horse-battery\n").unwrap();
    let d = DaemonBuilder::new()
        .upstream(&up)
        .admin_listen("0.0.0.0:0")
        .admin_token_file(&token_file)
        .start()
        .await;
    assert_eq!(d.get("/v2/library/app/manifests/v1").await.status, 200);
    let without = d.admin("/").await;
    assert_eq!(without.status, 401);
    assert_eq!(without.status, d.admin("/admin/cache/ls").await.status);
    let wrong = [("authorization", "Bearer wrong")];
    assert_eq!(d.admin_with("GET", "/", &wrong).await.status, 401);
    let right = [("authorization", "Bearer correct-horse-battery")];
    let r = d.admin_with("GET", "/", &right).await;
    assert_eq!(r.status, 200);
    assert!(String::from_utf8_lossy(&r.bytes()).contains("library/app:v1"));
}
