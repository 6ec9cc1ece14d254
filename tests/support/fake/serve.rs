//! The fake's HTTP side: the accept loop of its two hosts ("registry", and "storage" where blobs
//! are redirected), the request log, authentication, the whole-registry faults and redirects,
//! and the distribution API routes (tags/list, manifests, referrers, blobs).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};

use super::body::{blob_response, ChanBody};
use super::{sha256, Fault, Logged, Repo, State, TagListing};

const INDEX: &str = "application/vnd.oci.image.index.v1+json";

/// Serves `host` ("registry" or "storage") on a new loopback port.
pub(super) async fn listen(state: Arc<State>, host: &'static str) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let state = state.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req| {
                    let state = state.clone();
                    async move { Ok::<_, Infallible>(handle(state, req, host).await) }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    addr
}

/// The token service, held manifest requests, then everything else.
async fn handle(state: Arc<State>, req: Request<Incoming>, host: &'static str) -> Response<ChanBody> {
    if req.uri().path() == "/token" && host == "registry" {
        let (parts, body) = state.auth.token(req).await.into_parts();
        return Response::from_parts(parts, ChanBody::full(body));
    }
    let range = req
        .headers()
        .get("range")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let hold = match state.fault.lock().unwrap().clone() {
        Some(Fault::HoldManifests { gate }) if req.uri().path().contains("/manifests/") => Some(gate),
        Some(Fault::HoldRanges { gate }) if range.is_some() => Some(gate),
        _ => None,
    };
    if let Some(mut gate) = hold {
        state.log.lock().unwrap().push(Logged {
            method: req.method().to_string(),
            path: req.uri().path().to_string(),
            query: req.uri().query().map(str::to_string),
            authorization: None,
            range,
            host,
        });
        let _ = gate.wait_for(|open| *open).await;
        return serve(&state, req, host, false);
    }
    serve(&state, req, host, true)
}

pub(super) fn reply(status: u16, headers: &[(&str, String)], body: impl Into<Bytes>) -> Response<ChanBody> {
    let body = body.into();
    let mut b = Response::builder()
        .status(status)
        .header("content-length", body.len());
    for (k, v) in headers {
        b = b.header(*k, v);
    }
    b.body(ChanBody::full(body)).unwrap()
}

fn error(status: u16, code: &str) -> Response<ChanBody> {
    reply(
        status,
        &[("content-type", "application/json".into())],
        format!(r#"{{"errors":[{{"code":"{code}","message":"fake"}}]}}"#),
    )
}

/// Answers one request (logged unless `log` is false: a held request was logged on arrival).
fn serve(state: &Arc<State>, req: Request<Incoming>, host: &'static str, log: bool) -> Response<ChanBody> {
    let seen = Logged {
        method: req.method().to_string(),
        path: req.uri().path().to_string(),
        query: req.uri().query().map(str::to_string),
        authorization: req
            .headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string),
        range: req
            .headers()
            .get("range")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string),
        host,
    };
    if host == "storage" {
        state.log.lock().unwrap().push(seen.clone());
        return storage(state, &seen);
    }
    if log {
        state.log.lock().unwrap().push(seen.clone());
    }
    let Some(rest) = seen.path.strip_prefix("/v2/") else {
        return error(404, "NOT_FOUND");
    };
    if let Some(early) = before_content(state, &seen, rest) {
        return early;
    }
    if let Some(name) = rest.strip_suffix("/tags/list") {
        return tags_list(state, name, seen.query.as_deref().unwrap_or_default());
    }
    content(state, rest, &seen)
}

/// The storage host: signed-URL-like blob downloads that refuse `Authorization`.
fn storage(state: &Arc<State>, seen: &Logged) -> Response<ChanBody> {
    if seen.authorization.is_some() {
        return error(400, "AUTHORIZATION_NOT_ALLOWED");
    }
    let digest = seen.path.trim_start_matches("/storage/").to_string();
    let repos = state.repos.lock().unwrap();
    let blob = repos.values().find_map(|r| r.blobs.get(&digest).cloned());
    match blob {
        Some(b) => blob_response(state, b, seen.method == "HEAD", seen.range.as_deref()),
        None => error(404, "BLOB_UNKNOWN"),
    }
}

/// What is answered before any content is looked up: the 401 challenge, registry.k8s.io's
/// redirect, the `/v2/` base, and the whole-registry faults.
fn before_content(state: &Arc<State>, seen: &Logged, rest: &str) -> Option<Response<ChanBody>> {
    if let Some(Fault::Down(s)) = state.fault.lock().unwrap().clone() {
        return Some(error(s, "DOWN"));
    }
    let addr = state.addr.lock().unwrap().unwrap();
    let name = if rest.ends_with("/tags/list") {
        rest.trim_end_matches("/tags/list")
    } else {
        rest.rsplitn(3, '/').nth(2).unwrap_or("")
    };
    let realm = format!("http://{addr}/token");
    if let Some((challenge, body)) = state.auth.check(&realm, seen.authorization.as_deref(), name) {
        return Some(reply(401, &[("www-authenticate", challenge)], body));
    }
    if let Some((base, prefix)) = state.redirect_all.lock().unwrap().clone() {
        if !rest.is_empty() {
            let q = seen.query.as_deref().map(|q| format!("?{q}")).unwrap_or_default();
            return Some(reply(
                307,
                &[("location", format!("{base}/v2/{prefix}/{rest}{q}"))],
                "",
            ));
        }
    }
    if rest.is_empty() {
        return Some(reply(200, &[], "{}"));
    }
    match state.fault.lock().unwrap().clone() {
        Some(Fault::Status(s)) => Some(error(s, "FAULT")),
        Some(Fault::RateLimit { retry_after }) => Some(reply(
            429,
            &[
                ("retry-after", retry_after),
                ("content-type", "application/json".into()),
            ],
            r#"{"errors":[{"code":"TOOMANYREQUESTS","message":"fake"}]}"#,
        )),
        _ => None,
    }
}

