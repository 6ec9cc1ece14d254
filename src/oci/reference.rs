//! Manifest references: a tag (`latest`, max 128 characters) or a digest.

use std::fmt;
use std::str::FromStr;

use super::Digest;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ReferenceError {
    #[error("invalid tag {0:?}")]
    BadTag(String),
    #[error(transparent)]
    Digest(#[from] super::DigestError),
}

/// A tag, `[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}`: never `.` or `..`, safe as a file name.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tag(String);

impl Tag {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for Tag {
    type Err = ReferenceError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let b = s.as_bytes();
        let first_ok = b.first().is_some_and(|c| c.is_ascii_alphanumeric() || *c == b'_');
        let rest_ok = b[1.min(b.len())..]
            .iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-'));
        if first_ok && rest_ok && b.len() <= 128 {
            Ok(Tag(s.to_string()))
        } else {
            Err(ReferenceError::BadTag(s.to_string()))
        }
    }
}

impl fmt::Display for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Reference {
    Tag(Tag),
    Digest(Digest),
}

impl FromStr for Reference {
    type Err = ReferenceError;

    /// A `:` can occur only in a digest, so its presence decides the kind.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.contains(':') {
            Ok(Reference::Digest(s.parse()?))
        } else {
            Ok(Reference::Tag(s.parse()?))
        }
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reference::Tag(t) => t.fmt(f),
            Reference::Digest(d) => d.fmt(f),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_and_digests() {
        assert!(matches!("latest".parse(), Ok(Reference::Tag(_))));
        assert!(matches!("v1.2_3-x".parse(), Ok(Reference::Tag(_))));
        assert!(matches!(
            format!("sha256:{}", "0".repeat(64)).parse(),
            Ok(Reference::Digest(_))
        ));
        for bad in ["", ".x", "-x", "a/b", "..", &"a".repeat(129)] {
            assert!(bad.parse::<Reference>().is_err(), "{bad}");
        }
        assert!("sha256:totallywrong".parse::<Reference>().is_err());
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(256))]

            #[test]
            fn valid_tags_round_trip(tag in "[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}") {
                let parsed: Reference = tag.parse().unwrap();
                prop_assert!(matches!(parsed, Reference::Tag(_)));
                prop_assert_eq!(parsed.to_string(), tag);
            }

            #[test]
            fn overlong_tags_are_refused(tag in "[a-zA-Z0-9_][a-zA-Z0-9._-]{128,300}") {
                prop_assert!(tag.parse::<Reference>().is_err());
            }

            #[test]
            fn accepted_references_are_safe_file_names(s in "\\PC{0,200}|[a-zA-Z0-9._:/-]{0,140}") {
                match s.parse::<Reference>() {
                    Ok(Reference::Tag(t)) => {
                        prop_assert!(t.as_str().len() <= 128);
                        prop_assert!(t.as_str() != "." && t.as_str() != "..");
                        prop_assert!(!t.as_str().starts_with(['.', '-']));
                        prop_assert!(t.as_str().bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b)));
                        prop_assert_eq!(t.to_string(), s);
                    }
                    Ok(Reference::Digest(d)) => prop_assert_eq!(d.to_string(), s),
                    Err(_) => {}
                }
            }
        }
    }
}
