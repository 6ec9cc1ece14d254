//! Every file under `deploy/` is parsed, and checked against the code it configures: the
//! regcache configurations through `Config::from_toml_str`, the Kubernetes objects and the
//! Containerfile against those configurations (ports, paths, users, drain time), the Grafana
//! dashboard's queries and the alerting rules against the metrics `src/metrics.rs` defines, the
//! client examples against
//! the built-in upstreams, the cluster's nginx balancers against its replicas, and the systemd
//! unit with `systemd-analyze verify`. A new kind of file under `deploy/` fails
//! `every_deploy_file_is_checked` until it gets a check here.

mod alerts;
mod balancer;
mod clients;
mod cluster;
mod containerfile;
mod grafana;
mod kubernetes;
mod systemd;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use regcache::config::Config;
use serde::Deserialize;
use serde_yaml::Value as Yaml;

/// The mirror address the client examples point at.
const MIRROR: &str = "regcache.internal:5000";

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    let path = repo().join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// Every file under `deploy/`, as paths relative to the repository, sorted.
fn deploy_files() -> Vec<String> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, out);
            } else {
                out.push(path);
            }
        }
    }
    let mut files = Vec::new();
    walk(&repo().join("deploy"), &mut files);
    let mut rel: Vec<String> = files
        .iter()
        .map(|p| p.strip_prefix(repo()).unwrap().to_string_lossy().into_owned())
        .collect();
    rel.sort();
    rel
}

fn parse_json(rel: &str) -> serde_json::Value {
    serde_json::from_str(&read(rel)).unwrap_or_else(|e| panic!("{rel}: invalid JSON: {e}"))
}

fn parse_toml(rel: &str) -> toml::Table {
    read(rel)
        .parse::<toml::Table>()
        .unwrap_or_else(|e| panic!("{rel}: invalid TOML: {e}"))
}

/// Every document of a (possibly multi-document) YAML text, empty documents left out.
fn yaml_documents(what: &str, text: &str) -> Vec<Yaml> {
    serde_yaml::Deserializer::from_str(text)
        .map(|doc| Yaml::deserialize(doc).unwrap_or_else(|e| panic!("{what}: invalid YAML: {e}")))
        .filter(|doc| !doc.is_null())
        .collect()
}

fn seq(v: &Yaml) -> &[Yaml] {
    v.as_sequence().map(Vec::as_slice).unwrap_or(&[])
}

fn regcache_config(what: &str, text: &str) -> Config {
    Config::from_toml_str(text).unwrap_or_else(|e| panic!("{what} is not a valid regcache config:\n{e}"))
}

#[test]
fn every_deploy_file_is_checked() {
    let files = deploy_files();
    assert!(files.len() >= 10, "deploy/ looks empty: {files:?}");
    for rel in &files {
        let name = rel.rsplit('/').next().unwrap();
        if name.ends_with(".json") {
            parse_json(rel);
        } else if name.ends_with(".toml") || name == "registries.conf" {
            parse_toml(rel);
            if name == "regcache.toml" && rel.starts_with("deploy/cluster/") {
                cluster::replica_config(rel, &read(rel));
            } else if name == "regcache.toml" {
                regcache_config(rel, &read(rel));
            }
        } else if name.ends_with(".yaml") || name.ends_with(".yml") {
            let docs = yaml_documents(rel, &read(rel));
            assert!(!docs.is_empty(), "{rel}: no YAML documents");
            if rel.starts_with("deploy/kubernetes/") || rel.starts_with("deploy/cluster/kubernetes/") {
                for doc in &docs {
                    let kind = doc["kind"].as_str();
                    assert!(
                        doc["apiVersion"].as_str().is_some(),
                        "{rel}: an object without apiVersion"
                    );
                    assert!(kind.is_some(), "{rel}: an object without kind");
                    if kind != Some("Kustomization") {
                        assert!(
                            doc["metadata"]["name"].as_str().is_some_and(|n| !n.is_empty()),
                            "{rel}: a {kind:?} without metadata.name"
                        );
                    }
                }
            }
        } else if name == "nginx.conf" {
            assert!(
                balancer::BALANCERS.iter().any(|(conf, _)| conf == rel),
                "balancers_hash_by_uri_and_stream checks only {:?}",
                balancer::BALANCERS
            );
        } else if name.ends_with(".service") {
            assert!(read(rel).contains("[Service]"), "{rel}: no [Service] section");
            assert_eq!(
                rel, "deploy/regcache.service",
                "systemd_unit_verifies checks only that unit"
            );
        } else if name == "Containerfile" {
            assert_eq!(
                rel, "deploy/Containerfile",
                "containerfile_* checks only that file"
            );
        } else if name.ends_with(".md") {
            // Documentation.
        } else {
            panic!("{rel}: no check for this kind of file; add one to tests/it/deploy_files.rs");
        }
    }
}

// ---- regcache configurations ----------------------------------------------------------------

fn container_config() -> Config {
    regcache_config(
        "deploy/container/regcache.toml",
        &read("deploy/container/regcache.toml"),
    )
}

#[test]
fn container_config_is_valid() {
    let c = container_config();
    assert_eq!(c.listen, "0.0.0.0:5000".parse::<SocketAddr>().unwrap());
    assert_eq!(c.admin_listen, "0.0.0.0:5001".parse::<SocketAddr>().unwrap());
    assert_eq!(c.cache.dir, Path::new("/var/lib/regcache"));
}
