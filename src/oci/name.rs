//! Repository names (`library/alpine`, `org/team/app`) checked against the distribution-spec
//! grammar. Every component starts with `[a-z0-9]`, so a name can never be `.` or `..` and is
//! safe as a relative path on disk.

use std::fmt;
use std::str::FromStr;

/// Longest name accepted, as Docker's reference library limits `host/name`.
pub(super) const MAX_NAME_LEN: usize = 255;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NameError {
    #[error("repository name is empty")]
    Empty,
    #[error("repository name is longer than {MAX_NAME_LEN} characters")]
    TooLong,
    #[error("invalid repository name component {0:?}")]
    BadComponent(String),
}

#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RepoName(String);

impl RepoName {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn components(&self) -> impl Iterator<Item = &str> {
        self.0.split('/')
    }

    /// Number of path components.
    pub fn depth(&self) -> usize {
        self.0.split('/').count()
    }

    /// The name without its first component, if it has more than one.
    pub fn strip_first(&self) -> Option<(String, RepoName)> {
        let (first, rest) = self.0.split_once('/')?;
        Some((first.to_string(), RepoName(rest.to_string())))
    }

    /// `library/<name>` for Docker Hub's one-component official images.
    pub fn with_library_prefix(&self) -> RepoName {
        if self.depth() == 1 {
            RepoName(format!("library/{}", self.0))
        } else {
            self.clone()
        }
    }
}

fn valid_component(c: &str) -> bool {
    // [a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*
    let b = c.as_bytes();
    let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    if b.is_empty() || !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !alnum(b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-');
        if !ok {
            return false;
        }
    }
    true
}

impl FromStr for RepoName {
    type Err = NameError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() {
            return Err(NameError::Empty);
        }
        if s.len() > MAX_NAME_LEN {
            return Err(NameError::TooLong);
        }
        for c in s.split('/') {
            if !valid_component(c) {
                return Err(NameError::BadComponent(c.to_string()));
            }
        }
        Ok(RepoName(s.to_string()))
    }
}

impl fmt::Display for RepoName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for RepoName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grammar() {
        for ok in [
            "alpine",
            "library/alpine",
            "a/b/c",
            "my-app",
            "my__app",
            "a.b",
            "ghcr.io",
            "x--y",
        ] {
            assert!(ok.parse::<RepoName>().is_ok(), "{ok}");
        }
        for bad in [
            "", "Alpine", "a//b", "/a", "a/", "..", "a/../b", "-a", "a_", "a___b", "a:5000", "a b",
        ] {
            assert!(bad.parse::<RepoName>().is_err(), "{bad}");
        }
        assert!("a".repeat(256).parse::<RepoName>().is_err());
    }

    #[test]
    fn library_prefix() {
        let n: RepoName = "alpine".parse().unwrap();
        assert_eq!(n.with_library_prefix().as_str(), "library/alpine");
        let n: RepoName = "org/app".parse().unwrap();
        assert_eq!(n.with_library_prefix().as_str(), "org/app");
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        /// Names the grammar allows: components of `[a-z0-9]+` joined by `.`, `_`, `__` or dashes.
        pub(crate) fn valid_name() -> impl Strategy<Value = String> {
            let component = "[a-z0-9]{1,8}((\\.|_|__|-{1,3})[a-z0-9]{1,8}){0,3}";
            prop::collection::vec(component, 1..5).prop_map(|c| c.join("/"))
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(256))]

            #[test]
            fn valid_names_round_trip(name in valid_name()) {
                prop_assume!(name.len() <= MAX_NAME_LEN);
                let parsed: RepoName = name.parse().unwrap();
                prop_assert_eq!(parsed.as_str(), name.as_str());
                prop_assert_eq!(parsed.to_string(), name.clone());
                prop_assert_eq!(parsed.components().collect::<Vec<_>>().join("/"), name);
            }

            #[test]
            fn accepted_names_are_safe_paths(s in "\\PC{0,300}|[a-z0-9./_-]{1,300}") {
                if let Ok(name) = s.parse::<RepoName>() {
                    prop_assert!(name.as_str().len() <= MAX_NAME_LEN);
                    for c in name.components() {
                        prop_assert!(!c.is_empty() && c != "." && c != "..", "{:?}", c);
                        prop_assert!(c.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b)));
                        prop_assert!(c.as_bytes()[0].is_ascii_alphanumeric());
                    }
                    let prefixed = name.with_library_prefix();
                    prop_assert!(prefixed.as_str().ends_with(name.as_str()));
                }
            }

            #[test]
            fn overlong_names_are_refused(name in valid_name(), pad in 1usize..64) {
                let long = format!("{}/{}", "a".repeat(MAX_NAME_LEN - name.len().min(MAX_NAME_LEN) + pad), name);
                prop_assert_eq!(long.parse::<RepoName>(), Err(NameError::TooLong));
            }
        }
    }
}
