//! Unknown keys, found before the file is deserialized: the parsed TOML is walked against the
//! fields each table of `file.rs` accepts, every unknown key becomes one readable problem naming
//! it, and it is removed, so the rest of the file is still validated and every problem is reported
//! at once. The structs in `file.rs` keep `deny_unknown_fields` as a backstop; a test keeps the
//! lists here and those structs in step.

use toml::{Table, Value};

/// The keys a table of the file accepts (`cache`, `storage`, ...); empty for an unknown table.
pub fn table_keys(table: &str) -> &'static [&'static str] {
    TABLES.iter().find(|(n, _)| *n == table).map_or(&[], |(_, k)| *k)
}

/// The top-level keys.
const ROOT: &[&str] = &[
    "listen",
    "builtin_upstreams",
    "offline",
    "shutdown_grace",
    "max_connections",
    "idle_timeout",
    "sendfile",
    "admin",
    "log",
    "cache",
    "fetch",
    "tls",
    "upstreams",
    "auth",
    "access",
    "hosted",
    "storage",
];

/// The keys of each table (`upstreams` is an array of tables).
const TABLES: &[(&str, &[&str])] = &[
    ("admin", &["listen", "token_file"]),
    ("tls", &["cert_file", "key_file", "client_ca_file", "client_auth"]),
    ("log", &["format", "level"]),
    ("auth", &["htpasswd_file", "tokens_file", "anonymous", "groups"]),
    ("access", &["repository", "read", "write"]),
    (
        "storage",
        &[
            "kind",
            "bucket",
            "endpoint",
            "region",
            "prefix",
            "path_style",
            "access_key_id",
            "secret_access_key_file",
            "max_size",
            "gc_grace",
        ],
    ),
    (
        "hosted",
        &["prefix", "create_on_push", "immutable_tags", "max_size"],
    ),
    (
        "cache",
        &[
            "dir",
            "tag_ttl",
            "negative_ttl",
            "revalidate_timeout",
            "revalidate",
            "max_size",
            "high_watermark",
            "low_watermark",
            "unused_ttl",
        ],
    ),
    (
        "fetch",
        &[
            "connect_timeout",
            "read_timeout",
            "header_timeout",
            "max_manifest_size",
            "finish_abandoned",
            "breaker_threshold",
            "breaker_probe_interval",
            "proxy",
            "no_proxy",
        ],
    ),
    (
        "upstreams",
        &[
            "host",
            "url",
            "default",
            "username",
            "password",
            "password_file",
            "password_env",
            "docker_config",
            "credential_helper",
            "credential_lifetime",
            "max_connections",
            "ca_file",
            "offline",
            "client_cert_file",
            "client_key_file",
            "redirect_hosts",
            "private",
            "public",
            "send_ns",
            "fallback",
        ],
    ),
];

/// Removes every key the file format does not know from `root`, with one problem each.
pub(super) fn remove_unknown(errors: &mut Vec<String>, root: &mut Table) {
    strip(errors, "", "the top level", ROOT, root);
    for (name, known) in TABLES {
        match root.get_mut(*name) {
            Some(Value::Table(t)) => strip(errors, &format!("{name}."), &format!("[{name}]"), known, t),
            Some(Value::Array(entries)) => {
                for (i, entry) in entries.iter_mut().enumerate() {
                    if let Value::Table(t) = entry {
                        let at = format!("{name}[{i}]");
                        strip(errors, &format!("{at}."), &format!("[[{name}]]"), known, t);
                    }
                }
            }
            _ => {}
        }
    }
}

fn strip(errors: &mut Vec<String>, prefix: &str, place: &str, known: &[&str], table: &mut Table) {
    let unknown: Vec<String> = table
        .keys()
        .filter(|k| !known.contains(&k.as_str()))
        .cloned()
        .collect();
    for key in unknown {
        table.remove(&key);
        errors.push(format!(
            "{prefix}{key}: unknown field; {place} has {}",
            known.join(", ")
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::super::file::{
        FileAccess, FileAdmin, FileAuth, FileCache, FileConfig, FileFetch, FileHosted, FileLog, FileStorage,
        FileUpstream,
    };
    use super::*;

    /// The fields a `deny_unknown_fields` struct names when it meets an unknown one.
    fn fields_of<T: serde::de::DeserializeOwned>() -> Vec<String> {
        let e = toml::from_str::<T>("surely_unknown_key = 0")
            .err()
            .expect("an unknown key is refused");
        let message = e.message().to_string();
        // serde says "expected `a` or `b`" for two fields, "expected one of `a`, `b`, ..." for more.
        let list = message
            .split_once(", expected ")
            .map(|(_, l)| l.trim_start_matches("one of "))
            .unwrap_or_else(|| panic!("serde lists the fields: {message}"));
        list.split([',', ' '])
            .filter(|f| f.starts_with('`'))
            .map(|f| f.trim_matches('`').to_string())
            .collect()
    }

    fn sorted(keys: &[&str]) -> Vec<String> {
        let mut v: Vec<String> = keys.iter().map(|k| k.to_string()).collect();
        v.sort();
        v
    }

    fn known(table: &str) -> &'static [&'static str] {
        let keys = table_keys(table);
        assert!(!keys.is_empty(), "no table {table}");
        keys
    }

    #[test]
    fn the_lists_match_the_file_format() {
        let check = |mut fields: Vec<String>, keys: &[&str]| {
            fields.sort();
            assert_eq!(fields, sorted(keys));
        };
        check(fields_of::<FileConfig>(), ROOT);
        check(fields_of::<FileAdmin>(), known("admin"));
        check(fields_of::<FileLog>(), known("log"));
        check(fields_of::<FileCache>(), known("cache"));
        check(fields_of::<FileFetch>(), known("fetch"));
        check(fields_of::<FileUpstream>(), known("upstreams"));
        check(fields_of::<FileAuth>(), known("auth"));
        check(fields_of::<FileAccess>(), known("access"));
        check(fields_of::<FileHosted>(), known("hosted"));
        check(fields_of::<FileStorage>(), known("storage"));
    }

    #[test]
    fn every_unknown_key_is_named_and_removed() {
        let mut root: Table = toml::from_str(
            "colour = 1\n[cache]\nsize = 1\ndir = \"x\"\n[[upstreams]]\nhost = \"a\"\n[[upstreams]]\npasword = \"p\"\n",
        )
        .unwrap();
        let mut errors = Vec::new();
        remove_unknown(&mut errors, &mut root);
        assert_eq!(errors.len(), 3, "{errors:?}");
        assert!(errors[0].starts_with("colour: unknown field"), "{errors:?}");
        assert!(
            errors[1].starts_with("cache.size: unknown field; [cache] has dir,"),
            "{errors:?}"
        );
        assert!(
            errors[2].starts_with("upstreams[1].pasword: unknown field"),
            "{errors:?}"
        );
        assert!(!errors[2].contains("\"p\""), "values are not quoted: {errors:?}");
        let _: FileConfig = root.try_into().expect("the rest deserializes");
    }
}
