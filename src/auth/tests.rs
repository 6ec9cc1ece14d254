use super::*;
use crate::config::Config;
use crate::oci::RepoName;

fn auth(extra: &str, private: &[&str]) -> (Auth, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let htpasswd = dir.path().join("htpasswd");
    let lines: Vec<String> = ["alice", "bob"]
        .iter()
        .map(|u| format!("{u}:{}", bcrypt::hash(format!("{u}-pw"), 4).unwrap()))
        .collect();
    std::fs::write(&htpasswd, lines.join("\n")).unwrap();
    let tokens = dir.path().join("tokens");
    let digest: String = sha2::Sha256::digest(b"robot-secret")
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    std::fs::write(&tokens, format!("robot-1:{digest}\n")).unwrap();
    let text = format!(
        "[auth]\nhtpasswd_file = {:?}\ntokens_file = {:?}\n{extra}",
        htpasswd.display().to_string(),
        tokens.display().to_string()
    );
    let config = Config::from_toml_str(&text).unwrap();
    (
        Auth::new(&config.auth, private.iter().map(|s| s.to_string())),
        dir,
    )
}

use sha2::Digest as _;

fn read(a: &Auth, who: Option<&str>, upstream: &str, repo: &str) -> bool {
    let repo: RepoName = repo.parse().unwrap();
    let client = Client {
        identity: who.map(str::to_string),
    };
    a.may_read(
        &client,
        &Place {
            upstream,
            repo: &repo,
        },
        Content::Tags,
    )
    .is_ok()
}

#[tokio::test]
async fn passwords_tokens_and_the_cache() {
    let (a, _dir) = auth("", &[]);
    let ok = |p: &str| Secret::new(p);
    assert_eq!(a.login("alice", &ok("alice-pw"), None).await, Ok("alice".into()));
    assert_eq!(a.login("alice", &ok("alice-pw"), None).await, Ok("alice".into()));
    assert_eq!(a.password_checks(), 1, "the second check is remembered");
    assert_eq!(
        a.login("alice", &ok("wrong"), None).await,
        Err(LoginError::Invalid)
    );
    assert_eq!(a.login("nobody", &ok("x"), None).await, Err(LoginError::Invalid));
    assert_eq!(a.password_checks(), 2);
    assert_eq!(
        a.login("robot-1", &ok("robot-secret"), None).await,
        Ok("robot-1".into())
    );
    assert_eq!(
        a.login("robot-1", &ok("robot-other"), None).await,
        Err(LoginError::Invalid)
    );
    assert_eq!(a.password_checks(), 2, "tokens need no bcrypt");
}

#[tokio::test]
async fn failed_logins_are_limited_per_address() {
    let (a, _dir) = auth("", &[]);
    let peer: IpAddr = "192.0.2.1".parse().unwrap();
    let wrong = Secret::new("wrong");
    for _ in 0..limiter::MAX_FAILURES {
        assert_eq!(
            a.login("robot-1", &wrong, Some(peer)).await,
            Err(LoginError::Invalid)
        );
    }
    let right = Secret::new("robot-secret");
    assert_eq!(
        a.login("robot-1", &right, Some(peer)).await,
        Err(LoginError::TooManyAttempts)
    );
    let other: IpAddr = "192.0.2.2".parse().unwrap();
    assert!(a.login("robot-1", &right, Some(other)).await.is_ok());
}

#[test]
fn rules_groups_and_private_upstreams() {
    let rules = "[auth.groups]\nci = [\"robot-1\"]\n\
        [[access]]\nrepository = \"ghcr.io/team/**\"\nread = [\"alice\", \"@ci\"]\n\
        [[access]]\nrepository = \"docker.io/library/*\"\nread = [\"anonymous\"]\n\
        [[access]]\nrepository = \"*/secret/*\"\nread = [\"authenticated\"]\n";
    let (a, _dir) = auth(rules, &["ghcr.io"]);
    assert!(read(&a, Some("alice"), "ghcr.io", "team/app/x"));
    assert!(read(&a, Some("robot-1"), "ghcr.io", "team/app"));
    assert!(!read(&a, Some("bob"), "ghcr.io", "team/app"));
    assert!(!read(&a, None, "ghcr.io", "other/app"), "private upstream");
    assert!(
        read(&a, Some("bob"), "ghcr.io", "other/app"),
        "no rule: identified clients read"
    );
    assert!(read(&a, None, "docker.io", "library/alpine"));
    assert!(!read(&a, None, "quay.io", "secret/x"));
    assert!(read(&a, Some("bob"), "quay.io", "secret/x"));
    assert!(
        read(&a, None, "quay.io", "public/x"),
        "anonymous = read by default"
    );
    assert!(a.wants_login());
    let (none, _dir) = auth("anonymous = \"none\"\n", &[]);
    assert!(!read(&none, None, "quay.io", "public/x"));
    assert!(read(&none, Some("bob"), "quay.io", "public/x"));
    let open = Auth::open();
    assert!(!open.wants_login() && read(&open, None, "quay.io", "x"));
}
