//! Client authentication and access rules: htpasswd users (bcrypt, cost 4 here), a private
//! upstream regcache holds credentials for, an `[[access]]` rule for one repository. Anonymous
//! clients are challenged (401 + `WWW-Authenticate: Basic`), identified ones refused by a rule get
//! 403 — on cache hits as on misses; wrong passwords are 401 and, repeated, 429; a pull checks
//! the password with bcrypt once; bearer tokens from `/token` name their client.

use base64::Engine as _;
use toml::{Table, Value};

use crate::support::daemon::{Daemon, DaemonBuilder, Reply, Upstream};
use crate::support::fake::{bytes_of, Auth, Fake};

const PRIVATE: &str = "private.example";

struct Setup {
    d: Daemon,
    public: Fake,
    private: Fake,
    dir: tempfile::TempDir,
}

fn basic(user: &str, password: &str) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    format!("Basic {b64}")
}

async fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let htpasswd = dir.path().join("htpasswd");
    let lines: Vec<String> = ["alice", "bob"]
        .iter()
        .map(|u| format!("{u}:{}", bcrypt::hash(format!("{u}-pw"), 4).unwrap()))
        .collect();
    std::fs::write(&htpasswd, lines.join("\n") + "\n").unwrap();
    let public = Fake::start().await;
    let private = Fake::start().await;
    private.set_auth(Auth::Basic {
        user: "robot".into(),
        pass: "upstream-pw".into(),
    });
    let auth = Table::from_iter([(
        "htpasswd_file".to_string(),
        Value::from(htpasswd.display().to_string()),
    )]);
    let rule = Table::from_iter([
        (
            "repository".to_string(),
            Value::from(format!("{PRIVATE}/team/secret")),
        ),
        ("read".to_string(), Value::from(vec!["alice"])),
    ]);
    let d = DaemonBuilder::new()
        .upstream(&public)
        .with_upstream(Upstream::new(PRIVATE, &private).credentials("robot", "upstream-pw"))
        .toml_entry("auth", auth)
        .toml_entry("access", vec![Value::from(rule)])
        .start()
        .await;
    Setup {
        d,
        public,
        private,
        dir,
    }
}

async fn get_as(d: &Daemon, who: Option<(&str, &str)>, path: &str) -> Reply {
    let header = who.map(|(u, p)| basic(u, p));
    let headers: Vec<(&str, &str)> = header.iter().map(|h| ("authorization", h.as_str())).collect();
    d.request("GET", path, &headers).await
}

/// 401 with the token flow's challenge alone (with Basic beside it, Docker Engine's client
/// fails every request it has no credentials for).
fn challenged(r: &Reply, what: &str) {
    assert_eq!(r.status, 401, "{what}");
    let all: Vec<&str> = r
        .headers
        .get_all("www-authenticate")
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect();
    assert_eq!(all.len(), 1, "{what}: {all:?}");
    assert!(
        all[0].starts_with("Bearer realm=\"http://127.0.0.1:"),
        "{what}: {all:?}"
    );
    assert!(
        all[0].contains("/token\",service=\"regcache\""),
        "{what}: {all:?}"
    );
    assert_eq!(r.error_code(), "UNAUTHORIZED", "{what}");
}

/// A bearer token from `/token`, fetched as `who`.
async fn token(d: &Daemon, who: Option<(&str, &str)>) -> String {
    let r = get_as(d, who, "/token?service=regcache&scope=repository:x:pull").await;
    assert_eq!(r.status, 200);
    let v: serde_json::Value = serde_json::from_slice(&r.bytes()).unwrap();
    assert_eq!(v["expires_in"], 300);
    assert_eq!(v["token"], v["access_token"]);
    assert!(v["issued_at"].as_str().unwrap().ends_with('Z'));
    v["token"].as_str().unwrap().to_string()
}

async fn get_with_token(d: &Daemon, token: &str, path: &str) -> Reply {
    let header = format!("Bearer {token}");
    d.request("GET", path, &[("authorization", header.as_str())])
        .await
}

