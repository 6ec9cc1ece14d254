//! deploy/clients: the docker, containerd, k3s and CRI-O/podman examples point at the mirror,
//! and only for registries regcache has a built-in upstream for.

use std::collections::BTreeSet;

use regcache::config::BUILTIN_UPSTREAMS;

use super::{deploy_files, parse_json, parse_toml, read, seq, yaml_documents, MIRROR};

fn builtin_hosts() -> BTreeSet<&'static str> {
    BUILTIN_UPSTREAMS.iter().map(|(h, _)| *h).collect()
}

#[test]
fn client_examples_point_at_the_mirror() {
    let mirror_url = format!("http://{MIRROR}");
    let known = builtin_hosts();
    containerd_hosts_toml(&mirror_url, &known);
    k3s_registries_yaml(&mirror_url, &known);
    crio_registries_conf(&known);

    // Docker: registry-mirrors.
    let daemon = parse_json("deploy/clients/docker-daemon.json");
    assert_eq!(daemon["registry-mirrors"][0].as_str(), Some(mirror_url.as_str()));
}

/// containerd: one directory per registry regcache knows, or _default for all of them.
fn containerd_hosts_toml(mirror_url: &str, known: &BTreeSet<&str>) {
    let mut dirs = BTreeSet::new();
    for rel in deploy_files().iter().filter(|f| f.ends_with("/hosts.toml")) {
        let dir = rel.rsplit('/').nth(1).unwrap();
        assert!(
            dir == "_default" || known.contains(dir),
            "{rel}: regcache has no built-in upstream {dir} to serve ?ns={dir}"
        );
        dirs.insert(dir.to_string());
        let t = parse_toml(rel);
        if dir == "_default" {
            assert!(
                t.get("server").is_none(),
                "{rel}: _default keeps the registry the image names"
            );
        } else {
            let server = t["server"].as_str().expect("server");
            assert!(server.starts_with("https://"), "{rel}: server {server}");
        }
        let host = t["host"][mirror_url]
            .as_table()
            .expect("a [host.\"http://<mirror>\"] table");
        let caps: Vec<&str> = host["capabilities"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c.as_str().unwrap())
            .collect();
        assert!(
            caps.contains(&"pull") && caps.contains(&"resolve"),
            "{rel}: {caps:?}"
        );
    }
    assert!(
        dirs.contains("_default") && dirs.contains("docker.io"),
        "{dirs:?}"
    );
}

/// k3s / RKE2 registries.yaml, including the commented "*" wildcard form.
fn k3s_registries_yaml(mirror_url: &str, known: &BTreeSet<&str>) {
    let text = read("deploy/clients/k3s-registries.yaml");
    let k3s = &yaml_documents("k3s-registries.yaml", &text)[0];
    let mirrors = k3s["mirrors"].as_mapping().expect("mirrors:");
    let hosts: BTreeSet<&str> = mirrors.keys().map(|k| k.as_str().unwrap()).collect();
    for h in ["docker.io", "ghcr.io", "quay.io", "registry.k8s.io"] {
        assert!(hosts.contains(h), "k3s-registries.yaml mirrors {h}");
    }
    let lines: Vec<&str> = text.lines().collect();
    let wildcard_at = lines
        .iter()
        .position(|l| l.trim() == "# \"*\":")
        .expect("the commented \"*\" wildcard form");
    let wildcard: String = lines[wildcard_at..]
        .iter()
        .take_while(|l| l.trim_start().starts_with("# "))
        .map(|l| format!("{}\n", l.replacen("# ", "", 1)))
        .collect();
    let wildcard = &yaml_documents("the \"*\" form", &format!("mirrors:\n{wildcard}"))[0];
    let mut all = mirrors.clone();
    all.extend(wildcard["mirrors"].as_mapping().unwrap().clone());
    assert!(all.contains_key("*"), "{wildcard:?}");
    for (host, m) in &all {
        let host = host.as_str().unwrap();
        assert!(
            host == "*" || known.contains(host),
            "k3s: no built-in upstream {host}"
        );
        let endpoints: Vec<&str> = seq(&m["endpoint"]).iter().map(|e| e.as_str().unwrap()).collect();
        assert_eq!(endpoints, [mirror_url], "k3s {host}");
    }
}

/// CRI-O / podman: the mirror location carries the registry as its first path segment.
fn crio_registries_conf(known: &BTreeSet<&str>) {
    let conf = parse_toml("deploy/clients/registries.conf");
    for reg in conf["registry"].as_array().unwrap() {
        let prefix = reg["prefix"].as_str().unwrap();
        assert!(
            known.contains(prefix),
            "registries.conf: no built-in upstream {prefix}"
        );
        for m in reg["mirror"].as_array().unwrap() {
            assert_eq!(
                m["location"].as_str(),
                Some(format!("{MIRROR}/{prefix}").as_str())
            );
        }
    }
}
