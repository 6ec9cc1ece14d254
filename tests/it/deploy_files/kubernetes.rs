//! deploy/kubernetes: the kustomization's objects fit together and fit the configuration they
//! carry and the image they run (ports, probes, volumes, user, drain time).

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

use regcache::config::Config;
use serde_yaml::Value as Yaml;

use super::containerfile::{containerfile_config_path, containerfile_uid};
use super::{read, regcache_config, repo, seq, yaml_documents};
use crate::support::tools;

pub(super) fn objects_of_kind<'a>(docs: &'a [Yaml], kind: &str) -> Vec<&'a Yaml> {
    docs.iter().filter(|d| d["kind"].as_str() == Some(kind)).collect()
}

fn one_of_kind<'a>(docs: &'a [Yaml], kind: &str) -> &'a Yaml {
    let found = objects_of_kind(docs, kind);
    assert_eq!(found.len(), 1, "exactly one {kind}");
    found[0]
}

pub(super) fn name(obj: &Yaml) -> &str {
    obj["metadata"]["name"].as_str().unwrap()
}

pub(super) fn has_str(list: &Yaml, s: &str) -> bool {
    seq(list).iter().any(|v| v.as_str() == Some(s))
}

/// A port given by number or by the container port's name.
pub(super) fn resolve_port(container: &Yaml, port: &Yaml) -> u16 {
    if let Some(n) = port.as_u64() {
        return n as u16;
    }
    let wanted = port.as_str().expect("a port is a number or a name");
    seq(&container["ports"])
        .iter()
        .find(|p| p["name"].as_str() == Some(wanted))
        .and_then(|p| p["containerPort"].as_u64())
        .unwrap_or_else(|| panic!("no container port named {wanted}")) as u16
}

/// A Service's ports: published port -> the container port it reaches in `container`.
pub(super) fn target_ports(service: &Yaml, container: &Yaml) -> BTreeMap<u64, u16> {
    seq(&service["spec"]["ports"])
        .iter()
        .map(|p| {
            (
                p["port"].as_u64().unwrap(),
                resolve_port(container, &p["targetPort"]),
            )
        })
        .collect()
}

