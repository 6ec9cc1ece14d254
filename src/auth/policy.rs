//! One configuration's users, tokens, groups, rules and private upstreams, and the read
//! decision over them. Immutable; a reload replaces the whole policy at once.

use std::collections::{HashMap, HashSet};

use crate::config::{AccessRule, Anonymous, AuthConfig, Reader};
use crate::secret::Secret;

pub(super) struct Policy {
    pub(super) users: HashMap<String, Secret>,
    pub(super) tokens: HashMap<String, [u8; 32]>,
    /// member → the groups it is in.
    groups: HashMap<String, HashSet<String>>,
    rules: Vec<AccessRule>,
    anonymous_read: bool,
    private: HashSet<String>,
}

impl Policy {
    pub(super) fn new(config: &AuthConfig, private: impl IntoIterator<Item = String>) -> Policy {
        let mut groups: HashMap<String, HashSet<String>> = HashMap::new();
        for (group, members) in &config.groups {
            for m in members {
                groups.entry(m.clone()).or_default().insert(group.clone());
            }
        }
        Policy {
            users: config.users.iter().cloned().collect(),
            tokens: config.tokens.iter().cloned().collect(),
            groups,
            rules: config.rules.clone(),
            anonymous_read: config.anonymous == Anonymous::Read,
            private: private.into_iter().collect(),
        }
    }

    /// Some content needs credentials, or there is someone to log in as.
    pub(super) fn wants_login(&self) -> bool {
        !self.anonymous_read || !self.private.is_empty() || !self.users.is_empty() || !self.tokens.is_empty()
    }

    fn admits(&self, reader: &Reader, who: Option<&str>) -> bool {
        match reader {
            Reader::Anonymous => true,
            Reader::Authenticated => who.is_some(),
            Reader::User(u) => who == Some(u.as_str()),
            Reader::Group(g) => who
                .and_then(|w| self.groups.get(w))
                .is_some_and(|gs| gs.contains(g)),
        }
    }

    /// May `who` (`None`: anonymous) read `<upstream>/<repo>`? `Err` says why not.
    pub(super) fn may_read(&self, who: Option<&str>, upstream: &str, repo: &str) -> Result<(), String> {
        if who.is_none() && self.private.contains(upstream) {
            return Err(format!("{upstream} is private: log in to read {upstream}/{repo}"));
        }
        match self.rules.iter().find(|r| r.repository.matches(upstream, repo)) {
            Some(rule) if rule.read.iter().any(|r| self.admits(r, who)) => Ok(()),
            Some(rule) => Err(format!(
                "the access rule for {:?} does not let {} read {upstream}/{repo}",
                rule.repository.text,
                who.unwrap_or("anonymous clients")
            )),
            None if who.is_some() || self.anonymous_read => Ok(()),
            None => Err(format!("log in to read {upstream}/{repo}")),
        }
    }

    /// May `who` push to `<namespace>/<repo>`? Only a rule's `write` list says yes: with no rule,
    /// nobody writes (a registry on a network is not open for pushes by default).
    pub(super) fn may_write(&self, who: Option<&str>, namespace: &str, repo: &str) -> Result<(), String> {
        match self.rules.iter().find(|r| r.repository.matches(namespace, repo)) {
            Some(rule) if rule.write.iter().any(|r| self.admits(r, who)) => Ok(()),
            Some(rule) => Err(format!(
                "the access rule for {:?} does not let {} push to {namespace}/{repo}",
                rule.repository.text,
                who.unwrap_or("anonymous clients")
            )),
            None => Err(format!(
                "no [[access]] rule gives write to {namespace}/{repo}; pushes need one"
            )),
        }
    }
}
