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
//! appearance is kept; repeats are dropped.

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
    for line in text.lines() {
        if let Some(value) = yaml_image(line) {
            found.add(value);
        }
        json_images(line, &mut found);
    }
    found
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
}
