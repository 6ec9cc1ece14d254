//! Tag lists as the distribution spec describes them, whatever the upstream does: the upstream's
//! whole list is fetched (following its own `Link` pages, bounded in pages and bytes), kept for
//! outages, then sorted in byte order and paged here with `last` (tags strictly after it) and `n`
//! (at most n; `n=0` is an empty list). A fresh answer and the kept copy page the same way, so a
//! client walking pages never notices which one served it. A walk's later pages (`last` set) are
//! cut from the list fetched for its first page (held for 30 s), so walking k pages asks the
//! upstream once. Distribution 2.x neither sorts nor
//! honours `last`, and registries page by default; neither shows through the mirror.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::LINK;
use moka::sync::Cache;

use super::listing::fetch_json;
use super::{At, Mirror};
use crate::oci::RepoName;
use crate::registry::{CacheResult, RegistryError, Subject, TagPage};
use crate::upstream::UpstreamError;

/// The most bytes of tag-list pages read from the upstream for one list, all pages together.
const MAX_LIST_BYTES: usize = 16 * 1024 * 1024;
/// The most upstream pages followed for one list.
const MAX_PAGES: usize = 100;
const TAGS_DOC: &str = "tags-list";
/// How long a client walking the pages of a list reads the list fetched for its first page.
const WALK_WINDOW: Duration = Duration::from_secs(30);
/// The most tag bytes held for page walks, all lists together.
const WALK_BYTES: u64 = 64 * 1024 * 1024;

/// Which page of a tag list a client asked for.
#[derive(Debug, Clone, Default)]
pub struct Page {
    pub n: Option<usize>,
    pub last: Option<String>,
}

/// A tag list's JSON shape: the repository name as the upstream names it, and its tags.
#[derive(Clone, serde::Deserialize, serde::Serialize)]
pub(super) struct TagList {
    name: String,
    #[serde(default, deserialize_with = "null_is_empty")]
    tags: Vec<String>,
}

/// Distribution answers `"tags": null` for a repository without tags.
fn null_is_empty<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    let v: Option<Vec<String>> = serde::Deserialize::deserialize(d)?;
    Ok(v.unwrap_or_default())
}

/// Whole lists fetched lately, by (upstream host, repository): a client walking pages (`last`
/// set) reads the list its first page was cut from, so a walk of k pages is one upstream
/// list, not k, and sees one consistent list. A first page always asks the upstream.
pub(super) type RecentLists = Cache<(String, RepoName), Arc<TagList>>;

pub(super) fn recent_lists() -> RecentLists {
    Cache::builder()
        .max_capacity(WALK_BYTES)
        .weigher(|_, list: &Arc<TagList>| {
            let bytes: usize = list.tags.iter().map(|t| t.len() + 8).sum();
            u32::try_from(bytes).unwrap_or(u32::MAX)
        })
        .time_to_live(WALK_WINDOW)
        .build()
}

impl Mirror {
    pub(crate) async fn tags(&self, at: &At<'_>, page: &Page) -> Result<TagPage, RegistryError> {
        let host = at.upstream.host();
        let key = (host.to_string(), at.repo.clone());
        let walking = page.last.is_some().then(|| self.lists.get(&key)).flatten();
        let (list, result) = match walking {
            Some(list) => (list, CacheResult::Hit),
            None => self.fetch_list(at, key).await?,
        };
        let (body, more) = paginate(&list, page)?;
        let next = more.map(|after| {
            vec![
                ("n".to_string(), page.n.unwrap_or(0).to_string()),
                ("last".to_string(), after),
            ]
        });
        Ok(TagPage { body, next, result })
    }

    /// The upstream's whole list, kept for outages and for page walks; the kept copy when the
    /// upstream fails in a way that allows it.
    async fn fetch_list(
        &self,
        at: &At<'_>,
        key: (String, RepoName),
    ) -> Result<(Arc<TagList>, CacheResult), RegistryError> {
        let host = at.upstream.host();
        Ok(match whole_list(at).await {
            Ok(list) => {
                let body = serde_json::to_vec(&list).map_err(|e| RegistryError::Internal(e.to_string()))?;
                self.cache.put_doc(host, at.repo, TAGS_DOC, &body).await?;
                let list = Arc::new(list);
                self.lists.insert(key, list.clone());
                (list, CacheResult::Pass)
            }
            Err(e) => {
                let kept = match e.kept_copy_allowed() {
                    true => self.cache.doc(host, at.repo, TAGS_DOC).await?,
                    false => None,
                };
                let Some(kept) = kept else {
                    return Err(e);
                };
                tracing::debug!(repo = %at.repo, error = %e, "serving the kept tag list");
                let mut list: TagList = serde_json::from_slice(&kept)
                    .map_err(|e| RegistryError::Internal(format!("kept tag list is not JSON: {e}")))?;
                // A copy kept before lists were sorted here is sorted now.
                list.tags.sort();
                list.tags.dedup();
                (Arc::new(list), CacheResult::Stale)
            }
        })
    }
}

