//! Content discovery (spec "Listing Tags" and "Listing Referrers"): the tag list holds every
//! pushed tag in lexical order, `n` and `last` page through exactly that list (following `Link`
//! when the registry sends one), `n=0` is empty without `Link`; a manifest with `subject` and
//! `artifactType` is accepted and acknowledged with `OCI-Subject`, the referrers index lists it
//! with its artifact type and annotations, the `artifactType` filter narrows it (or the
//! registry says it did not apply it), and a manifest nobody refers to has an empty index, not
//! a 404.

use super::super::oci_push::{next_link, Answer};
use super::fixtures::{self, IMAGE_INDEX};
use super::{expect_header, expect_status, fail, Report, Run, Target};

/// Pushed in this order, not lexical, so a list in creation order shows.
const TAGS: [&str; 5] = [
    "spec-list-c",
    "spec-list-a",
    "spec-list-e",
    "spec-list-b",
    "spec-list-d",
];

/// The tag list: contents, order, `n`/`last`/`Link` pagination, `n=0`.
pub async fn tag_listing(t: &Target) -> Report {
    let mut run = Run::new(t);
    let repo = t.repo.clone();
    let image = fixtures::image("discovery/tags", 200);
    for tag in TAGS {
        run.push_manifest("setup: push an image under five tags", &repo, &image, tag)
            .await;
    }

    let check = "GET /tags/list: 200, name is the repository, every pushed tag listed";
    let listed = run.c.tags_list(&repo, None, None).await;
    expect_status(check, &listed, &[200]);
    let full = tags_of(check, &listed, &repo);
    if let Some(missing) = TAGS.iter().find(|t| !full.iter().any(|f| f == *t)) {
        fail(check, &format!("tag {missing} listed"), &listed);
    }
    run.passed(check);

    let check = "GET /tags/list: tags in lexical order";
    if t.sorts_tags {
        if !full.windows(2).all(|w| w[0] < w[1]) {
            fail(check, "tags sorted and unique", &listed);
        }
        run.passed(check);
    } else {
        run.skipped(check, "sorts_tags");
    }

    let paging = [
        "GET /tags/list?n=2: the first 2 tags (fewer only with a Link rel=\"next\")",
        "GET /tags/list?n=2&last=<tag>: the 2 tags after <tag>",
        "GET /tags/list?last=<tag>: tags after <tag> only",
        "paging with n=2 (Link or last) walks the whole list exactly once",
        "GET /tags/list?n=0: 200, empty list, no Link",
    ];
    if !t.paginates_tags {
        for check in paging {
            run.skipped(check, "paginates_tags");
        }
        return run.report;
    }
    let first = run.c.tags_list(&repo, Some(2), None).await;
    expect_status(paging[0], &first, &[200]);
    let page = tags_of(paging[0], &first, &repo);
    let short_ok = page.len() < 2 && first.header("link").is_some();
    if (page.len() != 2 && !short_ok) || page[..] != full[..page.len()] {
        fail(paging[0], &format!("the first 2 of {full:?}"), &first);
    }
    run.passed(paging[0]);

    let after = run.c.tags_list(&repo, Some(2), Some(&full[1])).await;
    expect_status(paging[1], &after, &[200]);
    if tags_of(paging[1], &after, &repo) != full[2..4] {
        fail(paging[1], &format!("{:?}", &full[2..4]), &after);
    }
    run.passed(paging[1]);

    let rest = run.c.tags_list(&repo, None, Some(&full[0])).await;
    expect_status(paging[2], &rest, &[200]);
    let page = tags_of(paging[2], &rest, &repo);
    // Without `n` the registry may still page; what it returns must start right after `last`.
    if page.is_empty() || page[..] != full[1..1 + page.len().min(full.len() - 1)] {
        fail(paging[2], &format!("a prefix of {:?}", &full[1..]), &rest);
    }
    run.passed(paging[2]);

    walk_pages(&mut run, paging[3], &repo, &full).await;

    let zero = run.c.tags_list(&repo, Some(0), None).await;
    expect_status(paging[4], &zero, &[200]);
    if !tags_of(paging[4], &zero, &repo).is_empty() || zero.header("link").is_some() {
        fail(paging[4], "an empty tag list and no Link header", &zero);
    }
    run.passed(paging[4]);
    run.report
}

