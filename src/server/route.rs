//! Request routing: turns a `/v2/...` path and query into a typed request. The path is parsed
//! from the right (`…/manifests/<ref>`, `…/blobs/<digest>`, `…/tags/list`, `…/referrers/<digest>`),
//! so names may contain slashes. Which namespace serves the name (containerd's `?ns=<host>`, a
//! leading upstream host, or the default upstream) is the registry layer's question
//! (`Registry::locate`); this module only checks the grammar. A leading segment with a port
//! (`registry.internal:5000/team/app`, the mirror-path convention for a registry on a port) can
//! never be part of a repository name, so it is parsed apart, as a `HostPort`, and the rest is
//! checked as the name.

use super::response::ServeError;
use crate::oci::{Digest, HostPort, Reference, RepoName};

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Endpoint {
    Manifest(Reference),
    Blob(Digest),
    Tags,
    Referrers(Digest),
    /// `blobs/uploads/` (start one) or `blobs/uploads/<id>`: pushes to a hosted namespace.
    Upload(Option<String>),
}

pub(super) enum Parsed {
    Base,
    Catalog,
    Repo(RepoRequest),
}

/// A request about one repository, as the client named it.
pub(super) struct RepoRequest {
    /// A leading `host:port` segment, which only a configured upstream may answer to.
    pub host: Option<HostPort>,
    /// The name as the client sent it after that host (`docker.io/library/alpine`, `alpine`).
    pub name: RepoName,
    /// The whole name, host included, verbatim, for `Link` headers and token scopes.
    pub client_name: String,
    /// The `ns` query value (containerd), kept in rewritten links.
    pub ns: Option<String>,
    pub endpoint: Endpoint,
}

/// An upload path: `<name>/blobs/uploads[/]` starts one, `<name>/blobs/uploads/<id>` is one.
fn upload<'a>(rest: &'a str, path: &str) -> Result<(&'a str, Endpoint), ServeError> {
    let start = rest
        .strip_suffix("/blobs/uploads/")
        .or_else(|| rest.strip_suffix("/blobs/uploads"));
    if let Some(name) = start {
        return Ok((name, Endpoint::Upload(None)));
    }
    let (head, id) = rest
        .rsplit_once('/')
        .ok_or_else(|| ServeError::NotFound(path.to_string()))?;
    let name = head
        .strip_suffix("/blobs/uploads")
        .ok_or_else(|| ServeError::NotFound(path.to_string()))?;
    // Ids are regcache's own (hex); anything else names no upload.
    let valid = !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if !valid {
        return Err(ServeError::NotFound(path.to_string()));
    }
    Ok((name, Endpoint::Upload(Some(id.to_string()))))
}

/// The value of one query parameter.
pub(super) fn query_param(query: Option<&str>, key: &str) -> Option<String> {
    form_urlencoded::parse(query?.as_bytes())
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.into_owned())
}

/// The push endpoints, matched from the right like every route: `<name>/blobs/uploads/[<id>]`.
/// A repository may itself be called `…/blobs/uploads…` (`acme/blobs/uploads-cache`).
fn is_upload(rest: &str) -> bool {
    let head = rest.rsplit_once('/').map_or(rest, |(head, _)| head);
    rest.ends_with("/blobs/") || rest.ends_with("/blobs/uploads") || head.ends_with("/blobs/uploads")
}

/// Splits off a first segment that can only be a registry host: one with a port, or a bracketed
/// IPv6 address. Any other first segment stays in the name (`ghcr.io/org/app`), as before.
fn split_host(name: &str) -> Result<(Option<HostPort>, &str), ServeError> {
    let (first, rest) = name.split_once('/').unwrap_or((name, ""));
    if !first.contains(':') && !first.starts_with('[') {
        return Ok((None, name));
    }
    let host: HostPort = first
        .parse()
        .map_err(|e| ServeError::NameInvalid(format!("{name:?}: {e}")))?;
    if rest.is_empty() {
        return Err(ServeError::NameInvalid(format!(
            "{name:?}: no repository name after the host {host}"
        )));
    }
    Ok((Some(host), rest))
}

