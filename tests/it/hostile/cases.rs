//! The table of hostile requests: raw HTTP/1 bytes and the answers allowed for each. An `expect`
//! is a `|`-separated list of exact statuses (`400`), classes (`4xx`) and `closed` (the
//! connection closed before a status line, what hyper does with some malformed framing). No case
//! may be answered with a 5xx (except where a case names one) or leave the client waiting.
//!
//! Most cases fail in routing or in hyper's parser and need no upstream. Those marked
//! `Needs::Blob` read a known blob (absurd `Range`s) or reach the default upstream, so against a
//! live daemon they run only when `REGCACHE_HOSTILE_BLOB` names content it can serve.

mod protocol;

use protocol::{bodies_and_upgrades, framing, headers, methods_and_forms};

/// What a case needs besides the listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Needs {
    Nothing,
    /// A blob the daemon serves (`Target::blob`); also: the default upstream answers.
    Blob,
}

pub struct Case {
    pub name: String,
    /// The request as written to the socket (head, and any body the head implies).
    pub head: Vec<u8>,
    /// Filler bytes streamed after `head` (a huge body is not built in memory).
    pub body_len: u64,
    pub expect: &'static str,
    /// Text the answer must contain (an OCI error code).
    pub contains: Option<&'static str>,
    pub needs: Needs,
}

/// Where the cases are aimed.
pub struct Target {
    /// `host:port` of the registry listener, also sent as `Host`.
    pub addr: String,
    /// `(repository, digest)` of a blob the daemon serves.
    pub blob: Option<(String, String)>,
    /// An address no request may make the daemon connect to (checked in-process).
    pub trap: String,
}

/// A path that routing refuses (an uppercase name): the answer is 400 whatever the framing.
const REFUSED: &str = "/v2/Hostile/manifests/latest";

fn case(name: impl Into<String>, head: Vec<u8>, expect: &'static str) -> Case {
    Case {
        name: name.into(),
        head,
        body_len: 0,
        expect,
        contains: None,
        needs: Needs::Nothing,
    }
}

impl Case {
    fn contains(mut self, text: &'static str) -> Case {
        self.contains = Some(text);
        self
    }

    fn needs_blob(mut self) -> Case {
        self.needs = Needs::Blob;
        self
    }

    fn body(mut self, len: u64) -> Case {
        self.body_len = len;
        self
    }
}

/// `<method> <target> HTTP/1.1` with `Host`, `Connection: close` and `extra` header lines.
fn request(t: &Target, method: &str, target: &str, extra: &str) -> Vec<u8> {
    format!(
        "{method} {target} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n{extra}\r\n",
        t.addr
    )
    .into_bytes()
}

fn get(t: &Target, target: &str) -> Vec<u8> {
    request(t, "GET", target, "")
}

/// Every case, in table order.
pub fn all(t: &Target) -> Vec<Case> {
    let mut all = Vec::new();
    all.extend(paths(t));
    all.extend(names_and_references(t));
    all.extend(queries(t));
    all.extend(ranges(t));
    all.extend(headers(t));
    all.extend(framing(t));
    all.extend(bodies_and_upgrades(t));
    all.extend(methods_and_forms(t));
    all
}