/// The upstream's whole tag list: its first page and every page its `Link` headers name, merged,
/// sorted and without duplicates.
async fn whole_list(at: &At<'_>) -> Result<TagList, RegistryError> {
    let bad = |reason: String| RegistryError::Upstream {
        subject: Subject::Repository,
        source: UpstreamError::Protocol {
            upstream: at.upstream.host().to_string(),
            reason,
        },
    };
    let mut tail = "tags/list".to_string();
    let mut budget = MAX_LIST_BYTES;
    let mut whole: Option<TagList> = None;
    for _ in 0..MAX_PAGES {
        let (headers, body) = fetch_json(at, &tail, Subject::Repository, budget)
            .await?
            .ok_or_else(|| bad(format!("tag list over {MAX_LIST_BYTES} bytes")))?;
        budget -= body.len();
        let page: TagList =
            serde_json::from_slice(&body).map_err(|e| bad(format!("tag list is not JSON: {e}")))?;
        match whole.as_mut() {
            Some(w) => w.tags.extend(page.tags),
            None => whole = Some(page),
        }
        let next = headers
            .get_all(LINK)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find_map(next_query);
        match next {
            Some(q) => tail = format!("tags/list?{q}"),
            None => {
                let mut list = whole.expect("at least one page was read");
                list.tags.sort();
                list.tags.dedup();
                return Ok(list);
            }
        }
    }
    Err(bad(format!("tag list longer than {MAX_PAGES} pages")))
}

/// `<…/tags/list?n=2&last=b>; rel="next"` → `n=2&last=b` (without `ns`, which is ours).
fn next_query(link: &str) -> Option<String> {
    let (target, params) = link.split_once('>')?;
    if !params.split(';').any(|p| is_rel_next(p.trim())) {
        return None;
    }
    let target = target.trim().strip_prefix('<')?;
    let query = target.split_once('?').map(|(_, q)| q).unwrap_or("");
    let mut q = form_urlencoded::Serializer::new(String::new());
    for (k, v) in form_urlencoded::parse(query.as_bytes()).filter(|(k, _)| k != "ns") {
        q.append_pair(&k, &v);
    }
    Some(q.finish())
}

fn is_rel_next(param: &str) -> bool {
    param
        .strip_prefix("rel=")
        .map(|v| v.trim_matches('"'))
        .is_some_and(|v| v.split_ascii_whitespace().any(|r| r.eq_ignore_ascii_case("next")))
}

/// One page of a whole (sorted) tag list, and the last tag of the page when more follow.
fn paginate(list: &TagList, page: &Page) -> Result<(Bytes, Option<String>), RegistryError> {
    let mut tags = list.tags.as_slice();
    if let Some(last) = page.last.as_deref() {
        tags = &tags[tags.partition_point(|t| t.as_str() <= last)..];
    }
    let more = match page.n {
        Some(n) if tags.len() > n => {
            tags = &tags[..n];
            tags.last().cloned()
        }
        _ => None,
    };
    #[derive(serde::Serialize)]
    struct Out<'a> {
        name: &'a str,
        tags: &'a [String],
    }
    let out = Out {
        name: &list.name,
        tags,
    };
    let body = serde_json::to_vec(&out).map_err(|e| RegistryError::Internal(e.to_string()))?;
    Ok((Bytes::from(body), more))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A whole list as `whole_list` makes it: sorted, without duplicates.
    fn list(tags: &[&str]) -> TagList {
        let mut tags: Vec<String> = tags.iter().map(|t| t.to_string()).collect();
        tags.sort();
        tags.dedup();
        TagList {
            name: "org/app".into(),
            tags,
        }
    }

    fn tags_of(body: &Bytes) -> Vec<String> {
        serde_json::from_slice::<TagList>(body).unwrap().tags
    }

    #[test]
    fn pages_are_sorted_bytewise_and_start_after_last() {
        let page = |n, last: Option<&str>| Page {
            n,
            last: last.map(String::from),
        };
        let all = ["b", "B", "a", "10", "9", "a"];
        let (body, more) = paginate(&list(&all), &page(Some(2), None)).unwrap();
        assert_eq!(
            (tags_of(&body), more.as_deref()),
            (vec!["10".into(), "9".into()], Some("9"))
        );
        let (body, more) = paginate(&list(&all), &page(Some(2), Some("9"))).unwrap();
        assert_eq!(
            (tags_of(&body), more.as_deref()),
            (vec!["B".into(), "a".into()], Some("a"))
        );
        let (body, more) = paginate(&list(&all), &page(Some(2), Some("a"))).unwrap();
        assert_eq!((tags_of(&body), more), (vec!["b".into()], None));
        let (body, more) = paginate(&list(&all), &page(Some(0), None)).unwrap();
        assert_eq!((tags_of(&body), more), (Vec::<String>::new(), None));
        let (body, more) = paginate(&list(&all), &page(None, Some("zzz"))).unwrap();
        assert_eq!((tags_of(&body), more), (Vec::<String>::new(), None));
        let (body, more) = paginate(&list(&all), &page(None, Some("aa"))).unwrap();
        assert_eq!((tags_of(&body), more), (vec!["b".into()], None));
    }

    #[test]
    fn only_the_next_link_is_followed() {
        let q = next_query("</v2/org/app/tags/list?last=b&n=2&ns=x>; rel=\"next\"");
        assert_eq!(q.as_deref(), Some("last=b&n=2"));
        let q = next_query("<https://r.example/v2/a/tags/list?n=50&last=c%2Bd>; rel=next");
        assert_eq!(q.as_deref(), Some("n=50&last=c%2Bd"));
        assert_eq!(next_query("</v2/a/tags/list?last=b>; rel=\"prev\""), None);
        assert_eq!(next_query("garbage"), None);
    }

    #[test]
    fn null_tags_read_as_none() {
        let l: TagList = serde_json::from_slice(br#"{"name":"a","tags":null}"#).unwrap();
        assert!(l.tags.is_empty());
    }
}