#[tokio::test]
async fn a_user_reads_a_private_upstream_and_anonymous_clients_are_challenged() {
    let s = setup().await;
    let (digest, bytes, layers) = s.private.add_image("team/app", "1", &[bytes_of(3000, 1)]);
    let (_, public_bytes, _) = s.public.add_image("library/alpine", "3", &[bytes_of(100, 2)]);
    let alice = Some(("alice", "alice-pw"));
    let base = format!("/v2/{PRIVATE}/team/app");
    assert_eq!(
        get_as(&s.d, alice, &format!("{base}/manifests/1")).await.bytes(),
        bytes
    );
    let blob = get_as(&s.d, alice, &format!("{base}/blobs/{}", layers[0])).await;
    assert_eq!(blob.bytes(), bytes_of(3000, 1));

    // Cached now; anonymous clients still get nothing, by tag, by digest, blob or tag list.
    for path in [
        format!("{base}/manifests/1"),
        format!("{base}/manifests/{digest}"),
        format!("{base}/blobs/{}", layers[0]),
        format!("{base}/tags/list"),
        format!("/v2/team/app/manifests/1?ns={PRIVATE}"),
    ] {
        challenged(&get_as(&s.d, None, &path).await, &path);
    }
    // The cached digests under a public repository's name are not served either.
    for path in [
        format!("/v2/library/alpine/manifests/{digest}"),
        format!("/v2/library/alpine/blobs/{}", layers[0]),
    ] {
        assert_ne!(get_as(&s.d, None, &path).await.status, 200, "{path}");
    }
    // Public content stays anonymous; /v2/ asks for a login, which checks the password.
    assert_eq!(s.d.get("/v2/alpine/manifests/3").await.bytes(), public_bytes);
    challenged(&s.d.get("/v2/").await, "/v2/");
    assert_eq!(get_as(&s.d, alice, "/v2/").await.status, 200);
    challenged(
        &get_as(&s.d, Some(("alice", "wrong")), "/v2/").await,
        "wrong password",
    );
    challenged(
        &get_as(&s.d, Some(("carol", "x")), &format!("{base}/manifests/1")).await,
        "unknown user",
    );
    // A wrong password is refused even for public content: never downgraded to anonymous.
    challenged(
        &get_as(&s.d, Some(("alice", "wrong")), "/v2/alpine/manifests/3").await,
        "public",
    );
}

#[tokio::test]
async fn a_rule_refuses_another_user_what_a_permitted_user_just_pulled() {
    let s = setup().await;
    let (digest, bytes, layers) = s.private.add_image("team/secret", "v1", &[bytes_of(2000, 3)]);
    let base = format!("/v2/{PRIVATE}/team/secret");
    let alice = Some(("alice", "alice-pw"));
    let bob = Some(("bob", "bob-pw"));
    assert_eq!(
        get_as(&s.d, alice, &format!("{base}/manifests/v1")).await.bytes(),
        bytes
    );
    assert_eq!(
        get_as(&s.d, alice, &format!("{base}/manifests/{digest}"))
            .await
            .status,
        200
    );
    assert_eq!(
        get_as(&s.d, alice, &format!("{base}/blobs/{}", layers[0]))
            .await
            .status,
        200
    );
    for path in [
        format!("{base}/manifests/v1"),
        format!("{base}/manifests/{digest}"),
        format!("{base}/blobs/{}", layers[0]),
    ] {
        let r = get_as(&s.d, bob, &path).await;
        assert_eq!(r.status, 403, "{path}");
        assert_eq!(r.error_code(), "DENIED", "{path}");
        assert!(r.header("www-authenticate").is_none(), "{path}");
        challenged(&get_as(&s.d, None, &path).await, &path);
    }
    // Bob reads the private upstream where no rule decides.
    s.private.add_image("team/other", "1", &[bytes_of(10, 4)]);
    assert_eq!(
        get_as(&s.d, bob, &format!("/v2/{PRIVATE}/team/other/manifests/1"))
            .await
            .status,
        200
    );
}

#[tokio::test]
async fn repeated_failed_logins_are_refused_for_a_while() {
    let s = setup().await;
    for i in 0..10 {
        let r = get_as(&s.d, Some(("alice", "guess")), "/v2/").await;
        assert_eq!(r.status, 401, "attempt {i}");
    }
    let r = get_as(&s.d, Some(("alice", "alice-pw")), "/v2/").await;
    assert_eq!(r.status, 429);
    assert_eq!(r.error_code(), "TOOMANYREQUESTS");
    assert_eq!(r.header("retry-after"), Some("60"));
}