fn paths(t: &Target) -> Vec<Case> {
    let raw = |name: &str, path: &[u8]| {
        let mut head = b"GET ".to_vec();
        head.extend_from_slice(path);
        head.extend_from_slice(
            format!(" HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n", t.addr).as_bytes(),
        );
        case(name, head, "4xx|closed")
    };
    vec![
        case(
            "dot-dot traversal",
            get(t, "/v2/../../etc/passwd/manifests/x"),
            "400",
        ),
        case(
            "encoded dot-dot",
            get(t, "/v2/%2e%2e/%2e%2e/etc/passwd/manifests/x"),
            "400",
        ),
        case(
            "encoded slash in name",
            get(t, "/v2/library%2Falpine/manifests/latest"),
            "400",
        ),
        case(
            "encoded slashes in digest",
            get(t, "/v2/x/blobs/..%2F..%2Fetc%2Fpasswd"),
            "400",
        ),
        case("dot-dot as tag", get(t, "/v2/x/manifests/.."), "404"),
        case("encoded dot-dot as tag", get(t, "/v2/x/manifests/%2e%2e"), "404"),
        case(
            "backslash traversal",
            get(t, "/v2/..%5C..%5Cetc/manifests/x"),
            "400",
        ),
        case("encoded NUL in name", get(t, "/v2/a%00b/manifests/x"), "400"),
        case("encoded NUL in tag", get(t, "/v2/a/manifests/x%00"), "404"),
        raw("raw NUL in path", b"/v2/a\0b/manifests/x"),
        raw("raw tab in path", b"/v2/a\tb/manifests/x"),
        raw("raw DEL in path", b"/v2/a\x7fb/manifests/x"),
        raw("raw escape in path", b"/v2/a\x1b[2Jb/manifests/x"),
        raw("raw UTF-8 in path", "/v2/ä/manifests/x".as_bytes()),
        raw("raw CR in path", b"/v2/a\rb/manifests/x"),
        case("no /v2 prefix", get(t, "/etc/passwd"), "404"),
        case("empty name", get(t, "/v2//manifests/latest"), "400"),
        case("catalog", get(t, "/v2/_catalog?n=99999999999"), "405"),
        case("uploads", get(t, "/v2/x/blobs/uploads/"), "405"),
        case("asterisk-form", request(t, "GET", "*", ""), "4xx|closed"),
        case(
            "path of 100 KiB",
            get(t, &format!("/v2/{}/manifests/x", "a/".repeat(50_000))),
            "4xx|closed",
        ),
    ]
}

fn names_and_references(t: &Target) -> Vec<Case> {
    let hex = "0123456789abcdef".repeat(4);
    let blob = |d: &str| get(t, &format!("/v2/x/blobs/{d}"));
    let manifest = |r: &str| get(t, &format!("/v2/x/manifests/{r}"));
    vec![
        case(
            "name over 255",
            get(t, &format!("/v2/{}/manifests/x", "ab/".repeat(90))),
            "400",
        ),
        case(
            "one component of 300",
            get(t, &format!("/v2/{}/manifests/x", "a".repeat(300))),
            "400",
        ),
        case(
            "component over 128",
            get(t, &format!("/v2/x/{}/manifests/none", "a".repeat(129))),
            "404",
        )
        .needs_blob(),
        case("tag of 129", manifest(&"t".repeat(129)), "404").contains("MANIFEST_UNKNOWN"),
        case("tag of 10000", manifest(&"t".repeat(10_000)), "404"),
        case(
            "sha256 with 63 hex",
            blob(&format!("sha256:{}", &hex[..63])),
            "400",
        )
        .contains("DIGEST_INVALID"),
        case("sha256 with 65 hex", blob(&format!("sha256:{hex}0")), "400"),
        case(
            "sha256 with 10000 hex",
            blob(&format!("sha256:{}", "a".repeat(10_000))),
            "400",
        ),
        case(
            "uppercase hex",
            blob(&format!("sha256:{}", hex.to_uppercase())),
            "400",
        ),
        case("non-hex", blob(&format!("sha256:{}", "g".repeat(64))), "400"),
        case("md5", blob("md5:d41d8cd98f00b204e9800998ecf8427e"), "400"),
        case("unknown algorithm", blob(&format!("blake3:{hex}")), "400").contains("DIGEST_INVALID"),
        case("sha512 with 64 hex", blob(&format!("sha512:{hex}")), "400"),
        case("empty digest", blob("sha256:"), "400"),
        case("only a colon", blob(":"), "400"),
        case("encoded colon", blob(&format!("sha256%3A{}", &hex[..63])), "400"),
        case(
            "digest manifest, bad hex",
            manifest(&format!("sha256:{}", "Z".repeat(64))),
            "400",
        ),
        case("referrers, bad digest", get(t, "/v2/x/referrers/sha256:1"), "400"),
    ]
}

