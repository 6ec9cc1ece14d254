//! Tag lists by the distribution spec whatever the upstream does: sorted in byte order, `last`
//! and `n` applied by regcache, a `Link` to the next page under the client's own name, the
//! upstream's own pages followed to build the whole list, and the kept copy paging the same way.

use crate::support::daemon::{Daemon, DaemonBuilder};
use crate::support::fake::{Fake, Fault, TagListing};

/// Unsorted, with upper case and digits, so byte order differs from the upstream's order.
const TAGS: [&str; 7] = ["v2", "latest", "V1", "1.10", "1.9", "alpine", "v10"];

fn sorted() -> Vec<String> {
    let mut all: Vec<String> = TAGS.iter().map(|t| t.to_string()).collect();
    all.sort();
    all
}

/// Every page from `first` on, following `Link`: (tags, link) per page.
async fn walk(d: &Daemon, first: &str) -> Vec<(Vec<String>, Option<String>)> {
    let mut pages = Vec::new();
    let mut next = Some(first.to_string());
    while let Some(path) = next.take() {
        assert!(pages.len() < 20, "the pages end");
        let r = d.get(&path).await;
        assert_eq!(r.status, 200, "{path}");
        let v: serde_json::Value = serde_json::from_slice(&r.bytes()).unwrap();
        assert_eq!(v["name"], "org/app");
        let tags = serde_json::from_value(v["tags"].clone()).unwrap();
        let link = r.header("link").map(String::from);
        next = link.as_deref().map(|l| {
            let target = l.strip_prefix('<').and_then(|l| l.split_once(">; rel=\"next\""));
            target.expect("a next link").0.to_string()
        });
        pages.push((tags, link));
    }
    pages
}

async fn upstream(listing: TagListing) -> (Fake, Daemon) {
    let up = Fake::start().await;
    up.set_tags("org/app", &TAGS);
    up.set_tag_listing(listing);
    let d = DaemonBuilder::new().upstream(&up).start().await;
    (up, d)
}

#[tokio::test]
async fn an_upstream_that_ignores_the_query_is_sorted_and_paged_here() {
    let (_up, d) = upstream(TagListing::Ignores).await;
    let pages = walk(&d, "/v2/org/app/tags/list?n=3&ns=docker.io").await;
    let all = sorted();
    assert_eq!(pages.len(), 3);
    assert_eq!(pages[0].0, all[..3]);
    assert_eq!(
        pages[0].1.as_deref(),
        Some(
            format!(
                "</v2/org/app/tags/list?n=3&last={}&ns=docker.io>; rel=\"next\"",
                all[2]
            )
            .as_str()
        )
    );
    assert_eq!(pages[1].0, all[3..6]);
    assert_eq!((pages[2].0.as_slice(), pages[2].1.as_deref()), (&all[6..], None));
    let whole = walk(&d, "/v2/org/app/tags/list").await;
    assert_eq!(
        (&whole[0].0, whole.len()),
        (&all, 1),
        "no n: the whole list, no Link"
    );
}

#[tokio::test]
async fn the_upstreams_own_pages_are_followed() {
    let (up, d) = upstream(TagListing::PagesOf(2)).await;
    let whole = walk(&d, "/v2/org/app/tags/list").await;
    assert_eq!(whole, vec![(sorted(), None)]);
    assert_eq!(up.count("GET", "/tags/list"), 4, "7 tags in pages of 2");
    let pages = walk(&d, "/v2/org/app/tags/list?n=4").await;
    let all = sorted();
    assert_eq!((&pages[0].0[..], &pages[1].0[..]), (&all[..4], &all[4..]));
    assert_eq!(
        up.count("GET", "/tags/list"),
        8,
        "the second page is cut from the list fetched for the first"
    );
}

#[tokio::test]
async fn a_walk_asks_the_upstream_once_and_a_new_walk_again() {
    let (up, d) = upstream(TagListing::Ignores).await;
    let pages = walk(&d, "/v2/org/app/tags/list?n=2").await;
    assert_eq!(pages.len(), 4);
    assert_eq!(
        up.count("GET", "/tags/list"),
        1,
        "one upstream list for four pages"
    );
    up.set_tags("org/app", &["zz-new"]);
    let again = walk(&d, "/v2/org/app/tags/list?n=2").await;
    assert_eq!(
        again,
        vec![(vec!["zz-new".to_string()], None)],
        "a first page is fresh"
    );
    assert_eq!(up.count("GET", "/tags/list"), 2);
}

#[tokio::test]
async fn n_zero_and_last_past_the_end_are_empty() {
    let (_up, d) = upstream(TagListing::Ignores).await;
    let empty: Vec<(Vec<String>, Option<String>)> = vec![(vec![], None)];
    assert_eq!(walk(&d, "/v2/org/app/tags/list?n=0").await, empty);
    assert_eq!(walk(&d, "/v2/org/app/tags/list?last=zzz").await, empty);
    assert_eq!(walk(&d, "/v2/org/app/tags/list?n=2&last=zzz").await, empty);
    let after = walk(&d, "/v2/org/app/tags/list?last=latest").await;
    assert_eq!(after, vec![(vec!["v10".to_string(), "v2".to_string()], None)]);
    let between = walk(&d, "/v2/org/app/tags/list?last=1.95&n=1").await;
    assert_eq!(between[0].0, ["V1"], "last need not be a tag");
}

#[tokio::test]
async fn the_kept_copy_gives_the_same_pages() {
    let (up, d) = upstream(TagListing::PagesOf(3)).await;
    let fresh = walk(&d, "/v2/org/app/tags/list?n=2").await;
    assert_eq!(fresh.len(), 4);
    up.set_fault(Some(Fault::Status(500)));
    assert_eq!(
        walk(&d, "/v2/org/app/tags/list?n=2").await,
        fresh,
        "kept: same pages"
    );
}

#[tokio::test]
async fn too_many_upstream_pages_is_a_clear_error() {
    let up = Fake::start().await;
    let many: Vec<String> = (0..120).map(|i| format!("t{i:03}")).collect();
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    up.set_tags("org/app", &many);
    up.set_tag_listing(TagListing::PagesOf(1));
    let d = DaemonBuilder::new().upstream(&up).start().await;
    let r = d.get("/v2/org/app/tags/list").await;
    assert_eq!(r.status, 502);
    assert!(String::from_utf8_lossy(&r.bytes()).contains("100 pages"));
    assert_eq!(up.count("GET", "/tags/list"), 100, "bounded");
}
