//! The admin API's paths and payloads, shared by the daemon (`server/admin.rs`) and the
//! operator commands (`cli/`), so the two cannot drift apart.

pub use crate::cache::{EntryKind, GcReport, LastPulled, ListEntry, Stats};
pub use crate::registry::{BundleImage, ExportOptions, ExportReport, ImportOptions, ImportReport};
pub use crate::registry::{PrefetchEvent, PrefetchOptions, UnpinReport};
pub use crate::registry::{PurgeReport, RepoReport};

/// `GET`: the cache index statistics (`Stats` as JSON).
pub const CACHE_STATS: &str = "/admin/cache";
/// `POST [?to=SIZE]`: evict now, to the low watermark or down to SIZE (`GcReport` as JSON).
pub const GC: &str = "/admin/gc";
/// `POST ?image=IMAGE[:TAG]`: drop a tag record, or every tag record of the repository without
/// a tag, so the next pull revalidates with the upstream (`PurgeReport` as JSON).
pub const PURGE: &str = "/admin/purge";
/// `POST` with a JSON `PrefetchOptions` body: fetch images into the cache as pulls do (and pin
/// them); the answer streams `PrefetchEvent`s as newline-delimited JSON, ending with a summary.
pub const PREFETCH: &str = "/admin/prefetch";
/// `POST ?image=IMAGE[:TAG|@DIGEST]`: remove the pins of a cached image (`UnpinReport` as JSON).
pub const UNPIN: &str = "/admin/unpin";
/// `GET [?prefix=IMAGE-PREFIX]`: what the cache holds, by upstream, repository and tag, then
/// manifests by digest (a JSON array of `ListEntry`). Guarded like gc: it names what was pulled.
pub const CACHE_LS: &str = "/admin/cache/ls";
/// `GET ?image=IMAGE&image=…[&all=true][&pinned=true]`: a bundle of cached images, streamed as an
/// OCI image layout in a tar archive; `EXPORT_HEADER` says what it holds (`ExportReport` JSON).
pub const EXPORT: &str = "/admin/export";
/// `POST [?pin=false][&repository=HOST/NAME]` with a bundle (tar) as the body: verify it whole,
/// then add its images (`ImportReport` as JSON; 422 with the reason when refused).
pub const IMPORT: &str = "/admin/import";
/// `POST ?name=NAMESPACE/REPOSITORY`: create a repository in a hosted namespace (`RepoReport`).
pub const REPOS: &str = "/admin/repos";
/// The header of an export answer that carries its `ExportReport`.
pub const EXPORT_HEADER: &str = "regcache-export";
/// A longer report is left out of the header.
pub const MAX_EXPORT_HEADER: usize = 32 * 1024;
/// `GET`: the HTML status page for a browser. Guarded like the listing: it names what was pulled.
pub const STATUS: &str = "/";
/// Prometheus text format.
pub const METRICS: &str = "/metrics";
/// The process answers.
pub const HEALTHZ: &str = "/healthz";
/// Ready for traffic (fails while draining).
pub const READYZ: &str = "/readyz";

/// The gc path with its parameters: a target size, releasing what hosted repositories no
/// longer hold first, or instead evicting what nobody used for a while.
pub fn gc_path(to: Option<u64>, hosted: bool, unused: Option<std::time::Duration>) -> String {
    let mut params = Vec::new();
    if let Some(n) = to {
        params.push(format!("to={n}"));
    }
    if hosted {
        params.push("hosted=true".to_string());
    }
    if let Some(d) = unused {
        params.push(format!("unused={}ms", d.as_millis()));
    }
    match params.is_empty() {
        true => GC.to_string(),
        false => format!("{GC}?{}", params.join("&")),
    }
}

/// The purge path for an image as an operator names it (`alpine:3.20`, `ghcr.io/org/app`).
pub fn purge_path(image: &str) -> String {
    let image: String = form_urlencoded::byte_serialize(image.as_bytes()).collect();
    format!("{PURGE}?image={image}")
}

/// The unpin path for an image as an operator names it.
pub fn unpin_path(image: &str) -> String {
    let image: String = form_urlencoded::byte_serialize(image.as_bytes()).collect();
    format!("{UNPIN}?image={image}")
}

/// The listing path, narrowed to an image prefix (`library/alpine`, `ghcr.io/org`) if given.
pub fn ls_path(prefix: Option<&str>) -> String {
    match prefix {
        Some(p) => {
            let p: String = form_urlencoded::byte_serialize(p.as_bytes()).collect();
            format!("{CACHE_LS}?prefix={p}")
        }
        None => CACHE_LS.to_string(),
    }
}

fn query_pairs(query: &str) -> Vec<(String, String)> {
    form_urlencoded::parse(query.as_bytes()).into_owned().collect()
}

fn truthy(v: &str) -> bool {
    matches!(v, "true" | "1" | "yes")
}

/// The export path for `options`.
pub fn export_path(options: &ExportOptions) -> String {
    let mut q = form_urlencoded::Serializer::new(String::new());
    for image in &options.images {
        q.append_pair("image", image);
    }
    if options.all {
        q.append_pair("all", "true");
    }
    if options.pinned {
        q.append_pair("pinned", "true");
    }
    format!("{EXPORT}?{}", q.finish())
}

/// The export options of a query (what `export_path` wrote).
pub fn export_options(query: &str) -> ExportOptions {
    let mut options = ExportOptions::default();
    for (k, v) in query_pairs(query) {
        match k.as_str() {
            "image" => options.images.push(v),
            "all" => options.all = truthy(&v),
            "pinned" => options.pinned = truthy(&v),
            _ => {}
        }
    }
    options
}

/// The import path for `options`.
pub fn import_path(options: &ImportOptions) -> String {
    let mut q = form_urlencoded::Serializer::new(String::new());
    q.append_pair("pin", if options.pin { "true" } else { "false" });
    if let Some(r) = &options.repository {
        q.append_pair("repository", r);
    }
    format!("{IMPORT}?{}", q.finish())
}

/// The import options of a query (what `import_path` wrote; pinning unless told otherwise).
pub fn import_options(query: &str) -> ImportOptions {
    let mut options = ImportOptions::default();
    for (k, v) in query_pairs(query) {
        match k.as_str() {
            "pin" => options.pin = truthy(&v),
            "repository" => options.repository = Some(v),
            _ => {}
        }
    }
    options
}

/// The path that creates a hosted repository.
pub fn repos_path(name: &str) -> String {
    let name: String = form_urlencoded::byte_serialize(name.as_bytes()).collect();
    format!("{REPOS}?name={name}")
}
