//! Pass-through JSON listings: `GET /v2/<name>/tags/list` (with `n`/`last`, and the upstream's
//! `Link` header rewritten to point back at this mirror under the client's own name and `ns`),
//! and `GET /v2/<name>/referrers/<digest>` (with `artifactType`).

use http::header::{CONTENT_LENGTH, CONTENT_TYPE, LINK};
use http::{HeaderMap, Method, Response};
use http_body_util::{BodyExt, Limited};

use super::response::{full, ServeBody, ServeError, Subject};
use super::route::{query_param, Route};
use crate::oci::Digest;

const MAX_LISTING: usize = 16 * 1024 * 1024;

pub async fn tags(route: &Route, query: Option<&str>) -> Result<Response<ServeBody>, ServeError> {
    let q = {
        let mut q = form_urlencoded::Serializer::new(String::new());
        if let Some(n) = query_param(query, "n") {
            let n: u32 = n
                .parse()
                .map_err(|_| ServeError::PaginationInvalid(format!("n={n:?} is not a number")))?;
            q.append_pair("n", &n.to_string());
        }
        if let Some(last) = query_param(query, "last") {
            q.append_pair("last", &last);
        }
        q.finish()
    };
    let tail = if q.is_empty() {
        "tags/list".to_string()
    } else {
        format!("tags/list?{q}")
    };
    let (headers, body) = fetch_json(route, &tail, Subject::Repository).await?;
    let mut resp = Response::builder()
        .header(CONTENT_TYPE, "application/json")
        .header(CONTENT_LENGTH, body.len());
    if let Some(link) = headers
        .get(LINK)
        .and_then(|v| v.to_str().ok())
        .and_then(|l| rewrite_link(l, route, "tags/list"))
    {
        resp = resp.header(LINK, link);
    }
    resp.body(full(body))
        .map_err(|e| ServeError::Internal(e.to_string()))
}

pub async fn referrers(
    route: &Route,
    digest: &Digest,
    query: Option<&str>,
) -> Result<Response<ServeBody>, ServeError> {
    let tail = match query_param(query, "artifactType") {
        Some(t) => format!(
            "referrers/{digest}?{}",
            form_urlencoded::Serializer::new(String::new())
                .append_pair("artifactType", &t)
                .finish()
        ),
        None => format!("referrers/{digest}"),
    };
    let (headers, body) = fetch_json(route, &tail, Subject::Manifest).await?;
    let content_type = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/vnd.oci.image.index.v1+json")
        .to_string();
    let mut resp = Response::builder()
        .header(CONTENT_TYPE, content_type)
        .header(CONTENT_LENGTH, body.len());
    if let Some(applied) = headers.get("oci-filters-applied") {
        resp = resp.header("oci-filters-applied", applied);
    }
    resp.body(full(body))
        .map_err(|e| ServeError::Internal(e.to_string()))
}

async fn fetch_json(
    route: &Route,
    tail: &str,
    subject: Subject,
) -> Result<(HeaderMap, bytes::Bytes), ServeError> {
    let resp = route
        .upstream
        .request(Method::GET, &route.repo, tail, &HeaderMap::new())
        .await
        .map_err(ServeError::upstream(subject))?;
    let headers = resp.headers().clone();
    let body = Limited::new(resp.into_body(), MAX_LISTING)
        .collect()
        .await
        .map_err(|e| ServeError::Internal(format!("reading upstream listing: {e}")))?
        .to_bytes();
    Ok((headers, body))
}

/// `<…?n=2&last=b>; rel="next"` from upstream → the same query on this mirror's path.
fn rewrite_link(link: &str, route: &Route, suffix: &str) -> Option<String> {
    let target = link.split('<').nth(1)?.split('>').next()?;
    let query = target.split_once('?').map(|(_, q)| q).unwrap_or("");
    let mut q = form_urlencoded::Serializer::new(String::new());
    for (k, v) in form_urlencoded::parse(query.as_bytes()) {
        if k != "ns" {
            q.append_pair(&k, &v);
        }
    }
    if let Some(ns) = &route.ns {
        q.append_pair("ns", ns);
    }
    Some(format!(
        "</v2/{}/{suffix}?{}>; rel=\"next\"",
        route.client_name,
        q.finish()
    ))
}
