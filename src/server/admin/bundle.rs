//! `GET /admin/export` (the bundle streams as the answer, `application/x-tar`; what it holds is
//! in the `Regcache-Export` header, as JSON) and `POST /admin/import` (the bundle is the request
//! body; the answer is the `ImportReport`). Both pass the `AdminGuard`. The archive is written and
//! read by blocking code on the other side of a bounded pipe (`streams.rs`): memory stays bounded
//! whatever the bundle's size. An export that fails part-way cuts the connection, so the client
//! sees a broken transfer, never a short archive that looks complete.

use std::io;
use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::BodyExt;
use hyper::body::Incoming;

use super::{json, refuse, reply, AdminGuard, State};
use crate::admin_api::{self as api, ImportOptions};
use crate::registry::BundleError;
use crate::streams::{pipe, pump, PipeBody, PipeReader};

pub(super) type Body = BoxBody<Bytes, io::Error>;

fn plain(resp: Response<http_body_util::Full<Bytes>>) -> Response<Body> {
    resp.map(|b| b.map_err(|never| match never {}).boxed())
}

/// The status an export or import error is answered with.
fn status_of(e: &BundleError) -> StatusCode {
    match e {
        BundleError::Unreadable(_)
        | BundleError::Corrupt(_)
        | BundleError::Incomplete(_)
        | BundleError::Unplaceable(_) => StatusCode::UNPROCESSABLE_ENTITY,
        BundleError::NotCached(_) => StatusCode::NOT_FOUND,
        BundleError::NoRoom(_) => StatusCode::INSUFFICIENT_STORAGE,
        BundleError::Io(_) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

fn failed(e: &BundleError) -> Response<Body> {
    plain(reply(status_of(e), "text/plain", format!("{e}\n")))
}

/// `GET /admin/export?image=…&image=…[&all=true][&pinned=true]`.
pub(super) async fn export(
    state: &Arc<State>,
    guard: &AdminGuard,
    req: &Request<Incoming>,
) -> Response<Body> {
    if req.method() != Method::GET {
        return plain(reply(StatusCode::METHOD_NOT_ALLOWED, "text/plain", "use GET\n"));
    }
    if let Err(denied) = guard.check(req.headers()) {
        return plain(refuse(denied));
    }
    let options = api::export_options(req.uri().query().unwrap_or(""));
    let plan = match state.registry.export_plan(&options).await {
        Ok(p) => p,
        Err(e) => return failed(&e),
    };
    let summary = serde_json::to_string(plan.report()).unwrap_or_default();
    let (mut writer, rx) = pipe();
    tokio::task::spawn_blocking(move || {
        if let Err(e) = plan.write(&mut writer) {
            tracing::warn!(error = %e, "export failed part-way; the transfer is cut");
            writer.fail(io::Error::other(e.to_string()));
        }
    });
    let mut resp = Response::builder()
        .status(StatusCode::OK)
        .header(http::header::CONTENT_TYPE, "application/x-tar");
    // A very long list of images is left out rather than making the header huge.
    if summary.len() <= api::MAX_EXPORT_HEADER {
        resp = resp.header(api::EXPORT_HEADER, summary);
    }
    resp.body(PipeBody(rx).boxed())
        .unwrap_or_else(|_| plain(reply(StatusCode::INTERNAL_SERVER_ERROR, "text/plain", "")))
}

/// `POST /admin/import[?pin=false][&repository=HOST/NAME]` with the archive as the body.
pub(super) async fn import(state: &Arc<State>, guard: &AdminGuard, req: Request<Incoming>) -> Response<Body> {
    if req.method() != Method::POST {
        return plain(reply(StatusCode::METHOD_NOT_ALLOWED, "text/plain", "use POST\n"));
    }
    if let Err(denied) = guard.check(req.headers()) {
        return plain(refuse(denied));
    }
    let options: ImportOptions = api::import_options(req.uri().query().unwrap_or(""));
    let (writer, rx) = pipe();
    let body = req.into_body();
    let pumping = tokio::spawn(pump(body, writer.sender()));
    drop(writer);
    let imported = state
        .registry
        .import(Box::new(PipeReader::new(rx)), &options)
        .await;
    // The answer goes once the whole body was read (see `pump`).
    let _ = pumping.await;
    match imported {
        Ok(report) => plain(json(&report)),
        Err(e) => {
            tracing::warn!(error = %e, "import refused; nothing was added");
            failed(&e)
        }
    }
}
