//! RFC 9110 single byte ranges: `bytes=N-M`, `bytes=N-`, suffix `bytes=-N`, end clamped to the
//! size. Multiple ranges and unparsable headers are ignored (the full body is served), as the RFC
//! allows; a well-formed but unsatisfiable range is an error (416).

#[derive(Debug, PartialEq, Eq)]
pub(super) struct Unsatisfiable;

/// `Ok(None)`: serve everything. `Ok(Some((start, end)))`: serve `start..end` (end exclusive).
pub(super) fn parse(header: Option<&str>, size: u64) -> Result<Option<(u64, u64)>, Unsatisfiable> {
    let Some(spec) = header.and_then(|h| h.trim().strip_prefix("bytes=")) else {
        return Ok(None);
    };
    if spec.contains(',') {
        return Ok(None);
    }
    let Some((a, b)) = spec.trim().split_once('-') else {
        return Ok(None);
    };
    let (a, b) = (a.trim(), b.trim());
    let num = |s: &str| s.parse::<u64>().ok();
    match (a.is_empty(), b.is_empty()) {
        (true, true) => Ok(None),
        (true, false) => {
            let Some(n) = num(b) else { return Ok(None) };
            if n == 0 || size == 0 {
                return Err(Unsatisfiable);
            }
            Ok(Some((size.saturating_sub(n), size)))
        }
        (false, _) => {
            let Some(first) = num(a) else { return Ok(None) };
            let last = if b.is_empty() { Some(u64::MAX) } else { num(b) };
            let Some(last) = last else { return Ok(None) };
            if last < first || first >= size {
                return Err(Unsatisfiable);
            }
            Ok(Some((first, last.saturating_add(1).min(size))))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conformance_matrix() {
        let s = 2048;
        assert_eq!(parse(Some("bytes=500-1499"), s), Ok(Some((500, 1500))));
        assert_eq!(parse(Some("bytes=500-"), s), Ok(Some((500, 2048))));
        assert_eq!(parse(Some("bytes=-500"), s), Ok(Some((1548, 2048))));
        assert_eq!(parse(Some("bytes=2000-5000"), s), Ok(Some((2000, 2048))));
        assert_eq!(parse(Some("bytes=500-0"), s), Err(Unsatisfiable));
        assert_eq!(parse(Some("bytes=5000-10000"), s), Err(Unsatisfiable));
        assert_eq!(
            parse(Some("bytes=0-2048"), s),
            Ok(Some((0, 2048))),
            "dockerd's resume form"
        );
        assert_eq!(parse(Some("bytes=-5000"), s), Ok(Some((0, 2048))));
        assert_eq!(parse(Some("bytes=0-1,5-6"), s), Ok(None));
        assert_eq!(parse(Some("items=0-1"), s), Ok(None));
        assert_eq!(parse(None, s), Ok(None));
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        /// Range headers as clients and attackers write them: numbers near the edges of `u64`,
        /// missing parts, signs, lists, and arbitrary text.
        fn header() -> impl Strategy<Value = String> {
            let num = prop_oneof![
                Just(String::new()),
                (0u64..5000).prop_map(|n| n.to_string()),
                any::<u64>().prop_map(|n| n.to_string()),
                "-?[0-9]{15,25}",
            ];
            prop_oneof![
                (num.clone(), num).prop_map(|(a, b)| format!("bytes={a}-{b}")),
                "bytes=[0-9, -]{0,40}",
                "\\PC{0,60}",
            ]
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(256))]

            #[test]
            fn accepted_ranges_lie_within_the_size(h in header(), size in prop_oneof![0u64..5000, any::<u64>()]) {
                if let Ok(Some((start, end))) = parse(Some(&h), size) {
                    prop_assert!(start < end, "{h:?} on {size}: {start}..{end}");
                    prop_assert!(end <= size, "{h:?} on {size}: {start}..{end}");
                }
            }

            #[test]
            fn satisfiable_pairs_are_served_exactly(size in 1u64..10_000, a in 0u64..10_000, len in 0u64..10_000) {
                prop_assume!(a < size);
                let b = a.saturating_add(len);
                let got = parse(Some(&format!("bytes={a}-{b}")), size);
                prop_assert_eq!(got, Ok(Some((a, (b + 1).min(size)))));
            }
        }
    }
}