/// Pages through the list two at a time, by `Link` when sent (it MUST then be RFC 5988 with
/// `rel="next"`) and by `last` otherwise, and compares the pages joined with `full`.
async fn walk_pages(run: &mut Run<'_>, check: &str, repo: &str, full: &[String]) {
    let mut walked: Vec<String> = Vec::new();
    let mut answer = run.c.tags_list(repo, Some(2), None).await;
    let mut links = 0;
    loop {
        expect_status(check, &answer, &[200]);
        let page = tags_of(check, &answer, repo);
        if page.len() > 2 || walked.len() > full.len() {
            fail(
                check,
                &format!("pages of at most 2 tags adding up to {full:?}"),
                &answer,
            );
        }
        walked.extend(page.iter().cloned());
        if let Some(link) = answer.header("link") {
            let next = next_link(&answer.url, link)
                .unwrap_or_else(|| fail(check, "a Link header with rel=\"next\"", &answer));
            links += 1;
            answer = run.c.fetch(hyper::Method::GET, &next, None).await;
        } else if page.len() == 2 {
            answer = run
                .c
                .tags_list(repo, Some(2), walked.last().map(String::as_str))
                .await;
        } else {
            break;
        }
    }
    if walked != full {
        fail(
            check,
            &format!("pages joined = {full:?}, got {walked:?}"),
            &answer,
        );
    }
    run.passed(&format!("{check} ({links} Link headers followed)"));
}

/// The `tags` of a tag list answer whose `name` is `repo`; `null` counts as empty.
fn tags_of(check: &str, answer: &Answer, repo: &str) -> Vec<String> {
    let body = answer
        .json()
        .unwrap_or_else(|| fail(check, "a JSON tag list", answer));
    if body.get("name").and_then(|n| n.as_str()) != Some(repo) {
        fail(check, &format!("\"name\": \"{repo}\""), answer);
    }
    match body.get("tags") {
        None | Some(serde_json::Value::Null) => Vec::new(),
        Some(serde_json::Value::Array(tags)) => tags
            .iter()
            .map(|t| t.as_str().map(str::to_string))
            .collect::<Option<Vec<_>>>()
            .unwrap_or_else(|| fail(check, "tags as strings", answer)),
        Some(_) => fail(check, "\"tags\" an array", answer),
    }
}

const SBOM: &str = "application/vnd.example.sbom.v1";
const SIGNATURE: &str = "application/vnd.example.signature.v1";

