//! Redirect rules: resolving a `Location`, which targets may be followed (https always; plain
//! http only when the upstream itself is plain http, a lab registry), and which repository a
//! redirected registry URL is about, so its host's token is asked for the right scope.

use http::uri::Scheme;
use http::Uri;

/// Resolves a `Location` against the URL that answered with it.
pub(super) fn resolve(base: &Uri, location: &str) -> Option<Uri> {
    let loc: Uri = location.parse().ok()?;
    if loc.scheme().is_some() {
        return Some(loc);
    }
    let path = loc.path_and_query()?.as_str();
    if !path.starts_with('/') {
        return None;
    }
    Uri::builder()
        .scheme(base.scheme()?.clone())
        .authority(base.authority()?.clone())
        .path_and_query(path)
        .build()
        .ok()
}

/// May a request for an upstream reached over `upstream_scheme` follow a redirect to `next`?
pub(super) fn allowed(upstream_scheme: &Scheme, next: &Uri) -> bool {
    match next.scheme_str() {
        Some("https") => true,
        Some("http") => *upstream_scheme == Scheme::HTTP,
        _ => false,
    }
}

/// `repository:<name>:pull` for a registry API path (`/v2/<name>/manifests/<ref>`, `/blobs/`,
/// `/tags/list`, `/referrers/`), `None` for anything else (storage and CDN URLs).
pub(super) fn scope_of(path: &str) -> Option<String> {
    let rest = path.strip_prefix("/v2/")?;
    let segments: Vec<&str> = rest.split('/').collect();
    if segments.len() < 3 {
        return None;
    }
    let kind = segments[segments.len() - 2];
    if !matches!(kind, "manifests" | "blobs" | "tags" | "referrers") {
        return None;
    }
    let name = segments[..segments.len() - 2].join("/");
    (!name.is_empty()).then(|| format!("repository:{name}:pull"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_redirects() {
        let base: Uri = "https://reg.example/v2/a/blobs/x".parse().unwrap();
        assert_eq!(
            resolve(&base, "https://cdn.example/b?sig=1").unwrap().to_string(),
            "https://cdn.example/b?sig=1"
        );
        assert_eq!(
            resolve(&base, "/other?x=1").unwrap().to_string(),
            "https://reg.example/other?x=1"
        );
        assert!(resolve(&base, "relative").is_none());
    }

    #[test]
    fn only_https_unless_the_upstream_is_plain_http() {
        let https: Uri = "https://cdn.example/x".parse().unwrap();
        let http: Uri = "http://cdn.example/x".parse().unwrap();
        assert!(allowed(&Scheme::HTTPS, &https));
        assert!(!allowed(&Scheme::HTTPS, &http));
        assert!(allowed(&Scheme::HTTP, &http));
        assert!(allowed(&Scheme::HTTP, &https));
    }

    #[test]
    fn scopes_of_registry_paths() {
        assert_eq!(
            scope_of("/v2/k8s-artifacts-prod/images/pause/manifests/3.9").as_deref(),
            Some("repository:k8s-artifacts-prod/images/pause:pull")
        );
        assert_eq!(
            scope_of("/v2/a/blobs/sha256:00").as_deref(),
            Some("repository:a:pull")
        );
        assert_eq!(
            scope_of("/v2/org/app/tags/list").as_deref(),
            Some("repository:org/app:pull")
        );
        assert_eq!(scope_of("/v2/"), None);
        assert_eq!(scope_of("/registry-v2/docker/blobs/sha256/fa/data"), None);
        assert_eq!(scope_of("/v2/manifests/x"), None);
    }
}