/// `tags/list` as `State::tag_listing` says: by the spec, ignoring the query, or in pages.
fn tags_list(state: &Arc<State>, name: &str, query: &str) -> Response<ChanBody> {
    let repos = state.repos.lock().unwrap();
    let Some(r) = repos.get(name) else {
        return error(404, "NAME_UNKNOWN");
    };
    let param = |key: &str| {
        form_urlencoded::parse(query.as_bytes())
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.into_owned())
    };
    let n: Option<usize> = param("n").and_then(|v| v.parse().ok());
    let last = param("last");
    let mut headers = vec![("content-type", "application/json".to_string())];
    let tags: Vec<&String> = match *state.tag_listing.lock().unwrap() {
        TagListing::Spec => {
            let mut tags: Vec<&String> = r
                .tags
                .iter()
                .filter(|t| last.as_ref().is_none_or(|l| *t > l))
                .collect();
            if let Some(n) = n.filter(|n| tags.len() > *n) {
                tags.truncate(n);
                let next = format!("</v2/{name}/tags/list?last={}&n={n}>; rel=\"next\"", tags[n - 1]);
                headers.push(("link", next));
            }
            tags
        }
        TagListing::Ignores => r.tags.iter().collect(),
        TagListing::PagesOf(k) => {
            let start = last
                .and_then(|l| r.tags.iter().position(|t| *t == l))
                .map_or(0, |i| i + 1);
            let tags: Vec<&String> = r.tags.iter().skip(start).take(k).collect();
            if start + k < r.tags.len() {
                let addr = state.addr.lock().unwrap().expect("listening");
                let next = format!(
                    "<http://{addr}/v2/{name}/tags/list?n={k}&last={}>; rel=\"next\"",
                    tags[k - 1]
                );
                headers.push(("link", next));
            }
            tags
        }
    };
    let list: Vec<String> = tags.iter().map(|t| format!("\"{t}\"")).collect();
    reply(
        200,
        &headers,
        format!(r#"{{"name":"{name}","tags":[{}]}}"#, list.join(",")),
    )
}

/// `<name>/manifests/<ref>`, `<name>/referrers/<digest>` and `<name>/blobs/<digest>`.
fn content(state: &Arc<State>, rest: &str, seen: &Logged) -> Response<ChanBody> {
    let head = seen.method == "HEAD";
    let Some((head_part, reference)) = rest.rsplit_once('/') else {
        return error(404, "NOT_FOUND");
    };
    let Some((name, kind)) = head_part.rsplit_once('/') else {
        return error(404, "NOT_FOUND");
    };
    let repos = state.repos.lock().unwrap();
    let Some(r) = repos.get(name) else {
        return error(404, "NAME_UNKNOWN");
    };
    match kind {
        "manifests" => match r.manifests.get(reference) {
            Some((mt, bytes)) => manifest(state, mt, bytes, head),
            None => error(404, "MANIFEST_UNKNOWN"),
        },
        "referrers" if !r.referrers.is_empty() => referrers(r, reference),
        "blobs" => match r.blobs.get(reference) {
            Some(_) if state.redirect_blobs.lock().unwrap().is_some() => {
                let base = state.redirect_blobs.lock().unwrap().clone().unwrap_or_default();
                reply(307, &[("location", format!("{base}/storage/{reference}"))], "")
            }
            Some(b) => blob_response(state, b.clone(), head, seen.range.as_deref()),
            None => error(404, "BLOB_UNKNOWN"),
        },
        _ => error(404, "NOT_FOUND"),
    }
}

/// A manifest with its digest, and the rate-limit headers when they are turned on.
fn manifest(state: &Arc<State>, media_type: &str, bytes: &Bytes, head: bool) -> Response<ChanBody> {
    let mut headers = vec![
        ("content-type", media_type.to_string()),
        ("docker-content-digest", sha256(bytes)),
    ];
    if let Some((limit, remaining)) = *state.ratelimit.lock().unwrap() {
        headers.push(("ratelimit-limit", format!("{limit};w=21600")));
        headers.push(("ratelimit-remaining", format!("{remaining};w=21600")));
        headers.push(("docker-ratelimit-source", "127.0.0.1".into()));
    }
    if head {
        let mut resp = reply(200, &headers, Bytes::new());
        resp.headers_mut().insert("content-length", bytes.len().into());
        resp
    } else {
        reply(200, &headers, bytes.clone())
    }
}

/// The referrers index of `subject`, or an empty index.
fn referrers(r: &Repo, subject: &str) -> Response<ChanBody> {
    let headers = [("content-type", INDEX.to_string())];
    match r.referrers.get(subject) {
        Some(index) => reply(200, &headers, index.clone()),
        None => reply(
            200,
            &headers,
            format!(r#"{{"schemaVersion":2,"mediaType":"{INDEX}","manifests":[]}}"#),
        ),
    }
}
