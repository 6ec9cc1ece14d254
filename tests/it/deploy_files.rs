//! Every file under `deploy/` is parsed, and checked against the code it configures: the
//! regcache configurations through `Config::from_toml_str`, the Kubernetes objects and the
//! Containerfile against those configurations (ports, paths, users, drain time), the Grafana
//! dashboard's queries against the metrics `src/metrics.rs` defines, the client examples against
//! the built-in upstreams, and the systemd unit with `systemd-analyze verify`. A new kind of file
//! under `deploy/` fails `every_deploy_file_is_checked` until it gets a check here.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use promql_parser::parser::{self, Expr, VectorSelector};
use promql_parser::util::{walk_expr, ExprVisitor};
use regcache::config::{Config, BUILTIN_UPSTREAMS};
use serde::Deserialize;
use serde_yaml::Value as Yaml;

use crate::support::tools;

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
            if name == "regcache.toml" {
                regcache_config(rel, &read(rel));
            }
        } else if name.ends_with(".yaml") || name.ends_with(".yml") {
            let docs = yaml_documents(rel, &read(rel));
            assert!(!docs.is_empty(), "{rel}: no YAML documents");
            if rel.starts_with("deploy/kubernetes/") {
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

// ---- Containerfile --------------------------------------------------------------------------

/// The Containerfile's instructions, continuation lines joined and comments dropped:
/// (upper-case instruction, arguments).
fn containerfile() -> Vec<(String, String)> {
    let text = read("deploy/Containerfile");
    let mut out = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('#') || (trimmed.is_empty() && current.is_empty()) {
            continue;
        }
        match trimmed.strip_suffix('\\') {
            Some(part) => {
                current.push_str(part);
                current.push(' ');
            }
            None => {
                current.push_str(trimmed);
                let (instr, args) = current.split_once(char::is_whitespace).unwrap_or((&current, ""));
                out.push((instr.to_ascii_uppercase(), args.trim().to_string()));
                current.clear();
            }
        }
    }
    assert!(current.is_empty(), "Containerfile ends in a continuation line");
    out
}

fn instruction_args<'a>(instrs: &'a [(String, String)], name: &str) -> Vec<&'a str> {
    instrs
        .iter()
        .filter(|(i, _)| i == name)
        .map(|(_, a)| a.as_str())
        .collect()
}

/// The ENTRYPOINT, which must be in exec form (a JSON array) so regcache gets SIGTERM itself.
fn containerfile_entrypoint() -> Vec<String> {
    let instrs = containerfile();
    let entry = instruction_args(&instrs, "ENTRYPOINT");
    assert_eq!(entry.len(), 1, "exactly one ENTRYPOINT: {entry:?}");
    serde_json::from_str(entry[0])
        .unwrap_or_else(|e| panic!("ENTRYPOINT is not in exec (JSON array) form: {e}: {}", entry[0]))
}

/// The configuration path the image's ENTRYPOINT passes to `regcache serve --config`.
fn containerfile_config_path() -> String {
    let entry = containerfile_entrypoint();
    let at = entry
        .iter()
        .position(|a| a == "--config")
        .expect("ENTRYPOINT passes --config");
    entry[at + 1].clone()
}

/// The image's numeric user id (`USER uid[:gid]`).
fn containerfile_uid() -> u64 {
    let instrs = containerfile();
    let user = instruction_args(&instrs, "USER");
    let last = user.last().expect("the image sets a USER");
    last.split(':')
        .next()
        .unwrap()
        .parse()
        .unwrap_or_else(|_| panic!("USER {last} is not numeric; runAsNonRoot needs a numeric uid"))
}

