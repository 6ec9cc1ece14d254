//! Validation of `[auth]` (who clients are: htpasswd users with bcrypt hashes, robot tokens
//! stored as SHA-256 digests, groups, what anonymous clients may do) and `[[access]]` (read
//! rules per repository pattern). The files are read here, so `check-config` and a start fail
//! the same way, every problem at once. No line quotes a hash or a token.

use std::collections::BTreeMap;
use std::path::Path;

use super::file::{FileAccess, FileAuth};
use crate::secret::Secret;

/// Client authentication and access rules. The default (no `[auth]`, no `[[access]]`): no
/// users, anonymous clients read everything that is not on a private upstream.
#[derive(Debug, Clone, Default)]
pub struct AuthConfig {
    /// htpasswd users and their bcrypt hashes (`$2y$`, `$2b$`, `$2a$`).
    pub users: Vec<(String, Secret)>,
    /// Robot tokens: name and the SHA-256 of the token.
    pub tokens: Vec<(String, [u8; 32])>,
    /// `[auth.groups]`: group name → members (users, tokens or certificate names).
    pub groups: BTreeMap<String, Vec<String>>,
    pub anonymous: Anonymous,
    /// `[[access]]`, in file order: the first rule whose pattern matches decides.
    pub rules: Vec<AccessRule>,
}

/// What clients without credentials may read where no rule decides.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Anonymous {
    /// Everything that is not on a private upstream.
    #[default]
    Read,
    /// Nothing.
    None,
}

/// One `[[access]]` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessRule {
    pub repository: RepoPattern,
    pub read: Vec<Reader>,
    /// Who may push (hosted namespaces only; a mirrored namespace is never written).
    pub write: Vec<Reader>,
}

/// A pattern over `<upstream host>/<repository>`, split at `/`: a literal component, `*` (any
/// one component) or, last only, `**` (one or more components: everything below).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepoPattern {
    pub text: String,
    pub parts: Vec<PatternPart>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PatternPart {
    Literal(String),
    One,
    Rest,
}

impl RepoPattern {
    /// Whether `<upstream>/<repo>` matches.
    pub fn matches(&self, upstream: &str, repo: &str) -> bool {
        let path: Vec<&str> = std::iter::once(upstream).chain(repo.split('/')).collect();
        for (i, part) in self.parts.iter().enumerate() {
            match (part, path.get(i)) {
                (PatternPart::Rest, Some(_)) => return true,
                (PatternPart::One, Some(_)) => {}
                (PatternPart::Literal(l), Some(c)) if l == c => {}
                _ => return false,
            }
        }
        path.len() == self.parts.len()
    }
}

/// Who a rule lets read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reader {
    User(String),
    Group(String),
    /// Every client, with or without credentials (not on a private upstream).
    Anonymous,
    /// Every identified client.
    Authenticated,
}

fn pattern(errors: &mut Vec<String>, at: &str, text: String) -> Option<RepoPattern> {
    let pieces: Vec<&str> = text.split('/').collect();
    let mut parts = Vec::new();
    for (i, piece) in pieces.iter().enumerate() {
        let part = match *piece {
            "**" if i + 1 == pieces.len() && i > 0 => PatternPart::Rest,
            "*" => PatternPart::One,
            p if !p.is_empty() && !p.contains('*') => PatternPart::Literal(p.to_string()),
            _ => {
                errors.push(format!(
                    "{at}.repository: {text:?} is not a pattern like \"ghcr.io/myorg/*\" or \"ghcr.io/myorg/**\" (\"*\" is one whole component, \"**\" only last)"
                ));
                return None;
            }
        };
        parts.push(part);
    }
    (parts.len() >= 2)
        .then_some(RepoPattern {
            text: text.clone(),
            parts,
        })
        .or_else(|| {
            errors.push(format!(
            "{at}.repository: {text:?} needs the upstream host and a repository, like \"docker.io/library/*\""
        ));
            None
        })
}

