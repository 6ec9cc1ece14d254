//! `GET /v2/<name>/tags/list`, `GET /v2/<name>/referrers/<digest>` and `GET /v2/_catalog` (hosted
//! repositories only): query parsing, the JSON
//! responses, and the `Link` to the next page, which points back at this mirror under the
//! client's own name and `ns`.

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE, LINK};
use http::Response;

use super::response::{full, ServeBody, ServeError};
use super::route::{query_param, RepoRequest};
use super::State;
use crate::oci::{Digest, MediaType};
use crate::registry::{CacheResult, Client, Page, Repo};

pub(super) async fn tags(
    state: &State,
    client: &Client,
    repo: &Repo,
    req: &RepoRequest,
    query: Option<&str>,
) -> Result<Response<ServeBody>, ServeError> {
    let page = page(query)?;
    let answer = state.registry.tags(client, repo, &page).await?;
    let link = answer.next.map(|pairs| next_link(req, &pairs));
    json_response("application/json", answer.body, link, answer.result)
}

pub(super) async fn referrers(
    state: &State,
    client: &Client,
    repo: &Repo,
    digest: &Digest,
    query: Option<&str>,
) -> Result<Response<ServeBody>, ServeError> {
    let artifact_type = query_param(query, "artifactType");
    let answer = state
        .registry
        .referrers(client, repo, digest, artifact_type.as_deref())
        .await?;
    let mut resp = json_response(MediaType::OCI_INDEX, answer.body, None, answer.result)?;
    if answer.filtered {
        resp.headers_mut().insert(
            "oci-filters-applied",
            http::HeaderValue::from_static("artifactType"),
        );
    }
    Ok(resp)
}

/// `GET /v2/_catalog[?n=&last=]`: the hosted repositories the client may read.
pub(super) async fn catalog(
    state: &State,
    client: &Client,
    query: Option<&str>,
) -> Result<Response<ServeBody>, ServeError> {
    let page = page(query)?;
    let answer = state.registry.catalog(client, &page).await?;
    let link = answer.next.map(|pairs| {
        let mut q = form_urlencoded::Serializer::new(String::new());
        for (k, v) in &pairs {
            q.append_pair(k, v);
        }
        format!("</v2/_catalog?{}>; rel=\"next\"", q.finish())
    });
    json_response("application/json", answer.body, link, answer.result)
}

fn page(query: Option<&str>) -> Result<Page, ServeError> {
    let n = match query_param(query, "n") {
        Some(n) => Some(
            n.parse::<usize>()
                .map_err(|_| ServeError::PaginationInvalid(format!("n={n:?} is not a number")))?,
        ),
        None => None,
    };
    Ok(Page {
        n,
        last: query_param(query, "last"),
    })
}

/// `</v2/<client's name>/tags/list?<query>&ns=<ns>>; rel="next"`.
fn next_link(req: &RepoRequest, pairs: &[(String, String)]) -> String {
    let mut q = form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        q.append_pair(k, v);
    }
    if let Some(ns) = &req.ns {
        q.append_pair("ns", ns);
    }
    format!("</v2/{}/tags/list?{}>; rel=\"next\"", req.client_name, q.finish())
}

fn json_response(
    content_type: &str,
    body: Bytes,
    link: Option<String>,
    result: CacheResult,
) -> Result<Response<ServeBody>, ServeError> {
    let mut resp = Response::builder()
        .header(CONTENT_TYPE, content_type)
        .header(CONTENT_LENGTH, body.len());
    if let Some(l) = link {
        resp = resp.header(LINK, l);
    }
    let mut resp = resp
        .body(full(body))
        .map_err(|e| ServeError::Internal(e.to_string()))?;
    resp.extensions_mut().insert(result);
    Ok(resp)
}