#[tokio::test]
async fn a_pull_checks_the_password_with_bcrypt_once() {
    let s = setup().await;
    let layers: Vec<Vec<u8>> = (0..5).map(|i| bytes_of(500, 10 + i)).collect();
    let (_, _, digests) = s.private.add_image("team/app", "1", &layers);
    let alice = Some(("alice", "alice-pw"));
    let base = format!("/v2/{PRIVATE}/team/app");
    assert_eq!(get_as(&s.d, alice, "/v2/").await.status, 200);
    assert_eq!(
        get_as(&s.d, alice, &format!("{base}/manifests/1")).await.status,
        200
    );
    for d in &digests {
        assert_eq!(
            get_as(&s.d, alice, &format!("{base}/blobs/{d}")).await.status,
            200
        );
    }
    assert_eq!(s.d.password_checks(), 1);
    assert_eq!(get_as(&s.d, Some(("alice", "other")), "/v2/").await.status, 401);
    assert_eq!(s.d.password_checks(), 2, "a different password is checked");
}

#[tokio::test]
async fn the_token_flow_names_the_client_for_every_rule() {
    let s = setup().await;
    let (digest, bytes, _) = s.private.add_image("team/secret", "v1", &[bytes_of(100, 5)]);
    let path = format!("/v2/{PRIVATE}/team/secret/manifests/v1");
    let r = get_as(&s.d, None, &path).await;
    challenged(&r, "anonymous");
    let scope = format!("scope=\"repository:{PRIVATE}/team/secret:pull\"");
    assert!(
        r.header("www-authenticate").unwrap().ends_with(&scope),
        "{:?}",
        r.headers
    );

    let alice = token(&s.d, Some(("alice", "alice-pw"))).await;
    assert_eq!(get_with_token(&s.d, &alice, &path).await.bytes(), bytes);
    let by_digest = format!("/v2/{PRIVATE}/team/secret/manifests/{digest}");
    assert_eq!(get_with_token(&s.d, &alice, &by_digest).await.status, 200);
    assert_eq!(get_with_token(&s.d, &alice, "/v2/").await.status, 200);
    let bob = token(&s.d, Some(("bob", "bob-pw"))).await;
    assert_eq!(get_with_token(&s.d, &bob, &path).await.status, 403);
    let anonymous = token(&s.d, None).await;
    challenged(&get_with_token(&s.d, &anonymous, &path).await, "anonymous token");
    challenged(
        &get_with_token(&s.d, &anonymous, "/v2/").await,
        "anonymous token /v2/",
    );
    challenged(&get_with_token(&s.d, &format!("{alice}x"), &path).await, "forged");
    // Wrong credentials get no token; the token endpoint challenges with Basic only.
    let r = get_as(&s.d, Some(("alice", "wrong")), "/token?service=regcache").await;
    assert_eq!(r.status, 401);
    assert_eq!(r.header("www-authenticate"), Some("Basic realm=\"regcache\""));
    // containerd tries an OAuth2 POST first and falls back to GET on 405.
    assert_eq!(s.d.request("POST", "/token", &[]).await.status, 405);
    assert_eq!(s.d.password_checks(), 3, "alice, bob, and the wrong password");
}

#[tokio::test]
async fn a_reload_replaces_users_and_forgets_remembered_passwords() {
    let s = setup().await;
    let (_, bytes, _) = s.private.add_image("team/app", "1", &[bytes_of(100, 6)]);
    let path = format!("/v2/{PRIVATE}/team/app/manifests/1");
    let alice = Some(("alice", "alice-pw"));
    assert_eq!(get_as(&s.d, alice, &path).await.bytes(), bytes);
    let htpasswd = s.dir.path().join("htpasswd-2");
    let hash = bcrypt::hash("carol-pw", 4).unwrap();
    std::fs::write(&htpasswd, format!("carol:{hash}\n")).unwrap();
    let text = format!(
        "builtin_upstreams = false\n[auth]\nhtpasswd_file = {:?}\n\
         [[upstreams]]\nhost = \"docker.io\"\nurl = \"{}\"\ndefault = true\n\
         [[upstreams]]\nhost = \"{PRIVATE}\"\nurl = \"{}\"\nusername = \"robot\"\npassword = \"upstream-pw\"\n",
        htpasswd.display().to_string(),
        s.public.url(),
        s.private.url()
    );
    let config = regcache::config::Config::from_toml_str(&text).unwrap();
    s.d.running.as_ref().unwrap().reloader().apply(&config);
    challenged(
        &get_as(&s.d, alice, &path).await,
        "a removed user, remembered before",
    );
    assert_eq!(
        get_as(&s.d, Some(("carol", "carol-pw")), &path).await.bytes(),
        bytes
    );
}