#[test]
fn containerfile_builds_and_runs_the_shipped_config() {
    let instrs = containerfile();
    let froms = instruction_args(&instrs, "FROM");
    assert!(froms.len() >= 2, "a multi-stage build: {froms:?}");
    assert!(
        froms[0].starts_with("rust:") && froms[0].contains(" AS "),
        "the first stage builds with a rust image: {}",
        froms[0]
    );
    let runtime = froms.last().unwrap();
    assert!(
        runtime.starts_with("debian:bookworm-slim") || runtime.starts_with("gcr.io/distroless/cc-debian12"),
        "small runtime image: {runtime}"
    );
    let runs = instruction_args(&instrs, "RUN").join("\n");
    assert!(runs.contains("cargo build --release --locked"), "{runs}");
    if runtime.starts_with("debian") {
        assert!(
            runs.contains("ca-certificates"),
            "the runtime needs the system CA roots"
        );
    }

    // Every COPY from the build context names something that exists, and the shipped config is
    // what ENTRYPOINT reads.
    let config_path = containerfile_config_path();
    let mut config_copied = false;
    for args in instruction_args(&instrs, "COPY") {
        if args.starts_with("--from") {
            continue;
        }
        let words: Vec<&str> = args.split_whitespace().filter(|w| !w.starts_with("--")).collect();
        let (dest, sources) = words.split_last().unwrap();
        for src in sources {
            assert!(repo().join(src).exists(), "COPY {src}: not in the repository");
            if *src == "deploy/container/regcache.toml" && *dest == config_path {
                config_copied = true;
            }
        }
    }
    assert!(
        config_copied,
        "deploy/container/regcache.toml is copied to {config_path}, the path ENTRYPOINT uses"
    );
    let entry = containerfile_entrypoint();
    assert!(
        entry[0].ends_with("/regcache") && entry[1] == "serve",
        "{entry:?}"
    );

    let config = container_config();
    let exposed: BTreeSet<u16> = instruction_args(&instrs, "EXPOSE")
        .iter()
        .flat_map(|a| a.split_whitespace())
        .map(|p| p.trim_end_matches("/tcp").parse().unwrap())
        .collect();
    assert!(exposed.contains(&config.listen.port()), "EXPOSE {exposed:?}");
    assert!(
        exposed.contains(&config.admin_listen.port()),
        "EXPOSE {exposed:?}"
    );
    let volumes = instruction_args(&instrs, "VOLUME").join(" ");
    assert!(
        volumes.contains(&*config.cache.dir.to_string_lossy()),
        "the cache dir is a VOLUME: {volumes}"
    );
    assert_ne!(containerfile_uid(), 0, "the image runs as a non-root user");
    assert_eq!(instruction_args(&instrs, "STOPSIGNAL"), ["SIGTERM"]);
}

// ---- Kubernetes -----------------------------------------------------------------------------

fn objects_of_kind<'a>(docs: &'a [Yaml], kind: &str) -> Vec<&'a Yaml> {
    docs.iter().filter(|d| d["kind"].as_str() == Some(kind)).collect()
}

fn one_of_kind<'a>(docs: &'a [Yaml], kind: &str) -> &'a Yaml {
    let found = objects_of_kind(docs, kind);
    assert_eq!(found.len(), 1, "exactly one {kind}");
    found[0]
}

fn name(obj: &Yaml) -> &str {
    obj["metadata"]["name"].as_str().unwrap()
}

fn seq(v: &Yaml) -> &[Yaml] {
    v.as_sequence().map(Vec::as_slice).unwrap_or(&[])
}

fn has_str(list: &Yaml, s: &str) -> bool {
    seq(list).iter().any(|v| v.as_str() == Some(s))
}

