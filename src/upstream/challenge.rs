//! Parsing of RFC 7235 `WWW-Authenticate` headers, including several challenges in one header
//! (`Bearer realm="…",service="…", Basic realm="…"`) and quoted strings with escapes.

use std::collections::HashMap;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Challenge {
    /// Lowercased scheme: `bearer`, `basic`, ...
    pub scheme: String,
    /// Parameter names lowercased.
    pub params: HashMap<String, String>,
}

impl Challenge {
    pub(super) fn param(&self, name: &str) -> Option<&str> {
        self.params.get(name).map(String::as_str)
    }
}

/// Parses every challenge in one header value. Malformed trailing input is ignored.
pub(super) fn parse(header: &str) -> Vec<Challenge> {
    let mut out: Vec<Challenge> = Vec::new();
    let mut p = Parser {
        s: header.as_bytes(),
        i: 0,
    };
    loop {
        p.skip_ws_commas();
        let Some(tok) = p.token() else { break };
        p.skip_ws();
        if p.peek() == Some(b'=') && !out.is_empty() {
            // key=value continuing the current challenge
            p.i += 1;
            p.skip_ws();
            let value = if p.peek() == Some(b'"') {
                p.quoted()
            } else {
                p.token().unwrap_or_default()
            };
            if let Some(c) = out.last_mut() {
                c.params.insert(tok.to_ascii_lowercase(), value);
            }
        } else {
            out.push(Challenge {
                scheme: tok.to_ascii_lowercase(),
                params: HashMap::new(),
            });
            // The first parameter follows the scheme after whitespace.
            p.skip_ws();
            if let Some(key) = p.token() {
                p.skip_ws();
                if p.peek() == Some(b'=') {
                    p.i += 1;
                    p.skip_ws();
                    let value = if p.peek() == Some(b'"') {
                        p.quoted()
                    } else {
                        p.token().unwrap_or_default()
                    };
                    if let Some(c) = out.last_mut() {
                        c.params.insert(key.to_ascii_lowercase(), value);
                    }
                }
            }
        }
    }
    out
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn skip_ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t')) {
            self.i += 1;
        }
    }

    fn skip_ws_commas(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b',')) {
            self.i += 1;
        }
    }

    fn token(&mut self) -> Option<String> {
        let start = self.i;
        while let Some(c) = self.peek() {
            if c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~/:".contains(&c) {
                self.i += 1;
            } else {
                break;
            }
        }
        (self.i > start).then(|| String::from_utf8_lossy(&self.s[start..self.i]).into_owned())
    }

    fn quoted(&mut self) -> String {
        let mut out = Vec::new();
        self.i += 1; // opening quote
        while let Some(c) = self.peek() {
            self.i += 1;
            match c {
                b'"' => break,
                b'\\' => {
                    if let Some(n) = self.peek() {
                        out.push(n);
                        self.i += 1;
                    }
                }
                _ => out.push(c),
            }
        }
        String::from_utf8_lossy(&out).into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_hub_bearer() {
        let c = parse(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/alpine:pull""#,
        );
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].scheme, "bearer");
        assert_eq!(c[0].param("realm"), Some("https://auth.docker.io/token"));
        assert_eq!(c[0].param("service"), Some("registry.docker.io"));
        assert_eq!(c[0].param("scope"), Some("repository:library/alpine:pull"));
    }

    #[test]
    fn several_challenges_and_escapes() {
        let c = parse(r#"Basic realm="x\"y", Bearer realm="https://quay.io/v2/auth",service="quay.io""#);
        assert_eq!(c.len(), 2);
        assert_eq!(c[0].scheme, "basic");
        assert_eq!(c[0].param("realm"), Some("x\"y"));
        assert_eq!(c[1].param("service"), Some("quay.io"));
        assert_eq!(parse("Basic").len(), 1);
        assert!(parse("").is_empty());
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        /// A challenge and its header text: a scheme and parameters with quoted values, which
        /// may hold quotes, backslashes, commas and non-ASCII text (escaped as RFC 7230 says).
        fn challenge() -> impl Strategy<Value = (Challenge, String)> {
            let params = prop::collection::hash_map("[a-z][a-z0-9_-]{0,8}", "\\PC{0,20}", 0..4);
            ("[A-Za-z][A-Za-z0-9]{0,9}", params).prop_map(|(scheme, params)| {
                let rendered: Vec<String> = params
                    .iter()
                    .map(|(k, v)| format!("{k}=\"{}\"", v.replace('\\', "\\\\").replace('"', "\\\"")))
                    .collect();
                let text = match rendered.is_empty() {
                    true => scheme.clone(),
                    false => format!("{scheme} {}", rendered.join(", ")),
                };
                let c = Challenge {
                    scheme: scheme.to_ascii_lowercase(),
                    params,
                };
                (c, text)
            })
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(256))]

            #[test]
            fn never_panics(s in "\\PC{0,200}|[A-Za-z=,\" \\\\]{0,80}") {
                for c in parse(&s) {
                    prop_assert!(!c.scheme.is_empty());
                    prop_assert_eq!(c.scheme.to_ascii_lowercase(), c.scheme);
                }
            }

            #[test]
            fn rendered_challenges_round_trip(list in prop::collection::vec(challenge(), 1..4)) {
                let header = list.iter().map(|(_, t)| t.as_str()).collect::<Vec<_>>().join(", ");
                let want: Vec<Challenge> = list.into_iter().map(|(c, _)| c).collect();
                prop_assert_eq!(parse(&header), want, "{}", header);
            }
        }
    }
}