fn queries(t: &Target) -> Vec<Case> {
    let tags = |q: &str| get(t, &format!("/v2/hostile/probe/tags/list?{q}"));
    let ns = |q: &str| get(t, &format!("/v2/library/alpine/manifests/latest?ns={q}"));
    vec![
        case("n=-1", tags("n=-1"), "400").contains("PAGINATION_NUMBER_INVALID"),
        case("n beyond u64", tags("n=99999999999999999999"), "400"),
        case("n not a number", tags("n=1e9"), "400"),
        case("n=usize::MAX", tags("n=18446744073709551615"), "2xx|404").needs_blob(),
        case("ns metadata address", ns("169.254.169.254"), "404").contains("NAME_UNKNOWN"),
        case(
            "ns metadata url",
            ns("http%3A%2F%2F169.254.169.254%2Flatest"),
            "404",
        )
        .contains("NAME_UNKNOWN"),
        case("ns trap address", ns(&t.trap), "404").contains("NAME_UNKNOWN"),
        case("ns localhost", ns("localhost"), "404").contains("NAME_UNKNOWN"),
        case("ns empty", ns(""), "404"),
        case("ns NUL", ns("%00"), "404"),
        case(
            "ns twice, first unknown",
            ns("169.254.169.254&ns=docker.io"),
            "404",
        ),
        case("ns of 10000", ns(&"a".repeat(10_000)), "404"),
        case(
            "metadata host as a name",
            get(t, "/v2/169.254.169.254/latest/manifests/x"),
            "404",
        )
        .needs_blob(),
        // A first segment with a port is a host, never a name: only a configured upstream's.
        case(
            "metadata host:port prefix",
            get(t, "/v2/169.254.169.254:80/latest/manifests/x"),
            "400",
        )
        .contains("NAME_INVALID"),
        case(
            "trap host:port prefix",
            get(t, &format!("/v2/{}/x/blobs/sha256:{}", t.trap, "a".repeat(64))),
            "400",
        )
        .contains("NAME_INVALID"),
        case("ipv6 prefix", get(t, "/v2/[::1]:80/x/manifests/x"), "400").contains("NAME_INVALID"),
        case(
            "ipv6 zone prefix",
            get(t, "/v2/[fe80::1%25eth0]:80/x/manifests/x"),
            "400",
        ),
        case(
            "port out of range",
            get(t, "/v2/localhost:65536/x/manifests/x"),
            "400",
        ),
        case("host:port alone", get(t, "/v2/localhost:80/manifests/x"), "400"),
        case(
            "userinfo prefix",
            get(t, "/v2/user@169.254.169.254:80/x/manifests/x"),
            "400",
        ),
    ]
}

fn ranges(t: &Target) -> Vec<Case> {
    let (repo, digest) = t.blob.clone().unwrap_or_default();
    let ranged = |name: &str, range: &str, expect: &'static str| {
        let path = format!("/v2/{repo}/blobs/{digest}");
        case(
            name,
            request(t, "GET", &path, &format!("Range: {range}\r\n")),
            expect,
        )
        .needs_blob()
    };
    let many: Vec<String> = (0..2000).map(|i| format!("{i}-{i}")).collect();
    vec![
        ranged("bytes=-0", "bytes=-0", "416"),
        ranged("start beyond u64", "bytes=99999999999999999999-", "200|416"),
        ranged("start at u64::MAX", "bytes=18446744073709551615-", "416"),
        ranged("end at u64::MAX", "bytes=0-18446744073709551615", "206"),
        ranged("suffix beyond u64", "bytes=-99999999999999999999", "200|206|416"),
        ranged("negative", "bytes=-5-10", "200|416"),
        ranged("reversed", "bytes=10-5", "416"),
        ranged("2000 ranges", &format!("bytes={}", many.join(",")), "200|206|416"),
        ranged("empty spec", "bytes=", "200|416"),
        ranged("other unit", "items=0-1", "200"),
        ranged(
            "range of 8 KiB",
            &format!("bytes=0-{}", "0".repeat(8192)),
            "200|206|416",
        ),
    ]
}
