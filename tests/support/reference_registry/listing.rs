//! The reference registry's listings: tag lists with `n`/`last` and a `Link`, and referrers
//! with the `artifactType` filter.

use super::*;

impl State {
    pub(super) fn tags(&self, repo: &str, query: &str) -> Answer {
        let all: Vec<&String> = self
            .tags
            .get(repo)
            .map(|t| t.keys().collect())
            .unwrap_or_default();
        let last = query_param(query, "last");
        let after: Vec<&String> = all
            .into_iter()
            .filter(|t| last.as_ref().is_none_or(|l| *t > l))
            .collect();
        let n = query_param(query, "n").and_then(|n| n.parse::<usize>().ok());
        let page: Vec<&String> = after.iter().take(n.unwrap_or(usize::MAX)).copied().collect();
        let mut headers = vec![("content-type", "application/json".to_string())];
        if let (Some(n), Some(end)) = (n, page.last()) {
            if after.len() > page.len() {
                let next = format!("</v2/{repo}/tags/list?n={n}&last={end}>; rel=\"next\"");
                headers.push(("link", next));
            }
        }
        answer(200, &headers, json!({ "name": repo, "tags": page }).to_string())
    }

    pub(super) fn referrers(&self, repo: &str, subject: &str, query: &str) -> Answer {
        let wanted = query_param(query, "artifactType");
        let mut entries = Vec::new();
        for ((r, digest), (media_type, data)) in &self.manifests {
            let value: Value = serde_json::from_slice(data).unwrap_or_default();
            if r != repo || value["subject"]["digest"] != subject {
                continue;
            }
            let artifact_type = value
                .get("artifactType")
                .unwrap_or(&value["config"]["mediaType"])
                .clone();
            if wanted.as_ref().is_some_and(|w| artifact_type != w.as_str()) {
                continue;
            }
            let mut entry = json!({
                "mediaType": media_type, "digest": digest, "size": data.len(),
                "artifactType": artifact_type,
            });
            if let Some(annotations) = value.get("annotations") {
                entry["annotations"] = annotations.clone();
            }
            entries.push(entry);
        }
        let mut headers = vec![("content-type", INDEX.to_string())];
        if wanted.is_some() {
            headers.push(("oci-filters-applied", "artifactType".to_string()));
        }
        let body = json!({ "schemaVersion": 2, "mediaType": INDEX, "manifests": entries });
        answer(200, &headers, body.to_string())
    }
}
