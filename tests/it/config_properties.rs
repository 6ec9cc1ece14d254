//! `Config::from_toml_str` on arbitrary input: any text, and TOML documents whose keys are the
//! ones the file format knows but whose values are of any type and size. It must answer (a
//! config or a list of problems), never panic. Validation only reads files, and the values here
//! name none that exist.

use proptest::prelude::*;
use regcache::config::Config;
use toml::{Table, Value};

const TABLES: &[(&str, &[&str])] = &[
    ("admin", &["listen", "token_file"]),
    ("tls", &["cert_file", "key_file", "client_ca_file", "client_auth"]),
    ("log", &["format", "level"]),
    (
        "cache",
        &[
            "dir",
            "tag_ttl",
            "negative_ttl",
            "revalidate_timeout",
            "max_size",
            "high_watermark",
            "low_watermark",
        ],
    ),
    (
        "fetch",
        &[
            "connect_timeout",
            "read_timeout",
            "max_manifest_size",
            "finish_abandoned",
            "breaker_threshold",
        ],
    ),
];

const ROOT: &[&str] = &[
    "listen",
    "builtin_upstreams",
    "offline",
    "shutdown_grace",
    "unknown_key",
];

const UPSTREAM: &[&str] = &[
    "host",
    "url",
    "default",
    "max_connections",
    "credential_lifetime",
    "offline",
    "redirect_hosts",
    "username",
];

/// Scalars and small arrays/tables, with edge values: huge numbers, NaN, odd strings.
fn value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        any::<i64>().prop_map(Value::Integer),
        prop_oneof![Just(-1i64), Just(0), Just(1), Just(i64::MAX)].prop_map(Value::Integer),
        any::<f64>().prop_map(Value::Float),
        any::<bool>().prop_map(Value::Boolean),
        "\\PC{0,30}".prop_map(Value::String),
        prop_oneof![
            Just("0s"),
            Just("18446744073709551615s"),
            Just("99999999999h"),
            Just("1e400"),
            Just("-1 GiB"),
            Just("0.0.0.0:99999"),
            Just("http://169.254.169.254"),
            Just("[::1]:0"),
            Just(""),
        ]
        .prop_map(|s| Value::String(s.into())),
    ];
    leaf.prop_recursive(2, 8, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("[a-z_]{1,8}", inner, 0..3)
                .prop_map(|m| Value::Table(m.into_iter().collect())),
        ]
    })
}

/// A table holding a random subset of `keys`, each with a random value.
fn table(keys: &'static [&'static str]) -> impl Strategy<Value = Table> {
    prop::collection::vec((prop::sample::select(keys), value()), 0..5)
        .prop_map(|pairs| pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
}

fn document() -> impl Strategy<Value = Table> {
    let sections: Vec<_> = TABLES
        .iter()
        .map(|(name, keys)| (Just(*name), table(keys)))
        .collect();
    (
        table(ROOT),
        sections,
        prop::collection::vec(table(UPSTREAM), 0..3),
    )
        .prop_map(|(mut root, sections, upstreams)| {
            for (name, t) in sections {
                root.insert(name.into(), Value::Table(t));
            }
            let upstreams = upstreams.into_iter().map(Value::Table).collect();
            root.insert("upstreams".into(), Value::Array(upstreams));
            root
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn arbitrary_text_never_panics(text in "\\PC{0,200}|[\\[\\]a-z_=\"\\n .0-9]{0,200}") {
        let _ = Config::from_toml_str(&text);
    }

    #[test]
    fn arbitrary_values_never_panic(doc in document()) {
        let Ok(text) = toml::to_string(&doc) else { return Ok(()) };
        if let Err(e) = Config::from_toml_str(&text) {
            prop_assert!(!e.to_string().is_empty());
        }
    }
}
