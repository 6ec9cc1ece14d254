//! The cases about HTTP itself rather than the registry API: header floods, request framing
//! and smuggling shapes, methods, versions and request-target forms. Most aim at a path routing
//! refuses, so whatever framing hyper settles on, the answer is a 4xx.

use super::{case, get, request, Case, Target, REFUSED};

pub(super) fn headers(t: &Target) -> Vec<Case> {
    let many: String = (0..1000).map(|i| format!("X-H{i}: v\r\n")).collect();
    let big = format!("X-Big: {}\r\n", "a".repeat(64 * 1024));
    let huge = format!("X-Huge: {}\r\n", "a".repeat(1024 * 1024));
    vec![
        case("1000 headers", request(t, "GET", REFUSED, &many), "4xx|closed"),
        case("a 64 KiB header", request(t, "GET", REFUSED, &big), "4xx|closed"),
        case("a 1 MiB header", request(t, "GET", REFUSED, &huge), "4xx|closed"),
        case(
            "header without colon",
            request(t, "GET", REFUSED, "NoColon\r\n"),
            "4xx|closed",
        ),
        case(
            "NUL in a header",
            request(t, "GET", REFUSED, "X-A: a\0b\r\n"),
            "4xx|closed",
        ),
        case(
            "obsolete line folding",
            request(t, "GET", REFUSED, "X-A: a\r\n b\r\n"),
            "4xx|closed",
        ),
        case(
            "Accept of 64 KiB",
            request(
                t,
                "GET",
                "/v2/x/manifests/y",
                &format!("Accept: {}\r\n", "a/b,".repeat(16_000)),
            ),
            "4xx|closed",
        )
        .needs_blob(),
        case(
            "no Host",
            b"GET /v2/Hostile/manifests/x HTTP/1.1\r\nConnection: close\r\n\r\n".to_vec(),
            "4xx|closed",
        ),
        case(
            "two Hosts",
            request(t, "GET", REFUSED, "Host: 169.254.169.254\r\n"),
            "4xx|closed",
        ),
        case(
            "metadata Host",
            format!("GET {REFUSED} HTTP/1.1\r\nHost: 169.254.169.254\r\nConnection: close\r\n\r\n")
                .into_bytes(),
            "400",
        ),
    ]
}

pub(super) fn framing(t: &Target) -> Vec<Case> {
    let smuggled = format!(
        "0\r\n\r\nGET /v2/Smuggled/manifests/x HTTP/1.1\r\nHost: {}\r\n\r\n",
        t.addr
    );
    let mut cl_and_te = request(
        t,
        "GET",
        REFUSED,
        &format!(
            "Content-Length: {}\r\nTransfer-Encoding: chunked\r\n",
            smuggled.len()
        ),
    );
    cl_and_te.extend_from_slice(smuggled.as_bytes());
    let mut te_and_cl = request(
        t,
        "GET",
        REFUSED,
        "Transfer-Encoding: chunked\r\nContent-Length: 3\r\n",
    );
    te_and_cl.extend_from_slice(b"0\r\n\r\n");
    vec![
        case("Content-Length and Transfer-Encoding", cl_and_te, "4xx|closed"),
        case("Transfer-Encoding and Content-Length", te_and_cl, "4xx|closed"),
        case(
            "two different Content-Lengths",
            request(t, "GET", REFUSED, "Content-Length: 1\r\nContent-Length: 2\r\n"),
            "4xx|closed",
        ),
        case(
            "Content-Length list",
            request(t, "GET", REFUSED, "Content-Length: 1, 2\r\n"),
            "4xx|closed",
        ),
        case(
            "negative Content-Length",
            request(t, "GET", REFUSED, "Content-Length: -1\r\n"),
            "4xx|closed",
        ),
        case(
            "Content-Length beyond u64",
            request(t, "GET", REFUSED, "Content-Length: 99999999999999999999\r\n"),
            "4xx|closed",
        ),
        case(
            "unknown Transfer-Encoding",
            request(t, "GET", REFUSED, "Transfer-Encoding: gzip\r\n"),
            "4xx|closed",
        ),
        case(
            "chunked not last",
            request(t, "GET", REFUSED, "Transfer-Encoding: chunked, gzip\r\n"),
            "4xx|closed",
        ),
        case(
            "bad chunk size",
            [
                request(t, "GET", REFUSED, "Transfer-Encoding: chunked\r\n"),
                b"zz\r\n".to_vec(),
            ]
            .concat(),
            "4xx|closed",
        ),
    ]
}

