//! The push client's URL handling: references resolved as RFC 3986 says, query parameters
//! appended, `Link` headers read, origins compared.

use super::*;

#[test]
fn resolves_references_like_rfc_3986() {
    let from = "http://h:1/v2/a/b/blobs/uploads/?x=1";
    assert_eq!(resolve(from, "https://o/p"), "https://o/p");
    assert_eq!(resolve(from, "//o:2/p"), "http://o:2/p");
    assert_eq!(
        resolve(from, "/v2/a/b/blobs/uploads/u?s=2"),
        "http://h:1/v2/a/b/blobs/uploads/u?s=2"
    );
    assert_eq!(resolve(from, "u1?s=2"), "http://h:1/v2/a/b/blobs/uploads/u1?s=2");
    assert_eq!(resolve(from, "../sha256:x"), "http://h:1/v2/a/b/blobs/sha256:x");
    assert_eq!(resolve(from, "?s=3"), "http://h:1/v2/a/b/blobs/uploads/?s=3");
}

#[test]
fn origins() {
    assert_eq!(origin("http://h:1/v2/x?y"), "http://h:1");
    assert_eq!(origin("https://s3.example"), "https://s3.example");
}

#[test]
fn finds_the_next_link() {
    let from = "http://h:1/v2/a/tags/list?n=2";
    let link = r#"</v2/a/tags/list?n=2&last=b>; rel="next""#;
    assert_eq!(
        next_link(from, link).as_deref(),
        Some("http://h:1/v2/a/tags/list?n=2&last=b")
    );
    assert_eq!(next_link(from, r#"</x>; rel="prev""#), None);
}

#[test]
fn appends_query_parameters() {
    assert_eq!(
        with_query("http://h/u", "digest", "sha256:ab"),
        "http://h/u?digest=sha256%3Aab"
    );
    assert_eq!(
        with_query("http://h/u?s=1", "from", "a/b"),
        "http://h/u?s=1&from=a%2Fb"
    );
}
