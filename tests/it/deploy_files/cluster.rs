//! deploy/cluster: regcache replicas sharing an S3-compatible bucket behind nginx hashing the
//! digest. The replica configurations are valid and their `[storage]` table holds the
//! documented keys; the Kubernetes objects fit together: the balancer's upstream names every
//! StatefulSet pod under the headless Service, on the port the replicas listen on.

use std::collections::{BTreeMap, BTreeSet};

use regcache::config::{Config, StorageConfig};
use serde_yaml::Value as Yaml;

use super::balancer::{listen_port, upstream_servers};
use super::containerfile::containerfile_config_path;
use super::kubernetes::{
    check_ports_and_probes, check_scrape_annotations, check_security, container_image, has_str,
    labels_contain, name, objects_of_kind, resolve_port, target_ports,
};
use super::{read, regcache_config, seq, yaml_documents};

pub(super) const VM_REPLICA: &str = "deploy/cluster/regcache.toml";
pub(super) const VM_BALANCER: &str = "deploy/cluster/nginx.conf";
const K8S: &str = "deploy/cluster/kubernetes";

/// A replica's configuration (and its raw `[storage]` table), read by `Config` (its secret file, which exists only where it is
/// deployed, stood in for by a temporary one): its `[storage]` is an S3 bucket, its local tier
/// is bounded, and its admin listener is reachable by probes.
pub(super) fn replica_config(what: &str, text: &str) -> (Config, toml::Table) {
    let mut table: toml::Table = text
        .parse()
        .unwrap_or_else(|e| panic!("{what}: invalid TOML: {e}"));
    let raw = match table.get("storage") {
        Some(toml::Value::Table(t)) => t.clone(),
        other => panic!("{what}: no [storage] table: {other:?}"),
    };
    let secret = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(secret.path(), "secret").unwrap();
    if let Some(toml::Value::Table(storage)) = table.get_mut("storage") {
        if storage.contains_key("secret_access_key_file") {
            let path = secret.path().display().to_string();
            storage.insert("secret_access_key_file".into(), path.into());
        }
    }
    let config = regcache_config(what, &toml::to_string(&table).unwrap());
    let StorageConfig::S3(s3) = config.storage.clone() else {
        panic!("{what}: [storage] is no S3 bucket")
    };
    assert!(!s3.bucket.is_empty(), "{what}: [storage] bucket");
    assert!(
        config.cache.max_size.is_some(),
        "{what}: the local tier has a max_size"
    );
    assert!(
        !config.admin_listen.ip().is_loopback(),
        "{what}: admin reachable for probes"
    );
    (config, raw)
}

#[test]
fn cluster_replica_configs_are_valid() {
    for rel in [VM_REPLICA, &format!("{K8S}/regcache.toml")] {
        let (config, _) = replica_config(rel, &read(rel));
        assert_eq!(config.listen.port(), 5000, "{rel}");
        assert_eq!(config.admin_listen.port(), 5001, "{rel}");
    }
}

fn one<'a>(docs: &'a [Yaml], kind: &str) -> &'a Yaml {
    let found = objects_of_kind(docs, kind);
    assert_eq!(found.len(), 1, "exactly one {kind}");
    found[0]
}

fn service<'a>(docs: &'a [Yaml], wanted: &str) -> &'a Yaml {
    objects_of_kind(docs, "Service")
        .into_iter()
        .find(|s| name(s) == wanted)
        .unwrap_or_else(|| panic!("no Service {wanted}"))
}

/// The mount at `path` in container `c`.
fn mounted_at<'a>(c: &'a Yaml, path: &str) -> &'a Yaml {
    seq(&c["volumeMounts"])
        .iter()
        .find(|m| m["mountPath"].as_str() == Some(path))
        .unwrap_or_else(|| panic!("nothing is mounted at {path}"))
}

fn volume<'a>(pod: &'a Yaml, mount: &Yaml) -> &'a Yaml {
    let wanted = mount["name"].as_str();
    seq(&pod["volumes"])
        .iter()
        .find(|v| v["name"].as_str() == wanted)
        .unwrap_or_else(|| panic!("no volume {wanted:?}"))
}