/// A port given by number or by the container port's name.
fn resolve_port(container: &Yaml, port: &Yaml) -> u16 {
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

fn labels_contain(labels: &Yaml, selector: &Yaml) -> bool {
    let selector = selector.as_mapping().expect("a label selector");
    !selector.is_empty() && selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

#[test]
fn kubernetes_manifests_fit_together() {
    let kustomization = &yaml_documents(
        "kustomization.yaml",
        &read("deploy/kubernetes/kustomization.yaml"),
    )[0];
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
    assert!(
        grace > config.shutdown_grace.as_secs(),
        "terminationGracePeriodSeconds {grace} must exceed shutdown_grace {:?}",
        config.shutdown_grace
    );
    let containers = seq(&pod["containers"]);
    assert_eq!(containers.len(), 1);
    let c = &containers[0];
    let image = c["image"].as_str().unwrap();
    assert!(
        seq(&kustomization["images"])
            .iter()
            .any(|i| i["name"].as_str() == Some(image)),
        "kustomization.yaml images: sets the container image {image}"
    );

    // Security: non-root (the image's user), read-only root, no capabilities.
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

    // Ports and probes match the configuration.
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

    // Volumes: the cache on the claim, the config where the image's ENTRYPOINT reads it.
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

    // The Service: pulls and metrics, with scrape annotations.
    let service = one_of_kind(&docs, "Service");
    assert!(labels_contain(
        &template["metadata"]["labels"],
        &service["spec"]["selector"]
    ));
    let targets: BTreeMap<u64, u16> = seq(&service["spec"]["ports"])
        .iter()
        .map(|p| (p["port"].as_u64().unwrap(), resolve_port(c, &p["targetPort"])))
        .collect();
    assert_eq!(targets.get(&5000), Some(&config.listen.port()), "{targets:?}");
    assert_eq!(
        targets.get(&5001),
        Some(&config.admin_listen.port()),
        "{targets:?}"
    );
    let annotations = &service["metadata"]["annotations"];
    assert_eq!(annotations["prometheus.io/scrape"].as_str(), Some("true"));
    assert_eq!(annotations["prometheus.io/port"].as_str(), Some("5001"));
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

// ---- Grafana dashboard ----------------------------------------------------------------------

/// Every series name `src/metrics.rs` exports, with its labels (histograms as their `_bucket`,
/// `_sum` and `_count` series).
fn exported_series() -> BTreeMap<String, BTreeSet<String>> {
    let src = read("src/metrics.rs");
    let starts: Vec<usize> = src.match_indices("\"regcache_").map(|(i, _)| i).collect();
    let mut series = BTreeMap::new();
    for (n, &start) in starts.iter().enumerate() {
        let end = starts.get(n + 1).copied().unwrap_or(src.len());
        let segment = &src[start + 1..end];
        let name = &segment[..segment.find('"').unwrap()];
        // The label list, if any, follows the name (and help) before the next metric's name.
        let labels: BTreeSet<String> = match segment.find("&[\"") {
            Some(at) => {
                let list = &segment[at + 2..];
                list[..list.find(']').unwrap()]
                    .split(',')
                    .map(|l| l.trim().trim_matches('"').to_string())
                    .filter(|l| !l.is_empty())
                    .collect()
            }
            None => BTreeSet::new(),
        };
        let histogram = src[start.saturating_sub(120)..start].contains("HistogramOpts::new(");
        if histogram {
            let mut with_le = labels.clone();
            with_le.insert("le".to_string());
            series.insert(format!("{name}_bucket"), with_le);
            series.insert(format!("{name}_sum"), labels.clone());
            series.insert(format!("{name}_count"), labels);
        } else {
            series.insert(name.to_string(), labels);
        }
    }
    assert!(
        series.len() >= 15,
        "src/metrics.rs was not understood: {series:?}"
    );
    assert!(series.contains_key("regcache_request_duration_seconds_bucket"));
    assert_eq!(
        series["regcache_requests_total"],
        ["kind", "result", "upstream"].map(String::from).into()
    );
    series
}

/// Labels Prometheus adds to every scraped series.
const TARGET_LABELS: [&str; 2] = ["instance", "job"];

/// The metric names and labels a query refers to.
#[derive(Default)]
struct QueryRefs {
    selectors: Vec<(String, Vec<String>)>,
    grouping: Vec<String>,
    unnamed: bool,
}

impl QueryRefs {
    fn selector(&mut self, vs: &VectorSelector) {
        let labels = vs
            .matchers
            .matchers
            .iter()
            .chain(vs.matchers.or_matchers.iter().flatten())
            .map(|m| m.name.clone())
            .filter(|n| n != "__name__")
            .collect();
        match &vs.name {
            Some(n) => self.selectors.push((n.clone(), labels)),
            None => self.unnamed = true,
        }
    }
}

impl ExprVisitor for QueryRefs {
    type Error = String;
    fn pre_visit(&mut self, expr: &Expr) -> Result<bool, String> {
        match expr {
            Expr::VectorSelector(vs) => self.selector(vs),
            Expr::MatrixSelector(ms) => self.selector(&ms.vs),
            Expr::Aggregate(a) => {
                if let Some(m) = &a.modifier {
                    self.grouping.extend(m.labels().labels.iter().cloned());
                }
            }
            _ => {}
        }
        Ok(true)
    }
}

/// Replaces Grafana's variables with values PromQL accepts: range variables with a duration,
/// dashboard variables (used in regex matchers) with `.*`.
fn substitute_variables(expr: &str, variables: &BTreeSet<String>) -> String {
    let mut out = String::new();
    let mut rest = expr;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        let (var, len) = match after.strip_prefix('{') {
            Some(braced) => {
                let close = braced.find('}').expect("unclosed ${");
                (&braced[..close], close + 2)
            }
            None => {
                let n = after
                    .find(|ch: char| !(ch.is_ascii_alphanumeric() || ch == '_'))
                    .unwrap_or(after.len());
                (&after[..n], n)
            }
        };
        match var {
            "__rate_interval" | "__interval" | "__range" => out.push_str("5m"),
            v if variables.contains(v) => out.push_str(".*"),
            v => panic!("query {expr:?} uses ${v}, which the dashboard does not define"),
        }
        rest = &after[len..];
    }
    out.push_str(rest);
    out
}

/// Every `targets[].expr` of every panel, rows' nested panels included, with the panel title.
fn dashboard_queries(panels: &serde_json::Value, out: &mut Vec<(String, String)>) {
    for panel in panels.as_array().into_iter().flatten() {
        let title = panel["title"].as_str().unwrap_or("?").to_string();
        let targets = panel["targets"].as_array();
        if let Some(targets) = targets {
            assert_eq!(
                panel["datasource"]["uid"].as_str(),
                Some("${DS_PROMETHEUS}"),
                "panel {title:?} uses the DS_PROMETHEUS input"
            );
            for t in targets {
                let expr = t["expr"]
                    .as_str()
                    .unwrap_or_else(|| panic!("panel {title:?}: a target without expr"));
                out.push((title.clone(), expr.to_string()));
            }
        }
        dashboard_queries(&panel["panels"], out);
    }
}

#[test]
fn grafana_dashboard_queries_only_exported_metrics() {
    let dashboard = parse_json("deploy/grafana-dashboard.json");
    let series = exported_series();
    let inputs = dashboard["__inputs"].as_array().expect("__inputs");
    assert!(
        inputs
            .iter()
            .any(|i| i["name"] == "DS_PROMETHEUS" && i["pluginId"] == "prometheus"),
        "a DS_PROMETHEUS datasource input"
    );

    // Template variables: label_values(<metric>, <label>) over exported series and labels.
    let mut variables = BTreeSet::new();
    for var in dashboard["templating"]["list"].as_array().into_iter().flatten() {
        let name = var["name"].as_str().unwrap();
        variables.insert(name.to_string());
        let query = var["query"]["query"]
            .as_str()
            .or(var["query"].as_str())
            .unwrap_or("");
        if let Some(args) = query
            .strip_prefix("label_values(")
            .and_then(|q| q.strip_suffix(')'))
        {
            let (metric, label) = args.split_once(',').expect("label_values(metric, label)");
            let (metric, label) = (metric.trim(), label.trim());
            let labels = series
                .get(metric)
                .unwrap_or_else(|| panic!("variable {name}: {metric} is not exported"));
            assert!(
                labels.contains(label) || TARGET_LABELS.contains(&label),
                "variable {name}: {metric} has no label {label}"
            );
        }
    }

    let mut queries = Vec::new();
    dashboard_queries(&dashboard["panels"], &mut queries);
    assert!(queries.len() >= 15, "only {} queries", queries.len());
    let mut shown = BTreeSet::new();
    for (title, expr) in &queries {
        let promql = substitute_variables(expr, &variables);
        let ast = parser::parse(&promql)
            .unwrap_or_else(|e| panic!("panel {title:?}: invalid PromQL {promql:?}: {e}"));
        let mut refs = QueryRefs::default();
        walk_expr(&mut refs, &ast).unwrap();
        assert!(
            !refs.unnamed,
            "panel {title:?}: a selector without a metric name: {expr}"
        );
        assert!(!refs.selectors.is_empty(), "panel {title:?}: no metric: {expr}");
        let mut available: BTreeSet<&str> = TARGET_LABELS.into();
        for (metric, labels) in &refs.selectors {
            let known = series
                .get(metric)
                .unwrap_or_else(|| panic!("panel {title:?}: {metric} is not in src/metrics.rs"));
            for l in labels {
                assert!(
                    known.contains(l) || TARGET_LABELS.contains(&l.as_str()),
                    "panel {title:?}: {metric} has no label {l}"
                );
            }
            available.extend(known.iter().map(String::as_str));
            shown.insert(metric.trim_end_matches("_bucket").to_string());
        }
        for l in &refs.grouping {
            assert!(
                available.contains(l.as_str()),
                "panel {title:?}: groups by {l}, which none of its metrics has"
            );
        }
    }

    // Every exported metric is on the dashboard.
    for name in series.keys() {
        let base = name
            .trim_end_matches("_bucket")
            .trim_end_matches("_sum")
            .trim_end_matches("_count");
        assert!(
            shown.contains(name) || shown.contains(base),
            "{name} is exported but not on the dashboard"
        );
    }
}

// ---- client examples ------------------------------------------------------------------------

fn builtin_hosts() -> BTreeSet<&'static str> {
    BUILTIN_UPSTREAMS.iter().map(|(h, _)| *h).collect()
}

#[test]
fn client_examples_point_at_the_mirror() {
    let mirror_url = format!("http://{MIRROR}");
    let known = builtin_hosts();

    // containerd: one directory per registry regcache knows, or _default for all of them.
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
        let host = t["host"][&mirror_url]
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

    // k3s / RKE2 registries.yaml, including the commented "*" wildcard form.
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
        assert_eq!(endpoints, [mirror_url.as_str()], "k3s {host}");
    }

    // CRI-O / podman: the mirror location carries the registry as its first path segment.
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

    // Docker: registry-mirrors.
    let daemon = parse_json("deploy/clients/docker-daemon.json");
    assert_eq!(daemon["registry-mirrors"][0].as_str(), Some(mirror_url.as_str()));
}

