//! deploy/Containerfile: a multi-stage build whose runtime image runs the shipped configuration,
//! exposes its ports, keeps the cache on a volume, runs as a non-root user and stops on SIGTERM.

use std::collections::BTreeSet;

use super::{container_config, read, repo};

/// The Containerfile's instructions, continuation lines joined and comments dropped:
/// (upper-case instruction, arguments).
fn containerfile() -> Vec<(String, String)> {
    let text = read("deploy/Containerfile");
    let mut out = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('#') || (trimmed.is_empty() && current.is_empty()) {
            continue;
        }
        match trimmed.strip_suffix('\\') {
            Some(part) => {
                current.push_str(part);
                current.push(' ');
            }
            None => {
                current.push_str(trimmed);
                let (instr, args) = current.split_once(char::is_whitespace).unwrap_or((&current, ""));
                out.push((instr.to_ascii_uppercase(), args.trim().to_string()));
                current.clear();
            }
        }
    }
    assert!(current.is_empty(), "Containerfile ends in a continuation line");
    out
}

fn instruction_args<'a>(instrs: &'a [(String, String)], name: &str) -> Vec<&'a str> {
    instrs
        .iter()
        .filter(|(i, _)| i == name)
        .map(|(_, a)| a.as_str())
        .collect()
}

/// The ENTRYPOINT, which must be in exec form (a JSON array) so regcache gets SIGTERM itself.
fn containerfile_entrypoint() -> Vec<String> {
    let instrs = containerfile();
    let entry = instruction_args(&instrs, "ENTRYPOINT");
    assert_eq!(entry.len(), 1, "exactly one ENTRYPOINT: {entry:?}");
    serde_json::from_str(entry[0])
        .unwrap_or_else(|e| panic!("ENTRYPOINT is not in exec (JSON array) form: {e}: {}", entry[0]))
}

/// The configuration path the image's ENTRYPOINT passes to `regcache serve --config`.
pub(super) fn containerfile_config_path() -> String {
    let entry = containerfile_entrypoint();
    let at = entry
        .iter()
        .position(|a| a == "--config")
        .expect("ENTRYPOINT passes --config");
    entry[at + 1].clone()
}

/// The image's numeric user id (`USER uid[:gid]`).
pub(super) fn containerfile_uid() -> u64 {
    let instrs = containerfile();
    let user = instruction_args(&instrs, "USER");
    let last = user.last().expect("the image sets a USER");
    last.split(':')
        .next()
        .unwrap()
        .parse()
        .unwrap_or_else(|_| panic!("USER {last} is not numeric; runAsNonRoot needs a numeric uid"))
}

#[test]
fn containerfile_builds_and_runs_the_shipped_config() {
    let instrs = containerfile();
    let froms = instruction_args(&instrs, "FROM");
    assert!(froms.len() >= 2, "a multi-stage build: {froms:?}");
    assert!(
        froms[0].starts_with("rust:") && froms[0].contains(" AS "),
        "the first stage builds with a rust image: {}",
        froms[0]
    );
    let runtime = froms.last().unwrap();
    assert!(
        runtime.starts_with("debian:bookworm-slim") || runtime.starts_with("gcr.io/distroless/cc-debian12"),
        "small runtime image: {runtime}"
    );
    let runs = instruction_args(&instrs, "RUN").join("\n");
    assert!(runs.contains("cargo build --release --locked"), "{runs}");
    if runtime.starts_with("debian") {
        assert!(
            runs.contains("ca-certificates"),
            "the runtime needs the system CA roots"
        );
    }

    // Every COPY from the build context names something that exists, and the shipped config is
    // what ENTRYPOINT reads.
    let config_path = containerfile_config_path();
    let mut config_copied = false;
    for args in instruction_args(&instrs, "COPY") {
        if args.starts_with("--from") {
            continue;
        }
        let words: Vec<&str> = args.split_whitespace().filter(|w| !w.starts_with("--")).collect();
        let (dest, sources) = words.split_last().unwrap();
        for src in sources {
            assert!(repo().join(src).exists(), "COPY {src}: not in the repository");
            if *src == "deploy/container/regcache.toml" && *dest == config_path {
                config_copied = true;
            }
        }
    }
    assert!(
        config_copied,
        "deploy/container/regcache.toml is copied to {config_path}, the path ENTRYPOINT uses"
    );
    let entry = containerfile_entrypoint();
    assert!(
        entry[0].ends_with("/regcache") && entry[1] == "serve",
        "{entry:?}"
    );

    let config = container_config();
    let exposed: BTreeSet<u16> = instruction_args(&instrs, "EXPOSE")
        .iter()
        .flat_map(|a| a.split_whitespace())
        .map(|p| p.trim_end_matches("/tcp").parse().unwrap())
        .collect();
    assert!(exposed.contains(&config.listen.port()), "EXPOSE {exposed:?}");
    assert!(
        exposed.contains(&config.admin_listen.port()),
        "EXPOSE {exposed:?}"
    );
    let volumes = instruction_args(&instrs, "VOLUME").join(" ");
    assert!(
        volumes.contains(&*config.cache.dir.to_string_lossy()),
        "the cache dir is a VOLUME: {volumes}"
    );
    assert_ne!(containerfile_uid(), 0, "the image runs as a non-root user");
    assert_eq!(instruction_args(&instrs, "STOPSIGNAL"), ["SIGTERM"]);
}