#[test]
fn cluster_manifests_fit_together() {
    let kustomization =
        yaml_documents("kustomization.yaml", &read(&format!("{K8S}/kustomization.yaml"))).swap_remove(0);
    let ns = kustomization["namespace"].as_str().expect("namespace");
    let mut docs = Vec::new();
    for res in seq(&kustomization["resources"]) {
        let rel = format!("{K8S}/{}", res.as_str().unwrap());
        docs.extend(yaml_documents(&rel, &read(&rel)));
    }
    let generated: BTreeMap<&str, Vec<&str>> = seq(&kustomization["configMapGenerator"])
        .iter()
        .map(|g| {
            (
                g["name"].as_str().unwrap(),
                seq(&g["files"]).iter().map(|f| f.as_str().unwrap()).collect(),
            )
        })
        .collect();
    let (config, storage) = replica_config("regcache.toml", &read(&format!("{K8S}/regcache.toml")));

    // The replicas: a StatefulSet under a headless Service.
    let sts = one(&docs, "StatefulSet");
    let replicas = sts["spec"]["replicas"].as_u64().expect("replicas");
    let headless_name = sts["spec"]["serviceName"].as_str().expect("serviceName");
    let headless = service(&docs, headless_name);
    assert_eq!(
        headless["spec"]["clusterIP"].as_str(),
        Some("None"),
        "{headless_name} is headless"
    );
    let template = &sts["spec"]["template"];
    assert!(labels_contain(
        &template["metadata"]["labels"],
        &sts["spec"]["selector"]["matchLabels"]
    ));
    assert!(labels_contain(
        &template["metadata"]["labels"],
        &headless["spec"]["selector"]
    ));
    let pod = &template["spec"];
    let c = &seq(&pod["containers"])[0];
    let image = container_image(&kustomization, c);
    check_security(pod, c);
    check_ports_and_probes(c, &config);
    let grace = pod["terminationGracePeriodSeconds"]
        .as_u64()
        .expect("terminationGracePeriodSeconds");
    assert!(
        grace >= config.shutdown_grace.as_secs() + 5,
        "grace {grace} vs shutdown_grace"
    );
    check_scrape_annotations(template, &config);

    // Its volumes: the configuration where the image reads it, the local tier on a per-pod claim,
    // the secret key where [storage] names it.
    let config_path = containerfile_config_path();
    let (config_dir, config_file) = config_path.rsplit_once('/').unwrap();
    let conf = volume(pod, mounted_at(c, config_dir));
    let conf_map = conf["configMap"]["name"].as_str().unwrap();
    assert!(
        generated.get(conf_map).is_some_and(|f| f.contains(&config_file)),
        "{conf_map}"
    );
    let data = mounted_at(c, &config.cache.dir.to_string_lossy())["name"]
        .as_str()
        .unwrap();
    let claim = seq(&sts["spec"]["volumeClaimTemplates"])
        .iter()
        .find(|t| t["metadata"]["name"].as_str() == Some(data))
        .unwrap_or_else(|| panic!("no volumeClaimTemplate {data}"));
    assert!(has_str(&claim["spec"]["accessModes"], "ReadWriteOnce"));
    let key_path = storage["secret_access_key_file"].as_str().unwrap();
    let (key_dir, key_file) = key_path.rsplit_once('/').unwrap();
    let secret = &volume(pod, mounted_at(c, key_dir))["secret"];
    assert!(secret["secretName"].as_str().is_some());
    assert!(
        seq(&secret["items"])
            .iter()
            .any(|i| i["path"].as_str() == Some(key_file)),
        "{key_path}"
    );

    // The balancer: its nginx.conf names every pod, on the replicas' port.
    let balancer = one(&docs, "Deployment");
    let bpod = &balancer["spec"]["template"]["spec"];
    let nginx = &seq(&bpod["containers"])[0];
    let csc = &nginx["securityContext"];
    assert_eq!(csc["readOnlyRootFilesystem"].as_bool(), Some(true));
    assert!(has_str(&csc["capabilities"]["drop"], "ALL"));
    let command: Vec<&str> = seq(&nginx["command"])
        .iter()
        .map(|w| w.as_str().unwrap())
        .collect();
    let conf_arg = command
        .iter()
        .position(|w| *w == "-c")
        .map(|i| command[i + 1])
        .expect("nginx -c");
    let (nginx_dir, nginx_file) = conf_arg.rsplit_once('/').unwrap();
    let nginx_map = volume(bpod, mounted_at(nginx, nginx_dir))["configMap"]["name"]
        .as_str()
        .unwrap();
    assert!(
        generated.get(nginx_map).is_some_and(|f| f.contains(&nginx_file)),
        "{nginx_map}"
    );
    let nginx_conf = read(&format!("{K8S}/{nginx_file}"));
    let servers: BTreeSet<String> = upstream_servers(&nginx_conf)
        .into_iter()
        .map(|s| s[1].clone())
        .collect();
    let pods: BTreeSet<String> = (0..replicas)
        .map(|i| {
            format!(
                "{}-{i}.{headless_name}.{ns}.svc.cluster.local:{}",
                name(sts),
                config.listen.port()
            )
        })
        .collect();
    assert_eq!(servers, pods, "nginx.conf's upstream and the StatefulSet's pods");

    // The Service clients use: the balancer's pods only, pulls only.
    let front = service(&docs, "regcache");
    let btemplate = &balancer["spec"]["template"];
    assert!(labels_contain(
        &btemplate["metadata"]["labels"],
        &front["spec"]["selector"]
    ));
    assert!(!labels_contain(
        &template["metadata"]["labels"],
        &front["spec"]["selector"]
    ));
    let targets = target_ports(front, nginx);
    assert_eq!(targets.get(&5000), Some(&listen_port(&nginx_conf)), "{targets:?}");
    for p in seq(&headless["spec"]["ports"]) {
        assert_ne!(
            resolve_port(c, &p["targetPort"]),
            config.admin_listen.port(),
            "admin published"
        );
    }

    // The bucket's collector: the replicas' configuration and secret, `regcache bucket gc`.
    let cron = one(&docs, "CronJob");
    assert_eq!(cron["spec"]["concurrencyPolicy"].as_str(), Some("Forbid"));
    let job = &cron["spec"]["jobTemplate"]["spec"]["template"]["spec"];
    let gc = &seq(&job["containers"])[0];
    assert_eq!(gc["image"].as_str(), Some(image));
    let command: Vec<&str> = seq(&gc["command"]).iter().map(|a| a.as_str().unwrap()).collect();
    assert_eq!(command[1..3], ["bucket", "gc"], "{command:?}");
    assert!(command.contains(&config_path.as_str()), "{command:?}");
    assert!(
        storage.contains_key("max_size"),
        "the bucket has a budget to enforce"
    );
    assert_eq!(
        volume(job, mounted_at(gc, config_dir))["configMap"],
        conf["configMap"]
    );
    assert_eq!(&volume(job, mounted_at(gc, key_dir))["secret"], secret);
}