pub(super) fn parse(path: &str, query: Option<&str>) -> Result<Parsed, ServeError> {
    let rest = match path.strip_prefix("/v2") {
        Some("") | Some("/") => return Ok(Parsed::Base),
        Some(r) if r.starts_with('/') => &r[1..],
        _ => return Err(ServeError::NotFound(path.to_string())),
    };
    if rest == "_catalog" {
        return Ok(Parsed::Catalog);
    }
    let upload = match is_upload(rest) {
        true => Some(upload(rest, path)?),
        false => None,
    };
    let (name, endpoint) = if let Some(found) = upload {
        found
    } else if let Some(name) = rest.strip_suffix("/tags/list") {
        (name, Endpoint::Tags)
    } else {
        let (head, last) = rest
            .rsplit_once('/')
            .ok_or_else(|| ServeError::NotFound(path.to_string()))?;
        let (name, kind) = head
            .rsplit_once('/')
            .ok_or_else(|| ServeError::NotFound(path.to_string()))?;
        let last = last.replace("%3A", ":").replace("%3a", ":");
        let digest = |s: &str| {
            s.parse::<Digest>()
                .map_err(|e| ServeError::DigestInvalid(format!("{s:?}: {e}")))
        };
        let endpoint = match kind {
            "manifests" => Endpoint::Manifest(last.parse().map_err(|e| match e {
                crate::oci::ReferenceError::Digest(d) => ServeError::DigestInvalid(format!("{last:?}: {d}")),
                other => ServeError::TagInvalid(other.to_string()),
            })?),
            "blobs" => Endpoint::Blob(digest(&last)?),
            "referrers" => Endpoint::Referrers(digest(&last)?),
            _ => return Err(ServeError::NotFound(path.to_string())),
        };
        (name, endpoint)
    };
    let (host, rest) = split_host(name)?;
    let repo_name: RepoName = rest
        .parse()
        .map_err(|e| ServeError::NameInvalid(format!("{name:?}: {e}")))?;
    Ok(Parsed::Repo(RepoRequest {
        host,
        name: repo_name,
        client_name: name.to_string(),
        ns: query_param(query, "ns"),
        endpoint,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(path: &str, query: Option<&str>) -> RepoRequest {
        match parse(path, query) {
            Ok(Parsed::Repo(r)) => r,
            _ => panic!("{path} did not route to a repository"),
        }
    }

    #[test]
    fn names_parse_from_the_right() {
        let r = request("/v2/library/alpine/manifests/latest", Some("ns=docker.io"));
        assert_eq!(r.name.as_str(), "library/alpine");
        assert_eq!(r.ns.as_deref(), Some("docker.io"));
        let blob = format!("/v2/ghcr.io/org/app/blobs/sha256:{}", "a".repeat(64));
        let r = request(&blob, None);
        assert_eq!(r.client_name, "ghcr.io/org/app");
        assert!(matches!(r.endpoint, Endpoint::Blob(_)));
        let r = request("/v2/org/app/tags/list", Some("ns=ghcr.io&n=10"));
        assert_eq!((r.name.as_str(), r.endpoint.clone()), ("org/app", Endpoint::Tags));
        let r = request("/v2/docker.io/alpine/manifests/3.19", None);
        assert_eq!(r.client_name, "docker.io/alpine");
    }

    #[test]
    fn bad_input_is_a_client_error() {
        let err = |p: &str, q: Option<&str>| match parse(p, q) {
            Err(e) => e.status().as_u16(),
            Ok(_) => 200,
        };
        assert_eq!(err("/v2/Alpine/manifests/latest", None), 400);
        assert_eq!(err("/v2/alpine/manifests/sha256:totallywrong", None), 400);
        assert_eq!(err("/v2/alpine/blobs/md5:abc", None), 400);
        assert_eq!(err("/v3/x", None), 404);
        assert!(matches!(parse("/v2/", None), Ok(Parsed::Base)));
        assert_eq!(err("/v2/alpine/blobs/uploads/bad%20id", None), 404);
        // Upload paths route; a mirrored namespace refuses them later (405).
        assert_eq!(
            request("/v2/alpine/blobs/uploads/", None).endpoint,
            Endpoint::Upload(None)
        );
        assert_eq!(
            request("/v2/alpine/blobs/uploads", None).endpoint,
            Endpoint::Upload(None)
        );
        assert_eq!(
            request("/v2/alpine/blobs/uploads/some-id", None).endpoint,
            Endpoint::Upload(Some("some-id".into()))
        );
    }

    #[test]
    fn names_may_contain_blobs_and_uploads() {
        let r = request("/v2/acme/blobs/uploads-cache/manifests/latest", None);
        assert_eq!(r.name.as_str(), "acme/blobs/uploads-cache");
        let r = request("/v2/acme/blobs/uploads/tags/list", None);
        assert_eq!(
            (r.name.as_str(), r.endpoint),
            ("acme/blobs/uploads", Endpoint::Tags)
        );
    }

    #[test]
    fn a_leading_host_with_a_port_is_parsed_apart() {
        let r = request("/v2/127.0.0.1:5000/library/app/manifests/v1", None);
        assert_eq!(r.host.as_ref().map(HostPort::as_str), Some("127.0.0.1:5000"));
        assert_eq!(r.name.as_str(), "library/app");
        assert_eq!(r.client_name, "127.0.0.1:5000/library/app");
        let r = request("/v2/[::1]:5000/app/tags/list", None);
        assert_eq!(r.host.as_ref().map(HostPort::as_str), Some("[::1]:5000"));
        assert_eq!((r.name.as_str(), r.endpoint), ("app", Endpoint::Tags));
        let r = request("/v2/registry.internal:5000/team/app/manifests/v1", Some("ns=x"));
        assert_eq!(
            r.host.as_ref().map(HostPort::as_str),
            Some("registry.internal:5000")
        );
        assert_eq!(r.ns.as_deref(), Some("x"));
        // Without a port a first segment stays in the name: only an upstream lookup can tell.
        let r = request("/v2/localhost/app/manifests/v1", None);
        assert_eq!((r.host, r.name.as_str()), (None, "localhost/app"));
    }

    #[test]
    fn a_bad_leading_host_is_an_invalid_name() {
        let code = |p: &str| match parse(p, None) {
            Err(e) => e.status_and_code(),
            Ok(_) => panic!("{p} routed"),
        };
        let invalid = (http::StatusCode::BAD_REQUEST, "NAME_INVALID");
        for p in [
            "/v2/127.0.0.1:5000/manifests/v1",
            "/v2/127.0.0.1:5000/Bad/manifests/v1",
            "/v2/host:99999/app/manifests/v1",
            "/v2/host:/app/manifests/v1",
            "/v2/[::1/app/manifests/v1",
            "/v2/a/b:1/manifests/v1",
            "/v2/user@host:1/app/manifests/v1",
        ] {
            assert_eq!(code(p), invalid, "{p}");
        }
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        fn name() -> impl Strategy<Value = String> {
            let component = "[a-z0-9]{1,8}((\\.|_|__|-{1,3})[a-z0-9]{1,8}){0,2}";
            prop::collection::vec(component, 1..5).prop_map(|c| c.join("/"))
        }

        fn digest() -> impl Strategy<Value = Digest> {
            prop::collection::vec(any::<u8>(), 0..32).prop_map(|b| Digest::sha256_of(&b))
        }

        /// Paths that look like registry paths, with hostile pieces mixed in.
        fn path() -> impl Strategy<Value = String> {
            let piece = prop_oneof![
                "[a-z0-9._-]{0,10}",
                Just("manifests".to_string()),
                Just("blobs".to_string()),
                Just("tags".to_string()),
                Just("list".to_string()),
                Just("..".to_string()),
                Just("127.0.0.1:5000".to_string()),
                "[a-z0-9.:\\[\\]-]{1,12}",
                "sha256(:|%3A|%3a)[0-9a-f]{0,66}",
                "\\PC{0,12}",
            ];
            prop::collection::vec(piece, 0..8).prop_map(|p| format!("/v2/{}", p.join("/")))
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(256))]

            #[test]
            fn anything_routed_is_well_formed(p in prop_oneof![path(), "\\PC{0,80}"], q in proptest::option::of("\\PC{0,40}")) {
                match parse(&p, q.as_deref()) {
                    Ok(Parsed::Repo(r)) => {
                        match &r.host {
                            Some(h) => prop_assert_eq!(&r.client_name, &format!("{h}/{}", r.name)),
                            None => prop_assert_eq!(r.client_name.parse::<RepoName>(), Ok(r.name.clone())),
                        }
                        let last = p.rsplit('/').next().unwrap_or_default().replace("%3A", ":").replace("%3a", ":");
                        match &r.endpoint {
                            Endpoint::Manifest(reference) => prop_assert_eq!(reference.to_string(), last),
                            Endpoint::Blob(d) | Endpoint::Referrers(d) => prop_assert_eq!(d.to_string(), last),
                            Endpoint::Tags => prop_assert!(p.ends_with("/tags/list")),
                            Endpoint::Upload(None) => prop_assert!(p.trim_end_matches('/').ends_with("/blobs/uploads")),
                            Endpoint::Upload(Some(id)) => prop_assert_eq!(id, &last),
                        }
                    }
                    Ok(_) => {}
                    Err(e) => prop_assert!(e.status().is_client_error(), "{p:?}: {}", e.status()),
                }
            }

            #[test]
            fn valid_requests_round_trip(n in name(), d in digest(), tag in "[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}") {
                let r = request(&format!("/v2/{n}/blobs/{d}"), None);
                prop_assert_eq!((r.name.as_str(), &r.endpoint), (n.as_str(), &Endpoint::Blob(d.clone())));
                let r = request(&format!("/v2/{n}/referrers/{d}"), Some("ns=ghcr.io"));
                prop_assert_eq!(&r.endpoint, &Endpoint::Referrers(d.clone()));
                prop_assert_eq!(r.ns.as_deref(), Some("ghcr.io"));
                let r = request(&format!("/v2/{n}/manifests/{tag}"), None);
                prop_assert_eq!(r.endpoint, Endpoint::Manifest(tag.parse().unwrap()));
                let r = request(&format!("/v2/{n}/manifests/{d}"), None);
                prop_assert_eq!(r.endpoint, Endpoint::Manifest(Reference::Digest(d)));
                let r = request(&format!("/v2/{n}/tags/list"), Some("n=5"));
                prop_assert_eq!((r.client_name, r.endpoint), (n, Endpoint::Tags));
            }
        }
    }
}