/// Bodies a `GET` should not have, `Expect`, protocol upgrades and bytes that are not HTTP.
pub(super) fn bodies_and_upgrades(t: &Target) -> Vec<Case> {
    vec![
        case(
            "1 GiB body on GET",
            request(t, "GET", REFUSED, "Content-Length: 1073741824\r\n"),
            "4xx|closed",
        )
        .body(16 << 20),
        case(
            "1 GiB body on a blob GET",
            request(t, "GET", "/v2/x/blobs/sha256:0", "Content-Length: 1073741824\r\n"),
            "4xx|closed",
        )
        .body(16 << 20),
        case(
            "chunked 1 TiB chunk",
            [
                request(t, "GET", REFUSED, "Transfer-Encoding: chunked\r\n"),
                b"10000000000\r\n".to_vec(),
            ]
            .concat(),
            "4xx|closed",
        )
        .body(16 << 20),
        case(
            "Expect 100-continue",
            request(
                t,
                "GET",
                REFUSED,
                "Expect: 100-continue\r\nContent-Length: 1073741824\r\n",
            ),
            "4xx|closed",
        ),
        case(
            "Upgrade h2c",
            request(
                t,
                "GET",
                REFUSED,
                "Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n",
            ),
            "4xx|closed",
        ),
        case(
            "Upgrade websocket",
            request(
                t,
                "GET",
                REFUSED,
                "Upgrade: websocket\r\nSec-WebSocket-Key: x\r\n",
            ),
            "4xx|closed",
        ),
        case(
            "garbage",
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n".to_vec(),
            "4xx|closed",
        ),
        case(
            "bare LF line ends",
            format!("GET {REFUSED} HTTP/1.1\nHost: {}\nConnection: close\n\n", t.addr).into_bytes(),
            "4xx|closed",
        ),
    ]
}

pub(super) fn methods_and_forms(t: &Target) -> Vec<Case> {
    let method = |m: &str| {
        case(
            m,
            request(
                t,
                m,
                "/v2/library/alpine/manifests/latest",
                "Content-Length: 0\r\n",
            ),
            "405",
        )
    };
    let version = |v: &str, expect: &'static str| {
        case(
            v,
            format!("GET {REFUSED} {v}\r\nHost: {}\r\n\r\n", t.addr).into_bytes(),
            expect,
        )
    };
    vec![
        method("PUT"),
        method("DELETE"),
        method("PATCH"),
        method("POST"),
        method("TRACE"),
        method("OPTIONS"),
        method("PROPFIND"),
        case(
            "a 1000-byte method",
            request(t, &"M".repeat(1000), REFUSED, ""),
            "4xx|closed",
        ),
        case(
            "CONNECT to metadata",
            request(t, "CONNECT", "169.254.169.254:80", ""),
            "4xx|closed",
        ),
        case(
            "CONNECT to trap",
            request(t, "CONNECT", &t.trap, ""),
            "4xx|closed",
        ),
        version("HTTP/1.0", "400"),
        version("HTTP/0.9", "4xx|closed"),
        version("HTTP/1.2", "4xx|closed"),
        version("HTTP/2.0", "4xx|closed"),
        case(
            "absolute-form to metadata",
            get(t, "http://169.254.169.254/latest/meta-data/"),
            "404",
        ),
        case(
            "absolute-form to metadata, registry path",
            get(t, "http://169.254.169.254/v2/Hostile/manifests/x"),
            "400",
        ),
        case(
            "absolute-form to trap",
            get(t, &format!("http://{}/v2/Hostile/manifests/x", t.trap)),
            "400",
        ),
        case("absolute-form https", get(t, "https://169.254.169.254/"), "404"),
        case(
            "absolute-form with userinfo",
            get(t, "http://user:pass@169.254.169.254/"),
            "4xx|closed",
        ),
    ]
}