fn reader(
    errors: &mut Vec<String>,
    at: &str,
    groups: &BTreeMap<String, Vec<String>>,
    r: String,
) -> Option<Reader> {
    match r.as_str() {
        "anonymous" => Some(Reader::Anonymous),
        "authenticated" => Some(Reader::Authenticated),
        g if g.starts_with('@') => {
            let name = &g[1..];
            if !groups.contains_key(name) {
                errors.push(format!("{at}.read: group {g} is not defined in [auth.groups]"));
            }
            Some(Reader::Group(name.to_string()))
        }
        "" => {
            errors.push(format!("{at}.read: an empty name"));
            None
        }
        _ => Some(Reader::User(r)),
    }
}

/// `name:hash` lines; blank lines and `#` comments are skipped. `check` says what is wrong with
/// a hash, without quoting it.
fn name_lines<T>(
    errors: &mut Vec<String>,
    key: &str,
    path: &Path,
    check: impl Fn(&str) -> Result<T, String>,
) -> Vec<(String, T)> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => {
            errors.push(format!("{key}: cannot read {}: {e}", path.display()));
            return Vec::new();
        }
    };
    let mut out: Vec<(String, T)> = Vec::new();
    for (n, line) in text.lines().enumerate().map(|(i, l)| (i + 1, l.trim())) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((name, hash)) = line.split_once(':').filter(|(n, _)| !n.is_empty()) else {
            errors.push(format!("{key}: {} line {n} is not name:hash", path.display()));
            continue;
        };
        match check(hash) {
            Ok(v) if out.iter().all(|(o, _)| o != name) => out.push((name.to_string(), v)),
            Ok(_) => errors.push(format!(
                "{key}: {} line {n}: {name:?} is listed twice",
                path.display()
            )),
            Err(e) => errors.push(format!("{key}: {} line {n} ({name:?}): {e}", path.display())),
        }
    }
    out
}

fn bcrypt_hash(hash: &str) -> Result<Secret, String> {
    let kind_ok = ["$2y$", "$2b$", "$2a$"].iter().any(|p| hash.starts_with(p));
    match kind_ok && hash.len() == 60 {
        true => Ok(Secret::new(hash)),
        false => Err("not a bcrypt hash; only bcrypt ($2y$, $2b$, $2a$: `htpasswd -B`) is supported".into()),
    }
}