/// Manifests with `subject`: accepted, acknowledged, listed and filtered by the referrers API.
pub async fn referrers(t: &Target) -> Report {
    let mut run = Run::new(t);
    let repo = t.repo.clone();
    let subject = fixtures::image("discovery/subject", 300);
    run.push_manifest("setup: push the subject image", &repo, &subject, "spec-subject")
        .await;
    let sbom = fixtures::artifact(SBOM, &subject, "an sbom");
    let signature = fixtures::artifact(SIGNATURE, &subject, "a signature");

    let check = "PUT of an artifact manifest with subject and artifactType: 201";
    let acknowledge = "PUT of a manifest with subject: OCI-Subject: <subject digest>";
    for artifact in [&sbom, &signature] {
        let put = run.push_manifest(check, &repo, artifact, &artifact.digest).await;
        if t.supports_referrers {
            expect_header(acknowledge, &put, "oci-subject", &subject.digest);
        }
    }
    run.passed(check);
    let listed =
        "GET /referrers/<subject>: 200, an OCI index listing each referrer with artifactType and annotations";
    let filtered = "GET /referrers/<subject>?artifactType=: only that type, or OCI-Filters-Applied absent";
    let empty = "GET /referrers/<digest nobody refers to>: 200 with an empty index, not 404";
    if !t.supports_referrers {
        for check in [acknowledge, listed, filtered, empty] {
            run.skipped(check, "supports_referrers");
        }
        return run.report;
    }
    run.passed(acknowledge);

    let all = run.c.referrers(&repo, &subject.digest, None).await;
    let entries = index_entries(listed, &all);
    for artifact in [&sbom, &signature] {
        let entry = entries
            .iter()
            .find(|e| e["digest"] == artifact.digest.as_str())
            .unwrap_or_else(|| fail(listed, &format!("an entry for {}", artifact.digest), &all));
        let body: serde_json::Value = serde_json::from_slice(&artifact.body).expect("artifact json");
        let expected = [
            ("mediaType", body["mediaType"].clone()),
            ("size", artifact.body.len().into()),
            ("artifactType", body["artifactType"].clone()),
            ("annotations", body["annotations"].clone()),
        ];
        for (field, value) in expected {
            if entry[field] != value {
                fail(
                    listed,
                    &format!("{} with {field} = {value}", artifact.digest),
                    &all,
                );
            }
        }
    }
    run.passed(listed);

    let narrowed = run.c.referrers(&repo, &subject.digest, Some(SBOM)).await;
    let entries = index_entries(filtered, &narrowed);
    let applied = narrowed
        .header("oci-filters-applied")
        .is_some_and(|h| h.split(',').any(|f| f.trim() == "artifactType"));
    let has_sbom = entries.iter().any(|e| e["digest"] == sbom.digest.as_str());
    let only_sbom = entries.iter().all(|e| e["artifactType"] == SBOM);
    if !has_sbom || (applied && !only_sbom) {
        fail(
            filtered,
            "the sbom, and only it when OCI-Filters-Applied names artifactType",
            &narrowed,
        );
    }
    run.passed(&format!("{filtered} (filter applied by the registry: {applied})"));

    let none = run.c.referrers(&repo, &sbom.digest, None).await;
    if !index_entries(empty, &none).is_empty() {
        fail(empty, "no referrers", &none);
    }
    run.passed(empty);
    run.report
}

/// A referrers answer: 200, the index media type, and its `manifests`.
fn index_entries(check: &str, answer: &Answer) -> Vec<serde_json::Value> {
    expect_status(check, answer, &[200]);
    let content_type = answer.header("content-type").unwrap_or_default();
    if content_type.split(';').next().map(str::trim) != Some(IMAGE_INDEX) {
        fail(check, &format!("Content-Type: {IMAGE_INDEX}"), answer);
    }
    let body = answer
        .json()
        .unwrap_or_else(|| fail(check, "a JSON index", answer));
    if body["schemaVersion"] != 2 || body["mediaType"] != IMAGE_INDEX {
        fail(check, "schemaVersion 2 and the index mediaType", answer);
    }
    body["manifests"]
        .as_array()
        .cloned()
        .unwrap_or_else(|| fail(check, "a manifests array", answer))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(content_type: &str, body: &str) -> Answer {
        let mut headers = hyper::HeaderMap::new();
        headers.insert("content-type", content_type.parse().expect("header"));
        Answer {
            method: hyper::Method::GET,
            url: "http://h/v2/a/b/x".to_string(),
            status: 200,
            headers,
            body: bytes::Bytes::from(body.to_string()),
        }
    }

    #[test]
    fn tag_lists_read_null_as_empty() {
        let listed = answer("application/json", r#"{"name":"a/b","tags":["x","y"]}"#);
        assert_eq!(tags_of("c", &listed, "a/b"), ["x", "y"]);
        let none = answer("application/json", r#"{"name":"a/b","tags":null}"#);
        assert!(tags_of("c", &none, "a/b").is_empty());
    }

    #[test]
    #[should_panic(expected = "\"name\": \"a/c\"")]
    fn a_tag_list_of_another_repository_fails() {
        tags_of(
            "c",
            &answer("application/json", r#"{"name":"a/b","tags":[]}"#),
            "a/c",
        );
    }

    #[test]
    fn referrers_index_may_carry_content_type_parameters() {
        let body = r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{"digest":"d"}]}"#;
        let index = answer("application/vnd.oci.image.index.v1+json; charset=utf-8", body);
        assert_eq!(index_entries("c", &index).len(), 1);
    }

    #[test]
    #[should_panic(expected = "Content-Type: application/vnd.oci.image.index.v1+json")]
    fn a_referrers_answer_must_be_an_index() {
        let body =
            r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}"#;
        index_entries("c", &answer("application/json", body));
    }
}
