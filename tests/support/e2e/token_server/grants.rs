//! Who may do what on the test token server: the fixed user table, the Basic credentials of a
//! token request, and the grants for one scope.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use hyper::body::Incoming;
use hyper::Request;
use serde_json::json;

/// Known users: (name, password, may push).
const USERS: &[(&str, &str, bool)] = &[
    ("admin", "admin-secret", true),
    ("reader", "reader-secret", false),
];

/// The credentials of a token request.
pub(super) enum Credentials {
    None,
    Valid(String, bool),
    Invalid(String),
}

pub(super) fn basic_user(req: &Request<Incoming>) -> Credentials {
    let Some(value) = req.headers().get(hyper::header::AUTHORIZATION) else {
        return Credentials::None;
    };
    let value = value.to_str().unwrap_or("");
    let Some((scheme, encoded)) = value.split_once(' ') else {
        return Credentials::Invalid(String::new());
    };
    if !scheme.eq_ignore_ascii_case("basic") {
        return Credentials::Invalid(String::new());
    }
    let Some(decoded) = STANDARD
        .decode(encoded.trim())
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
    else {
        return Credentials::Invalid(String::new());
    };
    let (name, password) = decoded.split_once(':').unwrap_or((decoded.as_str(), ""));
    match USERS.iter().find(|(n, p, _)| *n == name && *p == password) {
        Some((n, _, push)) => Credentials::Valid(n.to_string(), *push),
        None => Credentials::Invalid(name.to_string()),
    }
}

/// Grants for one scope. `may_push` is `None` for anonymous callers.
pub(super) fn grant(scope: &str, may_push: Option<bool>) -> Option<serde_json::Value> {
    let mut parts = scope.split(':');
    let kind = parts.next()?;
    let rest: Vec<&str> = parts.collect();
    if rest.len() < 2 {
        return None;
    }
    let name = rest[..rest.len() - 1].join(":");
    let wanted = rest[rest.len() - 1];
    let kind = kind.split('(').next().unwrap_or(kind);
    if kind != "repository" {
        return None;
    }
    let allowed: Vec<&str> = wanted
        .split(',')
        .filter(|action| match (may_push, *action) {
            (None, "pull") => name.starts_with("library/"),
            (None, _) => false,
            (Some(_), "pull") => true,
            (Some(true), "push" | "delete" | "*") => true,
            (Some(_), _) => false,
        })
        .collect();
    if allowed.is_empty() {
        return None;
    }
    Some(json!({"type": "repository", "name": name, "actions": allowed}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grants_follow_the_user_table() {
        assert_eq!(
            grant("repository:library/a:pull", None).unwrap()["actions"],
            json!(["pull"])
        );
        assert!(grant("repository:myorg/p:pull", None).is_none());
        assert_eq!(
            grant("repository:myorg/p:pull,push", Some(false)).unwrap()["actions"],
            json!(["pull"])
        );
        assert_eq!(
            grant("repository:myorg/p:pull,push", Some(true)).unwrap()["actions"],
            json!(["pull", "push"])
        );
        assert!(grant("registry:catalog:*", Some(true)).is_none());
    }
}
