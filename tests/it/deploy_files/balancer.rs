//! deploy/cluster/nginx.conf and deploy/cluster/kubernetes/nginx.conf: the balancer hashes the
//! request URI onto the replicas' registry port, streams both ways, skips a failing replica and
//! never sends a request with a body twice; and nginx accepts both files, when it is installed.

use std::path::Path;
use std::process::Command;

use super::cluster::{replica_config, VM_BALANCER, VM_REPLICA};
use super::read;
use crate::support::tools;

/// Each balancer configuration with the replica configuration of the replicas behind it.
pub(super) const BALANCERS: [(&str, &str); 2] = [
    (VM_BALANCER, VM_REPLICA),
    (
        "deploy/cluster/kubernetes/nginx.conf",
        "deploy/cluster/kubernetes/regcache.toml",
    ),
];

/// The directives of an nginx configuration without comments and extra spaces, one per line as
/// these files write them.
fn directives(text: &str) -> Vec<String> {
    text.lines()
        .map(|l| {
            l.split('#')
                .next()
                .unwrap()
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ")
        })
        .filter(|l| !l.is_empty())
        .collect()
}

/// The `server` directives inside `upstream regcache_replicas { ... }`, as their words.
pub(super) fn upstream_servers(text: &str) -> Vec<Vec<String>> {
    let mut inside = false;
    let mut servers = Vec::new();
    for d in directives(text) {
        if d == "upstream regcache_replicas {" {
            inside = true;
        } else if inside && d == "}" {
            break;
        } else if inside && d.starts_with("server ") {
            let words = d.trim_end_matches(';').split(' ').map(str::to_string).collect();
            servers.push(words);
        }
    }
    servers
}

/// The port of the first `listen` directive: where the balancer takes pulls.
pub(super) fn listen_port(text: &str) -> u16 {
    let d = directives(text)
        .into_iter()
        .find(|d| d.starts_with("listen "))
        .expect("a listen directive");
    d["listen ".len()..]
        .trim_end_matches(';')
        .parse()
        .expect("listen <port>;")
}

#[test]
fn balancers_hash_by_uri_and_stream() {
    for (rel, replica) in BALANCERS {
        let d = directives(&read(rel));
        for want in [
            "hash $regcache_home consistent;",
            "\"~/(blobs|manifests)/(?<home_digest>sha256:[0-9a-f]{64})$\" $home_digest;",
            "default $request_uri;",
            "proxy_pass http://regcache_replicas;",
            "proxy_http_version 1.1;",
            "proxy_buffering off;",
            "proxy_request_buffering off;",
            "client_max_body_size 0;",
            "proxy_set_header Host $http_host;",
            "proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;",
            "proxy_next_upstream error timeout http_502 http_503;",
        ] {
            assert!(d.iter().any(|l| l == want), "{rel}: no `{want}`");
        }
        assert!(
            !d.iter().any(|l| l.contains("non_idempotent")),
            "{rel}: a push (POST, PUT, PATCH) must not be sent to a second replica"
        );
        let read_timeout = d
            .iter()
            .find_map(|l| l.strip_prefix("proxy_read_timeout "))
            .and_then(|t| t.strip_suffix("s;"))
            .and_then(|t| t.parse::<u64>().ok())
            .unwrap_or_else(|| panic!("{rel}: proxy_read_timeout <seconds>s;"));
        let (config, _) = replica_config(replica, &read(replica));
        assert!(
            read_timeout > config.fetch.read_timeout.as_secs(),
            "{rel}: proxy_read_timeout {read_timeout}s is not above the replicas' read_timeout"
        );
        let servers = upstream_servers(&read(rel));
        assert!(servers.len() >= 2, "{rel}: {servers:?}");
        for s in &servers {
            let port = format!(":{}", config.listen.port());
            assert!(
                s[1].ends_with(&port),
                "{rel}: {s:?} is not on {replica}'s listen port"
            );
            for param in ["max_fails=", "fail_timeout="] {
                assert!(
                    s.iter().any(|w| w.starts_with(param)),
                    "{rel}: {s:?} without {param}"
                );
            }
        }
    }
}

/// `nginx -t` on both files, with the replicas at 127.0.0.1 ports, the resolver at 127.0.0.1,
/// files in a temporary directory, no `user` and no `resolve` (nginx before 1.27.3 lacks it).
/// Optional: CI does not install nginx, and the test above checks the same directives.
#[test]
fn nginx_accepts_the_balancers_when_present() {
    let Some(nginx) = tools::find("nginx")
        .or_else(|| Some(Path::new("/usr/sbin/nginx").to_path_buf()).filter(|p| p.is_file()))
    else {
        eprintln!("nginx_accepts_the_balancers_when_present: nginx not installed, not checked");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    for (i, (rel, _)) in BALANCERS.iter().enumerate() {
        let conf = dir.path().join(format!("balancer-{i}.conf"));
        std::fs::write(&conf, for_syntax_check(&read(rel), dir.path())).unwrap();
        let out = Command::new(&nginx)
            .arg("-t")
            .arg("-p")
            .arg(dir.path())
            .arg("-e")
            .arg(dir.path().join("startup-error.log"))
            .arg("-c")
            .arg(&conf)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "nginx -t {rel}:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

fn for_syntax_check(text: &str, dir: &Path) -> String {
    let mut port = 15000;
    let mut file = 0;
    let mut out = String::new();
    for line in directives(text) {
        let words: Vec<&str> = line.trim_end_matches(';').split(' ').collect();
        let line = match words[0] {
            "user" => continue,
            "resolver" => "resolver 127.0.0.1 valid=10s;".to_string(),
            "server" if words[1] != "{" => {
                port += 1;
                let params: Vec<&str> = words[2..].iter().copied().filter(|w| *w != "resolve").collect();
                format!("server 127.0.0.1:{port} {};", params.join(" "))
            }
            "pid"
            | "access_log"
            | "error_log"
            | "client_body_temp_path"
            | "proxy_temp_path"
            | "fastcgi_temp_path"
            | "uwsgi_temp_path"
            | "scgi_temp_path"
                if words[1].starts_with('/') && !words[1].starts_with("/dev/") =>
            {
                file += 1;
                let path = dir.join(format!("file-{file}"));
                let rest = words[2..].join(" ");
                format!("{} {} {rest};", words[0], path.display())
            }
            _ => line,
        };
        out.push_str(&line);
        out.push('\n');
    }
    out
}
