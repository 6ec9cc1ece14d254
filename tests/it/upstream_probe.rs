//! `regcache check-config --probe`, run as the binary: every upstream and fallback is asked for
//! `/v2/` the way the daemon asks (token auth, the egress proxy); what answered and what did
//! not is one line each, and the command fails when one did not. Loopback only.

use crate::support::commands::{command as regcache, text};
use crate::support::connect_proxy::ConnectProxy;
use crate::support::fake::{Auth, Fake};
use crate::support::listeners::free_port;

/// An upstream URL where nothing listens.
fn closed_port_url() -> String {
    format!("http://127.0.0.1:{}", free_port())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_upstream_and_fallback_is_asked_through_the_proxy() {
    let up = Fake::start().await;
    up.set_auth(Auth::Bearer { expires_in: None });
    let proxy = ConnectProxy::start().await;
    let down = closed_port_url();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("regcache.toml");
    let write = |extra: &str| {
        std::fs::write(
            &config,
            format!(
                "builtin_upstreams = false\n[cache]\ndir = \"{}\"\n[fetch]\nproxy = \"{}\"\n\
                 [[upstreams]]\nhost = \"docker.io\"\nurl = \"{}\"\ndefault = true\nfallback = [\"{}\"]\n{extra}",
                dir.path().join("cache").display(),
                proxy.url(),
                up.url(),
                up.url(),
            ),
        )
        .unwrap();
    };

    write("[[upstreams]]\nhost = \"lab.example\"\noffline = true\n");
    let o = regcache(&["check-config", "--probe"], &config);
    assert!(o.status.success(), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    let ok_line = format!("  docker.io {}: ok in ", up.url());
    assert!(out.contains(&ok_line), "{out}");
    assert!(
        out.contains(&format!("    fallback {}: ok in ", up.url())),
        "{out}"
    );
    assert!(
        out.contains("  lab.example https://lab.example: offline, not contacted"),
        "{out}"
    );
    assert!(!up.token_requests().is_empty(), "the probe did not take a token");
    let target = up.url().trim_start_matches("http://").to_string();
    assert!(proxy.targets().contains(&target), "{:?}", proxy.targets());

    write(&format!(
        "[[upstreams]]\nhost = \"gone.example\"\nurl = \"{down}\"\n"
    ));
    let o = regcache(&["check-config", "--probe"], &config);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(out.contains(&ok_line), "{out}");
    assert!(
        out.contains(&format!(
            "  gone.example {down}: FAILED: upstream gone.example could not be reached"
        )),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shared_bucket_that_does_not_answer_fails_the_probe() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("regcache.toml");
    let nowhere = closed_port_url();
    std::fs::write(
        &config,
        format!(
            "builtin_upstreams = false\n[cache]\ndir = \"{}\"\n[storage]\nkind = \"s3\"\nbucket = \"b\"\n\
             endpoint = \"{nowhere}\"\naccess_key_id = \"k\"\nsecret_access_key_file = \"{}\"\n\
             [[upstreams]]\nhost = \"docker.io\"\noffline = true\n",
            dir.path().join("cache").display(),
            dir.path().join("secret").display(),
        ),
    )
    .unwrap();
    std::fs::write(dir.path().join("secret"), "s\n").unwrap();
    let o = regcache(&["check-config", "--probe"], &config);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        out.contains(&format!("  shared store s3 bucket b at {nowhere}: FAILED: ")),
        "{out}"
    );
}
