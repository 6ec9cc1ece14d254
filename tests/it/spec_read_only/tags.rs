//! The discovery workflow's tag-list checks (`03_discovery_test.go`), with what the spec says
//! of lists: every tag in lexical order, `n` gives exactly n tags unless fewer remain, `last`
//! starts strictly after that tag, `n=0` is an empty list without `Link`, and a `Link` with
//! `rel="next"` leads to the rest.

use super::{assert_oci_error, assert_unavailable, Phase, REPO, TAGS, UNKNOWN_REPO};
use crate::support::daemon::Daemon;

pub(super) async fn run(d: &Daemon, phase: Phase) {
    let all = whole_list(d, phase).await;
    limited_by_n(d, &all, phase).await;
    started_after_last(d, &all, phase).await;
    walked_by_link(d, &all, phase).await;
    edges(d, &all, phase).await;
    unknown_repository(d, phase).await;
}

/// One page of `REPO`'s list: 200, `{"name","tags"}` as JSON; its tags and its next-page target.
async fn page(d: &Daemon, path: &str, what: &str) -> (Vec<String>, Option<String>) {
    let r = d.get(path).await;
    assert_eq!(r.status, 200, "{what}: {path}");
    assert_eq!(
        r.header("content-type"),
        Some("application/json"),
        "{what}: {path}"
    );
    let v: serde_json::Value = serde_json::from_slice(&r.bytes()).expect("a JSON tag list");
    assert_eq!(v["name"], REPO, "{what}: {path}");
    let tags = serde_json::from_value(v["tags"].clone()).expect("a list of tags");
    let next = r.header("link").map(|link| {
        let (target, params) = link
            .strip_prefix('<')
            .and_then(|l| l.split_once('>'))
            .unwrap_or_else(|| panic!("{what}: {path}: Link {link}"));
        assert_eq!(params.trim(), "; rel=\"next\"", "{what}: {path}");
        assert!(
            target.starts_with(&format!("/v2/{REPO}/tags/list?")),
            "{what}: {target}"
        );
        target.to_string()
    });
    (tags, next)
}

fn list_path(query: &str) -> String {
    format!("/v2/{REPO}/tags/list{query}")
}

/// In lexical order: byte order, or case-insensitive order, the two that the suite's sort check
/// accepts (regcache gives byte order).
fn is_lexical(tags: &[String]) -> bool {
    tags.windows(2).all(|w| w[0] < w[1])
        || tags
            .windows(2)
            .all(|w| w[0].to_lowercase() <= w[1].to_lowercase())
}

/// The whole list: 200, every tag once, in lexical order, no `Link`.
async fn whole_list(d: &Daemon, phase: Phase) -> Vec<String> {
    let what = format!("{phase:?} whole list");
    let (tags, next) = page(d, &list_path(""), &what).await;
    let mut got = tags.clone();
    got.sort();
    let mut want: Vec<String> = TAGS.iter().map(|t| t.to_string()).collect();
    want.sort();
    assert_eq!(got, want, "{what}: every tag, once");
    assert!(is_lexical(&tags), "{what}: {tags:?}");
    assert_eq!(next, None, "{what}");
    tags
}

/// `n` (the suite asks for half the tags): exactly the first n tags, and a `Link` to the rest.
async fn limited_by_n(d: &Daemon, all: &[String], phase: Phase) {
    let n = all.len() / 2;
    let what = format!("{phase:?} n={n}");
    let (tags, next) = page(d, &list_path(&format!("?n={n}")), &what).await;
    assert_eq!(tags, all[..n], "{what}");
    let next = next.unwrap_or_else(|| panic!("{what}: more tags remain, so a Link"));
    let (rest, after) = page(d, &next, &format!("{what}, next")).await;
    assert_eq!((&rest[..], after), (&all[n..], None), "{what}, next: {next}");
}

/// `last` (the suite asks `n` tags after the n-th): at most n tags, strictly after `last`, in
/// the same order as the whole list; without `n`, every tag after it.
async fn started_after_last(d: &Daemon, all: &[String], phase: Phase) {
    let n = all.len() / 2;
    let last = &all[n - 1];
    let what = format!("{phase:?} n={n}&last={last}");
    let (tags, _) = page(d, &list_path(&format!("?n={n}&last={last}")), &what).await;
    assert!(tags.len() <= n && !tags.contains(last), "{what}: {tags:?}");
    assert_eq!(tags, all[n..], "{what}");
    for (i, last) in all.iter().enumerate() {
        let what = format!("{phase:?} last={last}");
        let (tags, next) = page(d, &list_path(&format!("?last={last}")), &what).await;
        assert_eq!((&tags[..], next), (&all[i + 1..], None), "{what}");
    }
}

/// Following `Link` from `n=3` pages through every tag once, in order; the last page has none.
async fn walked_by_link(d: &Daemon, all: &[String], phase: Phase) {
    let what = format!("{phase:?} walk n=3");
    let mut walked = Vec::new();
    let mut next = Some(list_path("?n=3"));
    while let Some(path) = next.take() {
        assert!(walked.len() < all.len() + 3, "{what}: the pages end");
        let (tags, link) = page(d, &path, &what).await;
        assert!(tags.len() == 3 || link.is_none(), "{what}: {path}: {tags:?}");
        walked.extend(tags);
        next = link;
    }
    assert_eq!(walked, all, "{what}");
}

/// `n=0` is an empty list without `Link`; `n` past the end, and `last` the last tag, no `Link`.
async fn edges(d: &Daemon, all: &[String], phase: Phase) {
    let last = &all[all.len() - 1];
    let empty: (Vec<String>, Option<String>) = (vec![], None);
    for (query, want) in [
        ("?n=0".to_string(), empty.clone()),
        (format!("?n={}", all.len() + 10), (all.to_vec(), None)),
        (format!("?n={}", all.len()), (all.to_vec(), None)),
        (format!("?n=2&last={last}"), empty),
    ] {
        let what = format!("{phase:?} {query}");
        assert_eq!(page(d, &list_path(&query), &what).await, want, "{what}");
    }
}

/// A repository the registry does not have: 404 `NAME_UNKNOWN`. Its absence is not kept, so
/// while the upstream is down regcache cannot tell.
async fn unknown_repository(d: &Daemon, phase: Phase) {
    let path = format!("/v2/{UNKNOWN_REPO}/tags/list");
    let r = d.get(&path).await;
    let what = format!("{phase:?} {path}");
    match phase {
        Phase::Live => assert_oci_error(&r, 404, &["NAME_UNKNOWN"], &what),
        Phase::UpstreamDown => assert_unavailable(&r, &what),
    }
}
