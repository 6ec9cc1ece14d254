//! Content digests (`sha256:<hex>`, `sha512:<hex>`) and an incremental hasher for each.
//! A `Digest` only exists for the registered algorithms with canonical lowercase hex of the right
//! length, so it is safe to build a file path from one.

use std::fmt;
use std::str::FromStr;

use sha2::{Digest as _, Sha256, Sha512};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Algorithm {
    Sha256,
    Sha512,
}

impl Algorithm {
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::Sha256 => "sha256",
            Algorithm::Sha512 => "sha512",
        }
    }

    fn hex_len(self) -> usize {
        match self {
            Algorithm::Sha256 => 64,
            Algorithm::Sha512 => 128,
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DigestError {
    #[error("digest has no algorithm separator ':'")]
    Malformed,
    #[error("unsupported digest algorithm {0:?}")]
    UnsupportedAlgorithm(String),
    #[error("digest hex must be {expected} lowercase hex characters")]
    BadHex { expected: usize },
}

/// A verified-syntax content digest.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest {
    algorithm: Algorithm,
    hex: String,
}

impl Digest {
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// The encoded part: lowercase hex, safe as a file name.
    pub fn hex(&self) -> &str {
        &self.hex
    }

    /// Digest of a byte slice with the given algorithm.
    pub fn of(algorithm: Algorithm, bytes: &[u8]) -> Digest {
        let mut h = Hasher::new(algorithm);
        h.update(bytes);
        h.finish()
    }

    pub fn sha256_of(bytes: &[u8]) -> Digest {
        Digest::of(Algorithm::Sha256, bytes)
    }
}

impl FromStr for Digest {
    type Err = DigestError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (alg, hex) = s.split_once(':').ok_or(DigestError::Malformed)?;
        let algorithm = match alg {
            "sha256" => Algorithm::Sha256,
            "sha512" => Algorithm::Sha512,
            other => return Err(DigestError::UnsupportedAlgorithm(other.to_string())),
        };
        let ok = hex.len() == algorithm.hex_len()
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if !ok {
            return Err(DigestError::BadHex {
                expected: algorithm.hex_len(),
            });
        }
        Ok(Digest {
            algorithm,
            hex: hex.to_string(),
        })
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.algorithm.as_str(), self.hex)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Incremental hasher for one algorithm.
#[derive(Clone)]
pub enum Hasher {
    Sha256(Sha256),
    Sha512(Sha512),
}

impl Hasher {
    pub fn new(algorithm: Algorithm) -> Hasher {
        match algorithm {
            Algorithm::Sha256 => Hasher::Sha256(Sha256::new()),
            Algorithm::Sha512 => Hasher::Sha512(Sha512::new()),
        }
    }

    pub fn update(&mut self, bytes: &[u8]) {
        match self {
            Hasher::Sha256(h) => h.update(bytes),
            Hasher::Sha512(h) => h.update(bytes),
        }
    }

    pub fn finish(self) -> Digest {
        let (algorithm, out) = match self {
            Hasher::Sha256(h) => (Algorithm::Sha256, h.finalize().to_vec()),
            Hasher::Sha512(h) => (Algorithm::Sha512, h.finalize().to_vec()),
        };
        Digest {
            algorithm,
            hex: to_hex(&out),
        }
    }
}

fn to_hex(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(HEX[(b >> 4) as usize] as char);
        s.push(HEX[(b & 0xf) as usize] as char);
    }
    s
}

/// A digest as people read it in tables: `sha256:0123456789ab` (its first 12 hex digits).
pub fn short_digest(digest: &str) -> &str {
    let cut = digest.find(':').map_or(0, |i| i + 1) + 12;
    digest.get(..cut).unwrap_or(digest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_digests_keep_the_algorithm_and_12_hex_digits() {
        assert_eq!(short_digest("sha256:0123456789abcdef"), "sha256:0123456789ab");
        assert_eq!(short_digest("sha256:abc"), "sha256:abc");
        assert_eq!(short_digest("nocolon0123456789"), "nocolon01234");
    }

    #[test]
    fn parses_and_rejects() {
        let hex = "a".repeat(64);
        let d: Digest = format!("sha256:{hex}").parse().unwrap();
        assert_eq!(d.to_string(), format!("sha256:{hex}"));
        assert!(format!("sha512:{}", "0".repeat(128)).parse::<Digest>().is_ok());
        assert_eq!(
            "sha256:ABC".parse::<Digest>(),
            Err(DigestError::BadHex { expected: 64 })
        );
        assert!(format!("sha256:{}", "A".repeat(64)).parse::<Digest>().is_err());
        assert!("md5:abc".parse::<Digest>().is_err());
        assert!("sha256".parse::<Digest>().is_err());
        assert!(format!("sha256:{}/..", "a".repeat(62)).parse::<Digest>().is_err());
    }

    #[test]
    fn hashes_known_value() {
        assert_eq!(
            Digest::sha256_of(b"").to_string(),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        fn algorithm() -> impl Strategy<Value = Algorithm> {
            prop_oneof![Just(Algorithm::Sha256), Just(Algorithm::Sha512)]
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(256))]

            #[test]
            fn canonical_digests_round_trip(alg in algorithm(), bytes in prop::collection::vec(any::<u8>(), 0..64)) {
                let d = Digest::of(alg, &bytes);
                let text = d.to_string();
                prop_assert_eq!(text.parse::<Digest>(), Ok(d.clone()));
                prop_assert_eq!(d.hex().len(), alg.hex_len());
            }

            #[test]
            fn wrong_lengths_are_refused(alg in algorithm(), len in 0usize..300) {
                prop_assume!(len != alg.hex_len());
                let text = format!("{}:{}", alg.as_str(), "a".repeat(len));
                prop_assert_eq!(text.parse::<Digest>(), Err(DigestError::BadHex { expected: alg.hex_len() }));
            }

            #[test]
            fn one_character_outside_the_alphabet_is_refused(
                alg in algorithm(),
                at in any::<prop::sample::Index>(),
                bad in any::<char>().prop_filter("not lowercase hex", |c| !matches!(c, '0'..='9' | 'a'..='f')),
            ) {
                let mut hex: Vec<char> = "0".repeat(alg.hex_len()).chars().collect();
                let i = at.index(hex.len());
                hex[i] = bad;
                let text = format!("{}:{}", alg.as_str(), hex.into_iter().collect::<String>());
                prop_assert!(text.parse::<Digest>().is_err());
            }

            #[test]
            fn whatever_parses_is_canonical(s in "\\PC{0,140}|(sha256|sha512|md5|SHA256):[0-9a-fA-F]{60,130}") {
                if let Ok(d) = s.parse::<Digest>() {
                    prop_assert_eq!(d.to_string(), s);
                    prop_assert!(d.hex().bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
                    prop_assert_eq!(d.hex().len(), d.algorithm().hex_len());
                }
            }
        }
    }
}
