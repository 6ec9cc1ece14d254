//! Reading `ctr --http-dump` output: the requests containerd sent, with their hosts.

use crate::support::e2e::registry::is_blob_uri;

/// One request line of `ctr --http-dump` output.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct DumpedRequest {
    pub(super) method: String,
    /// Path and query.
    pub(super) target: String,
    pub(super) host: String,
}

impl DumpedRequest {
    pub(super) fn is_blob_get(&self) -> bool {
        self.method == "GET" && is_blob_uri(&self.target)
    }
}

/// The HTTP requests in `ctr --http-dump` output. ctr logs every request
/// and response, bodies included, line by line to stderr; a body without a
/// final newline runs into the next request line (`...}GET /v2/... HTTP/1.1`),
/// so a request line is any line ending in ` HTTP/1.1`, its method being the
/// capital letters just before the target. The `Host:` header follows on the
/// next line (each dump is written in one piece).
pub(super) fn parse_http_dump(stderr: &str) -> Vec<DumpedRequest> {
    let mut requests: Vec<DumpedRequest> = Vec::new();
    let mut want_host = false;
    for line in stderr.lines() {
        let text = dump_text(line);
        if want_host {
            want_host = false;
            if let Some(host) = text.strip_prefix("Host:") {
                if let Some(last) = requests.last_mut() {
                    last.host = host.trim().to_string();
                }
                continue;
            }
        }
        let Some((before, target)) = text
            .strip_suffix(" HTTP/1.1")
            .and_then(|request| request.rsplit_once(' '))
        else {
            continue;
        };
        let method_start = before
            .rfind(|c: char| !c.is_ascii_uppercase())
            .map_or(0, |i| i + 1);
        let method = &before[method_start..];
        if method.is_empty() || !target.starts_with('/') {
            continue;
        }
        requests.push(DumpedRequest {
            method: method.to_string(),
            target: target.to_string(),
            host: String::new(),
        });
        want_host = true;
    }
    requests
}

/// The message of one logrus line (`... msg="TEXT"`), unquoted; other lines
/// as they are.
fn dump_text(line: &str) -> String {
    let Some(start) = line.find("msg=") else {
        return line.trim().to_string();
    };
    let rest = &line[start + 4..];
    let Some(quoted) = rest.strip_prefix('"') else {
        return rest.split_whitespace().next().unwrap_or("").to_string();
    };
    let mut out = String::new();
    let mut chars = quoted.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => break,
            '\\' => match chars.next() {
                Some('r') | None => {}
                Some('n') => out.push('\n'),
                Some('t') => out.push('\t'),
                Some(other) => out.push(other),
            },
            c => out.push(c),
        }
    }
    out.trim().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_dump_lines_parse() {
        let stderr = concat!(
            "time=\"2024-01-01T00:00:00Z\" level=info msg=\"HEAD /v2/library/a/manifests/latest?ns=docker.io HTTP/1.1\\r\"\n",
            "time=\"2024-01-01T00:00:00Z\" level=info msg=\"Host: 127.0.0.1:5000\\r\"\n",
            "time=\"2024-01-01T00:00:00Z\" level=info msg=\"Accept: */*\\r\"\n",
            "time=\"2024-01-01T00:00:00Z\" level=info msg=\"HTTP/1.1 200 OK\\r\"\n",
            "time=\"2024-01-01T00:00:00Z\" level=info msg=\"  \\\"schemaVersion\\\": 2\"\n",
            "time=\"2024-01-01T00:00:00Z\" level=info msg=\"}GET /v2/library/a/blobs/sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb?ns=docker.io HTTP/1.1\"\n",
            "time=\"2024-01-01T00:00:00Z\" level=info msg=\"Host: 127.0.0.1:5001\"\n",
            "GET /v2/library/a/blobs/sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa?ns=docker.io HTTP/1.1\n",
            "Host: 127.0.0.1:5000\n",
        );
        let requests = parse_http_dump(stderr);
        assert_eq!(requests.len(), 3, "{requests:?}");
        assert_eq!(requests[0].method, "HEAD");
        assert_eq!(requests[0].target, "/v2/library/a/manifests/latest?ns=docker.io");
        assert_eq!(requests[0].host, "127.0.0.1:5000");
        assert!(requests[1].is_blob_get());
        assert_eq!(requests[1].method, "GET");
        assert_eq!(requests[1].host, "127.0.0.1:5001");
        assert!(requests[2].is_blob_get());
        assert_eq!(requests[2].host, "127.0.0.1:5000");
    }
}