// ---- systemd --------------------------------------------------------------------------------

/// The value of every `Key=` line of a unit file.
fn unit_values<'a>(unit: &'a str, key: &str) -> Vec<&'a str> {
    unit.lines()
        .filter_map(|l| l.trim().strip_prefix(key)?.strip_prefix('='))
        .collect()
}

fn systemd_analyze_verify(tool: &Path, unit: &Path) -> (bool, String) {
    let out = Command::new(tool)
        .arg("verify")
        .arg("--man=no")
        .arg(unit)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn systemd_unit_verifies() {
    let unit = read("deploy/regcache.service");

    // The unit agrees with the documented configuration it installs.
    let example = regcache_config("etc/regcache.toml", &read("etc/regcache.toml"));
    let state = unit_values(&unit, "StateDirectory");
    assert_eq!(
        example.cache.dir,
        Path::new("/var/lib").join(state[0]),
        "etc/regcache.toml keeps the cache in the unit's StateDirectory"
    );
    let stop = unit_values(&unit, "TimeoutStopSec")[0];
    let stop = regcache::config::parse_duration(stop)
        .or_else(|_| regcache::config::parse_duration(&format!("{stop}s")))
        .unwrap();
    assert!(
        stop > example.shutdown_grace,
        "TimeoutStopSec {stop:?} must exceed shutdown_grace {:?}",
        example.shutdown_grace
    );
    for exec in unit_values(&unit, "ExecStart")
        .into_iter()
        .chain(unit_values(&unit, "ExecStartPre"))
    {
        assert!(
            exec.starts_with("/usr/local/bin/regcache ")
                && exec.contains("--config /etc/regcache/regcache.toml"),
            "{exec}"
        );
    }

    let Some(tool) = tools::find("systemd-analyze") else {
        tools::missing(
            "systemd_unit_verifies",
            &["systemd-analyze".into()],
            "Install it with: apt-get install -y systemd",
        );
        return;
    };
    // `verify` checks that ExecStart binaries exist: verify a copy that runs the binary this
    // test suite built instead of /usr/local/bin/regcache.
    let bin = env!("CARGO_BIN_EXE_regcache");
    assert!(
        !bin.contains(char::is_whitespace),
        "{bin}: a path systemd would need quoted"
    );
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("regcache.service");
    std::fs::write(&copy, unit.replace("/usr/local/bin/regcache", bin)).unwrap();

    // First make sure verify really checks units here (it needs no running systemd, but an
    // environment where it silently checks nothing must not pass): a bad key must be reported.
    let broken = dir.path().join("regcache-broken.service");
    std::fs::write(
        &broken,
        unit.replace("/usr/local/bin/regcache", bin)
            .replace("[Service]\n", "[Service]\nNoSuchSetting=yes\n"),
    )
    .unwrap();
    let (_, broken_out) = systemd_analyze_verify(&tool, &broken);
    assert!(
        broken_out.contains("NoSuchSetting"),
        "systemd-analyze verify did not report an unknown key, so it cannot check the unit in \
         this environment; it printed:\n{broken_out}"
    );

    let (ok, out) = systemd_analyze_verify(&tool, &copy);
    let about_unit: Vec<&str> = out.lines().filter(|l| l.contains("regcache")).collect();
    assert!(
        ok && about_unit.is_empty(),
        "systemd-analyze verify deploy/regcache.service (ExecStart pointed at {bin}):\n{out}"
    );
    if !out.trim().is_empty() {
        eprintln!("systemd-analyze verify printed (not about regcache.service):\n{out}");
    }
}