pub(super) fn labels_contain(labels: &Yaml, selector: &Yaml) -> bool {
    let selector = selector.as_mapping().expect("a label selector");
    !selector.is_empty() && selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

#[test]
fn kubernetes_manifests_fit_together() {
    let (kustomization, docs) = kustomized_objects();

    // The ConfigMap's embedded configuration is a valid regcache config.
    let config_map = one_of_kind(&docs, "ConfigMap");
    let toml_text = config_map["data"]["regcache.toml"]
        .as_str()
        .expect("the ConfigMap has a regcache.toml key");
    assert!(
        toml_text.contains("[cache]"),
        "the ConfigMap's config has a [cache] section"
    );
    let config = regcache_config("the ConfigMap's regcache.toml", toml_text);
    assert!(
        !config.admin_listen.ip().is_loopback(),
        "probes and Prometheus reach the admin port on the pod IP: {}",
        config.admin_listen
    );

    let pvc = one_of_kind(&docs, "PersistentVolumeClaim");
    assert!(has_str(&pvc["spec"]["accessModes"], "ReadWriteOnce"));
    assert!(pvc["spec"]["resources"]["requests"]["storage"].as_str().is_some());

    let deployment = one_of_kind(&docs, "Deployment");
    let spec = &deployment["spec"];
    assert_eq!(spec["replicas"].as_u64(), Some(1));
    assert_eq!(
        spec["strategy"]["type"].as_str(),
        Some("Recreate"),
        "a ReadWriteOnce volume cannot be attached to the old and the new pod at once"
    );
    let template = &spec["template"];
    assert!(labels_contain(
        &template["metadata"]["labels"],
        &spec["selector"]["matchLabels"]
    ));
    let pod = &template["spec"];
    let grace = pod["terminationGracePeriodSeconds"]
        .as_u64()
        .expect("terminationGracePeriodSeconds");
    // The whole shutdown takes shutdown_grace and about a second more; leave room beyond that.
    assert!(
        grace >= config.shutdown_grace.as_secs() + 5,
        "terminationGracePeriodSeconds {grace} must exceed shutdown_grace {:?} by 5 s or more",
        config.shutdown_grace
    );
    let containers = seq(&pod["containers"]);
    assert_eq!(containers.len(), 1);
    let c = &containers[0];
    container_image(&kustomization, c);
    check_security(pod, c);
    check_ports_and_probes(c, &config);
    check_volumes(pod, c, &config, pvc, config_map);
    check_service(&docs, template, c, &config);
}

/// `kustomization.yaml` and every object of its resources, all in its namespace.
fn kustomized_objects() -> (Yaml, Vec<Yaml>) {
    let kustomization = yaml_documents(
        "kustomization.yaml",
        &read("deploy/kubernetes/kustomization.yaml"),
    )
    .swap_remove(0);
    assert_eq!(kustomization["kind"].as_str(), Some("Kustomization"));
    let namespace = kustomization["namespace"].as_str();
    let mut docs = Vec::new();
    for res in seq(&kustomization["resources"]) {
        let res = res.as_str().unwrap();
        let rel = format!("deploy/kubernetes/{res}");
        docs.extend(yaml_documents(&rel, &read(&rel)));
    }
    for doc in &docs {
        if doc["kind"].as_str() != Some("Namespace") {
            let ns = doc["metadata"]["namespace"].as_str();
            assert!(
                ns.is_none() || ns == namespace,
                "{} is in namespace {ns:?}",
                name(doc)
            );
        }
    }
    (kustomization, docs)
}

/// Security: non-root (the image's user), read-only root, no capabilities; and resources set.
pub(super) fn check_security(pod: &Yaml, c: &Yaml) {
    let psc = &pod["securityContext"];
    let csc = &c["securityContext"];
    assert!(psc["runAsNonRoot"].as_bool() == Some(true) || csc["runAsNonRoot"].as_bool() == Some(true));
    assert_eq!(csc["readOnlyRootFilesystem"].as_bool(), Some(true));
    assert_eq!(csc["allowPrivilegeEscalation"].as_bool(), Some(false));
    assert!(has_str(&csc["capabilities"]["drop"], "ALL"));
    let uid = csc["runAsUser"].as_u64().or(psc["runAsUser"].as_u64());
    assert_eq!(uid, Some(containerfile_uid()), "runAsUser is the image's user");
    for kind in ["requests", "limits"] {
        for res in ["cpu", "memory"] {
            assert!(!c["resources"][kind][res].is_null(), "resources.{kind}.{res}");
        }
    }
}

/// Ports and probes match the configuration.
pub(super) fn check_ports_and_probes(c: &Yaml, config: &Config) {
    let ports: BTreeSet<u16> = seq(&c["ports"])
        .iter()
        .map(|p| p["containerPort"].as_u64().unwrap() as u16)
        .collect();
    assert!(ports.contains(&config.listen.port()), "{ports:?}");
    assert!(ports.contains(&config.admin_listen.port()), "{ports:?}");
    for (probe, path) in [("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")] {
        let get = &c[probe]["httpGet"];
        assert_eq!(get["path"].as_str(), Some(path), "{probe}");
        assert_eq!(
            resolve_port(c, &get["port"]),
            config.admin_listen.port(),
            "{probe}"
        );
    }
}

/// Volumes: the cache on the claim, the config where the image's ENTRYPOINT reads it.
fn check_volumes(pod: &Yaml, c: &Yaml, config: &Config, pvc: &Yaml, config_map: &Yaml) {
    let volumes: BTreeMap<&str, &Yaml> = seq(&pod["volumes"])
        .iter()
        .map(|v| (v["name"].as_str().unwrap(), v))
        .collect();
    let mount_of = |path: &str| {
        let m = seq(&c["volumeMounts"])
            .iter()
            .find(|m| m["mountPath"].as_str() == Some(path))
            .unwrap_or_else(|| panic!("nothing is mounted at {path}"));
        volumes[m["name"].as_str().unwrap()]
    };
    let data = mount_of(&config.cache.dir.to_string_lossy());
    assert_eq!(
        data["persistentVolumeClaim"]["claimName"].as_str(),
        Some(name(pvc))
    );
    let config_path = containerfile_config_path();
    let (config_dir, config_file) = config_path.rsplit_once('/').unwrap();
    let conf = mount_of(config_dir);
    assert_eq!(conf["configMap"]["name"].as_str(), Some(name(config_map)));
    assert!(
        !config_map["data"][config_file].is_null(),
        "the ConfigMap has {config_file}"
    );
}

/// The Service: pulls only. The admin port stays on the pod, where Prometheus finds it through
/// the pod template's scrape annotations.
fn check_service(docs: &[Yaml], template: &Yaml, c: &Yaml, config: &Config) {
    let service = one_of_kind(docs, "Service");
    assert!(labels_contain(
        &template["metadata"]["labels"],
        &service["spec"]["selector"]
    ));
    let targets = target_ports(service, c);
    assert_eq!(targets.get(&5000), Some(&config.listen.port()), "{targets:?}");
    assert!(
        !targets.values().any(|t| *t == config.admin_listen.port()),
        "the Service publishes the admin port cluster-wide: {targets:?}"
    );
    check_scrape_annotations(template, config);
}

/// Prometheus scrapes the pod's admin port at `/metrics`.
pub(super) fn check_scrape_annotations(template: &Yaml, config: &Config) {
    let annotations = &template["metadata"]["annotations"];
    assert_eq!(annotations["prometheus.io/scrape"].as_str(), Some("true"));
    assert_eq!(
        annotations["prometheus.io/port"].as_str(),
        Some(&*config.admin_listen.port().to_string())
    );
    assert_eq!(annotations["prometheus.io/path"].as_str(), Some("/metrics"));
}

/// `kubectl kustomize` (kustomize built into kubectl; no cluster needed) renders the directory.
/// Optional: CI does not install kubectl, and the test above checks the same files.
#[test]
fn kustomize_renders_when_kubectl_is_present() {
    let Some(kubectl) = tools::find("kubectl") else {
        eprintln!("kustomize_renders_when_kubectl_is_present: kubectl not on PATH, not rendered");
        return;
    };
    let out = Command::new(kubectl)
        .arg("kustomize")
        .arg(repo().join("deploy/kubernetes"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "kubectl kustomize failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let docs = yaml_documents("kubectl kustomize output", &stdout);
    let deployment = one_of_kind(&docs, "Deployment");
    let image = deployment["spec"]["template"]["spec"]["containers"][0]["image"]
        .as_str()
        .unwrap();
    assert!(
        image.contains('/') && image.contains(':'),
        "images: applied: {image}"
    );
}

/// The image of container `c`, which the kustomization's `images` sets.
pub(super) fn container_image<'a>(kustomization: &Yaml, c: &'a Yaml) -> &'a str {
    let image = c["image"].as_str().unwrap();
    assert!(
        seq(&kustomization["images"])
            .iter()
            .any(|i| i["name"].as_str() == Some(image)),
        "kustomization.yaml images: sets the container image {image}"
    );
    image
}