fn sha256_hex(hash: &str) -> Result<[u8; 32], String> {
    let bad =
        || "not the SHA-256 of a token as 64 hex digits (`printf %s \"$TOKEN\" | sha256sum`)".to_string();
    if hash.len() != 64 {
        return Err(bad());
    }
    let mut out = [0u8; 32];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(&hash[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
    }
    Ok(out)
}

pub(super) fn validate(
    errors: &mut Vec<String>,
    raw: Option<FileAuth>,
    access: Vec<FileAccess>,
) -> AuthConfig {
    let raw = raw.unwrap_or_default();
    let users = raw
        .htpasswd_file
        .map(|f| name_lines(errors, "auth.htpasswd_file", Path::new(&f), bcrypt_hash))
        .unwrap_or_default();
    let tokens = raw
        .tokens_file
        .map(|f| name_lines(errors, "auth.tokens_file", Path::new(&f), sha256_hex))
        .unwrap_or_default();
    for (name, _) in &tokens {
        if users.iter().any(|(u, _)| u == name) {
            errors.push(format!(
                "auth: {name:?} is both an htpasswd user and a robot token"
            ));
        }
    }
    let anonymous = match raw.anonymous.as_deref() {
        None | Some("read") => Anonymous::Read,
        Some("none") => Anonymous::None,
        Some(other) => {
            errors.push(format!("auth.anonymous: {other:?} is not \"read\" or \"none\""));
            Anonymous::Read
        }
    };
    let groups = raw.groups.unwrap_or_default();
    let mut rules = Vec::new();
    for (i, a) in access.into_iter().enumerate() {
        let at = format!("access[{i}]");
        let repository = match a.repository {
            Some(r) => pattern(errors, &at, r),
            None => {
                errors.push(format!("{at}: repository is required"));
                None
            }
        };
        let read: Vec<Reader> = (a.read.unwrap_or_default().into_iter())
            .filter_map(|r| reader(errors, &at, &groups, r))
            .collect();
        let write: Vec<Reader> = (a.write.unwrap_or_default().into_iter())
            .filter_map(|r| reader(errors, &at, &groups, r))
            .collect();
        if let Some(repository) = repository {
            rules.push(AccessRule {
                repository,
                read,
                write,
            });
        }
    }
    AuthConfig {
        users,
        tokens,
        groups,
        anonymous,
        rules,
    }
}

#[cfg(test)]
mod tests {
    use super::super::Config;
    use super::*;

    #[test]
    fn patterns() {
        let mut e = Vec::new();
        let p = |e: &mut Vec<String>, t: &str| pattern(e, "a", t.to_string());
        let one = p(&mut e, "ghcr.io/org/*").unwrap();
        assert!(one.matches("ghcr.io", "org/app"));
        assert!(!one.matches("ghcr.io", "org/app/sub"));
        assert!(!one.matches("ghcr.io", "other/app"));
        let rest = p(&mut e, "ghcr.io/org/**").unwrap();
        assert!(rest.matches("ghcr.io", "org/app/sub") && rest.matches("ghcr.io", "org/app"));
        assert!(!rest.matches("ghcr.io", "org"));
        assert!(p(&mut e, "*/**").unwrap().matches("docker.io", "library/alpine"));
        assert!(e.is_empty(), "{e:?}");
        for bad in ["ghcr.io", "ghcr.io/**/x", "ghcr.io/app-*", "ghcr.io//x"] {
            assert!(p(&mut e, bad).is_none(), "{bad}");
        }
        assert_eq!(e.len(), 4);
    }

    #[test]
    fn every_problem_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let htpasswd = dir.path().join("htpasswd");
        let hash = bcrypt::hash("pw", 4).unwrap();
        std::fs::write(
            &htpasswd,
            format!("alice:{hash}\nbob:$apr1$abc$def\n# c\n\nnocolon\n"),
        )
        .unwrap();
        let tokens = dir.path().join("tokens");
        std::fs::write(
            &tokens,
            format!("ci:{}\nalice:{}\nbad:xyz\n", "ab".repeat(32), "cd".repeat(32)),
        )
        .unwrap();
        let text = format!(
            "[auth]\nhtpasswd_file = {:?}\ntokens_file = {:?}\nanonymous = \"maybe\"\n[auth.groups]\nci = [\"ci\"]\n\
             [[access]]\nrepository = \"ghcr.io/org/*\"\nread = [\"@ci\", \"@nope\", \"alice\", \"anonymous\"]\n\
             [[access]]\nread = []\n",
            htpasswd.display().to_string(),
            tokens.display().to_string()
        );
        let e = Config::from_toml_str(&text).unwrap_err().0;
        let all = e.join("\n");
        assert_eq!(e.len(), 7, "{all}");
        assert!(all.contains("(\"bob\"): not a bcrypt hash"), "{all}");
        assert!(all.contains("line 5 is not name:hash"), "{all}");
        assert!(all.contains("(\"bad\"): not the SHA-256"), "{all}");
        assert!(all.contains("\"alice\" is both"), "{all}");
        assert!(all.contains("\"maybe\" is not"), "{all}");
        assert!(all.contains("group @nope is not defined"), "{all}");
        assert!(all.contains("access[1]: repository is required"), "{all}");
        assert!(
            !all.contains(&hash) && !all.contains("$apr1$abc"),
            "no hash is quoted: {all}"
        );
    }

    #[test]
    fn defaults_let_anonymous_read() {
        let c = Config::default();
        assert_eq!(c.auth.anonymous, Anonymous::Read);
        assert!(c.auth.users.is_empty() && c.auth.rules.is_empty());
    }
}
