//! The images a set of deployment manifests names, for `regcache prefetch --from-manifests`:
//! Kubernetes YAML or JSON (`kubectl get pods -A -o yaml`, `helm template`, `kustomize build`;
//! containers, init and ephemeral containers alike), Compose files, anything with `image:`
//! keys. The text is scanned, not parsed, so a multi-document stream, a List or a chart's
//! rendered output all work, and a document that does not parse elsewhere costs only its own
//! lines: a YAML `image: <value>` line (in a list item or not, quoted or not, a trailing
//! comment dropped) and a JSON `"image": "<value>"` pair each name an image (a YAML flow
//! mapping, `{image: x}`, is not read). A value that is
//! still a template (`{{ .Values.image }}`, `${TAG}`) is skipped and counted, as are
//! `image:` keys whose value is a nested mapping (a chart's values file). The order of first
//! appearance is kept; repeats are dropped. A directory stands for every `.yaml`, `.yml` and
//! `.json` file below it (a GitOps repository), hidden directories such as `.git` left out.

use std::path::{Path, PathBuf};

/// The images found, and how many `image` values were skipped as unrendered templates.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Found {
    pub images: Vec<String>,
    pub templated: usize,
}

impl Found {
    fn add(&mut self, value: &str) {
        let value = value.trim();
        if value.is_empty() {
            return;
        }
        if value.contains("{{") || value.contains('$') {
            self.templated += 1;
        } else if !value.contains(char::is_whitespace) && !self.images.iter().any(|i| i == value) {
            self.images.push(value.to_string());
        }
    }
}

/// Scans `text` for image references.
pub fn scan(text: &str) -> Found {
    let mut found = Found::default();
    scan_into(text, &mut found);
    found
}

fn scan_into(text: &str, found: &mut Found) {
    for line in text.lines() {
        if let Some(value) = yaml_image(line) {
            found.add(value);
        }
        json_images(line, found);
    }
}

/// The manifest files `path` stands for: itself, or the YAML and JSON files below a directory,
/// sorted.
pub fn files(path: &Path) -> std::io::Result<Vec<PathBuf>> {
    if !path.is_dir() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut out = Vec::new();
    let mut dirs = vec![path.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        let named = |e: std::io::Error| std::io::Error::new(e.kind(), format!("{}: {e}", dir.display()));
        for entry in std::fs::read_dir(&dir).map_err(named)? {
            let p = entry.map_err(named)?.path();
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            if p.is_dir() {
                if !name.starts_with('.') {
                    dirs.push(p);
                }
            } else if [".yaml", ".yml", ".json"].iter().any(|e| name.ends_with(e)) {
                out.push(p);
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Scans every file `path` stands for (`read` gives a file's text); the images and how many
/// files were read.
pub fn scan_path(
    path: &Path,
    read: impl Fn(&Path) -> std::io::Result<String>,
) -> std::io::Result<(Found, usize)> {
    let files = files(path)?;
    let mut found = Found::default();
    for f in &files {
        scan_into(&read(f)?, &mut found);
    }
    Ok((found, files.len()))
}

/// The value of a YAML `image:` key on this line, if it has one.
fn yaml_image(line: &str) -> Option<&str> {
    let mut rest = line.trim_start();
    while let Some(item) = rest.strip_prefix("- ") {
        rest = item.trim_start();
    }
    let value = rest.strip_prefix("image:")?;
    if !value.is_empty() && !value.starts_with([' ', '\t']) {
        return None;
    }
    let value = match value.find(" #") {
        Some(at) => &value[..at],
        None => value,
    };
    let value = value.trim();
    let unquoted = [('"', '"'), ('\'', '\'')]
        .iter()
        .find_map(|(open, close)| value.strip_prefix(*open)?.strip_suffix(*close));
    Some(unquoted.unwrap_or(value))
}

/// Every JSON `"image": "<value>"` pair on this line.
fn json_images(line: &str, found: &mut Found) {
    let mut rest = line;
    while let Some(at) = rest.find("\"image\"") {
        rest = &rest[at + "\"image\"".len()..];
        let Some(after_colon) = rest.trim_start().strip_prefix(':') else {
            continue;
        };
        let Some(value) = after_colon.trim_start().strip_prefix('"') else {
            continue;
        };
        if let Some(end) = value.find('"') {
            found.add(&value[..end]);
            rest = &value[end + 1..];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubernetes_yaml_and_compose() {
        let text = r#"
apiVersion: apps/v1
kind: Deployment
spec:
  template:
    spec:
      initContainers:
        - name: init
          image: "busybox:1.36"   # init
      containers:
        - image: ghcr.io/org/app@sha256:0123
          name: app
        - {name: sidecar, image: inline-flow-style}
        - name: again
          image: 'busybox:1.36'
---
services:
  web:
    image: nginx:1.25 # pinned
  templated:
    image: ${REGISTRY}/app:${TAG}
imagePullPolicy: Always
status:
  containerStatuses:
  - image: docker.io/library/nginx:1.25
    imageID: docker.io/library/nginx@sha256:abcd
"#;
        let found = scan(text);
        assert_eq!(
            found.images,
            [
                "busybox:1.36",
                "ghcr.io/org/app@sha256:0123",
                "nginx:1.25",
                "docker.io/library/nginx:1.25"
            ]
        );
        assert_eq!(found.templated, 1);
    }

    #[test]
    fn json_lists_and_helm_values() {
        let text = r#"{"kind":"List","items":[{"spec":{"containers":[{"name":"a","image":"alpine:3.20"},{"image" : "quay.io/x/y:1"}]}}]}"#;
        assert_eq!(scan(text).images, ["alpine:3.20", "quay.io/x/y:1"]);
        let values =
            "image:\n  repository: nginx\n  tag: 1.25\nsidecar:\n  image: \"{{ .Values.sidecar }}\"\n";
        assert_eq!(
            scan(values),
            Found {
                images: vec![],
                templated: 1
            }
        );
        assert_eq!(
            scan("images: [a, b]\nimage_name: c\n").images,
            Vec::<String>::new()
        );
    }

    #[test]
    fn a_directory_is_its_yaml_and_json_files() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path();
        std::fs::create_dir_all(p.join("apps/web")).unwrap();
        std::fs::create_dir_all(p.join(".git")).unwrap();
        std::fs::write(p.join("apps/web/deploy.yaml"), "image: web:1\n").unwrap();
        std::fs::write(p.join("apps/job.json"), r#"{"image": "job:2"}"#).unwrap();
        std::fs::write(p.join("apps/README.md"), "image: not-this:1\n").unwrap();
        std::fs::write(p.join(".git/config.yml"), "image: nor-this:1\n").unwrap();
        std::fs::write(p.join("top.yml"), "- image: web:1\n").unwrap();
        let (found, files) = scan_path(p, |f| std::fs::read_to_string(f)).unwrap();
        assert_eq!(files, 3);
        assert_eq!(found.images, ["job:2", "web:1"]);
        let (one, files) = scan_path(&p.join("top.yml"), |f| std::fs::read_to_string(f)).unwrap();
        assert_eq!((one.images, files), (vec!["web:1".to_string()], 1));
    }
}
