//! The shape rules of `src/cache/`, checked by reading its sources (a test, compiled only for
//! `cargo test`): no file imports a file that imports it back, directly or around a circle; no
//! file names an item of `cache.rs` itself (the parent declares and re-exports every file, so
//! that is a circle too: import from the file that defines the item); no file is over
//! `MAX_FILE_LINES` lines and no function over `MAX_FN_LINES`.
//!
//! An import is any path `super::x` or `crate::cache::x` in the code, on a `use` line or inside
//! an expression, after comments and literals are blanked out. Inside an inline module (`mod
//! tests { .. }`) `super::` is the file itself and only `super::super::x` reaches a sibling; a
//! file in a subdirectory (`index/tests.rs`) counts as part of its parent's file. So test modules
//! are held to the same rule as the code: they import only downwards.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const MAX_FILE_LINES: usize = 400;
const MAX_FN_LINES: usize = 80;

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    Path,
    Open,
    Close,
    Comma,
    Star,
    Other(char),
}

/// `src` with comments and the insides of string and char literals turned into spaces; lines
/// stay where they were.
fn blank(src: &str) -> String {
    let c: Vec<char> = src.chars().collect();
    let mut out = String::with_capacity(src.len());
    let mut i = 0;
    let keep = |ch: char| if ch == '\n' { '\n' } else { ' ' };
    while i < c.len() {
        let ident_before = i > 0 && (c[i - 1].is_alphanumeric() || c[i - 1] == '_');
        let end = match c[i] {
            '/' if c.get(i + 1) == Some(&'/') => (i..c.len()).find(|&j| c[j] == '\n'),
            '/' if c.get(i + 1) == Some(&'*') => Some(block_comment_end(&c, i)),
            '"' => Some(string_end(&c, i + 1)),
            'r' if !ident_before => raw_string_end(&c, i + 1),
            '\'' => char_end(&c, i),
            _ => None,
        };
        match end {
            Some(end) => {
                out.extend(c[i..end].iter().map(|&ch| keep(ch)));
                i = end;
            }
            None if c[i] == '/' && c.get(i + 1) == Some(&'/') => break,
            None => {
                out.push(c[i]);
                i += 1;
            }
        }
    }
    out
}

fn block_comment_end(c: &[char], start: usize) -> usize {
    let (mut depth, mut i) = (0, start);
    while i < c.len() {
        if c[i] == '/' && c.get(i + 1) == Some(&'*') {
            depth += 1;
            i += 2;
        } else if c[i] == '*' && c.get(i + 1) == Some(&'/') {
            depth -= 1;
            i += 2;
            if depth == 0 {
                return i;
            }
        } else {
            i += 1;
        }
    }
    c.len()
}

/// The end of a string literal whose contents start at `i`.
fn string_end(c: &[char], mut i: usize) -> usize {
    while i < c.len() {
        match c[i] {
            '\\' => i += 2,
            '"' => return i + 1,
            _ => i += 1,
        }
    }
    c.len()
}

/// The end of a raw string `r#"..."#` whose hashes start at `i`; None if it is not one.
fn raw_string_end(c: &[char], i: usize) -> Option<usize> {
    let hashes = c[i..].iter().take_while(|&&ch| ch == '#').count();
    if c.get(i + hashes) != Some(&'"') {
        return None;
    }
    let close: Vec<char> = std::iter::once('"')
        .chain(std::iter::repeat_n('#', hashes))
        .collect();
    (i + hashes + 1..c.len())
        .find(|&j| c[j..].starts_with(&close))
        .map(|j| j + close.len())
}

/// The end of a char literal at `i`; None for a lifetime.
fn char_end(c: &[char], i: usize) -> Option<usize> {
    if c.get(i + 1) == Some(&'\\') {
        return (i + 3..c.len()).find(|&j| c[j] == '\'').map(|j| j + 1);
    }
    (c.get(i + 2) == Some(&'\'')).then_some(i + 3)
}

/// Tokens of blanked code, each with its line (1-based).
fn tokens(code: &str) -> Vec<(Tok, usize)> {
    let c: Vec<char> = code.chars().collect();
    let (mut out, mut i, mut line) = (Vec::new(), 0, 1);
    while i < c.len() {
        let ch = c[i];
        if ch.is_alphanumeric() || ch == '_' {
            let start = i;
            while i < c.len() && (c[i].is_alphanumeric() || c[i] == '_') {
                i += 1;
            }
            out.push((Tok::Ident(c[start..i].iter().collect()), line));
            continue;
        }
        let tok = match ch {
            '\n' => {
                line += 1;
                None
            }
            ':' if c.get(i + 1) == Some(&':') => {
                i += 1;
                Some(Tok::Path)
            }
            '{' => Some(Tok::Open),
            '}' => Some(Tok::Close),
            ',' => Some(Tok::Comma),
            '*' => Some(Tok::Star),
            c if c.is_whitespace() => None,
            c => Some(Tok::Other(c)),
        };
        out.extend(tok.map(|t| (t, line)));
        i += 1;
    }
    out
}

fn ident(t: Option<&(Tok, usize)>) -> Option<&str> {
    match t {
        Some((Tok::Ident(s), _)) => Some(s),
        _ => None,
    }
}

/// For every token, how many inline modules (`mod x { .. }`) enclose it.
fn inline_depths(toks: &[(Tok, usize)]) -> Vec<usize> {
    let (mut braces, mut mods, mut out) = (0usize, Vec::new(), Vec::with_capacity(toks.len()));
    for (i, (t, _)) in toks.iter().enumerate() {
        match t {
            Tok::Open => {
                braces += 1;
                let is_mod = i >= 2 && ident(toks.get(i - 2)) == Some("mod");
                if is_mod && ident(toks.get(i - 1)).is_some() {
                    mods.push(braces);
                }
            }
            Tok::Close => {
                if mods.last() == Some(&braces) {
                    mods.pop();
                }
                braces = braces.saturating_sub(1);
            }
            _ => {}
        }
        out.push(mods.len());
    }
    out
}

/// The names a path continues with after `at`: one segment, or the first segment of each item
/// of a `{ .. }` group; `*` for a glob.
fn named(toks: &[(Tok, usize)], at: usize) -> Vec<String> {
    match toks.get(at) {
        Some((Tok::Ident(s), _)) => vec![s.clone()],
        Some((Tok::Star, _)) => vec!["*".into()],
        Some((Tok::Open, _)) => {
            let (mut depth, mut first, mut out) = (0, true, Vec::new());
            for (t, _) in &toks[at..] {
                match t {
                    Tok::Open => depth += 1,
                    Tok::Close if depth == 1 => break,
                    Tok::Close => depth -= 1,
                    Tok::Comma if depth == 1 => first = true,
                    Tok::Ident(s) if depth == 1 && first => {
                        out.push(s.clone());
                        first = false;
                    }
                    Tok::Star if depth == 1 && first => out.push("*".into()),
                    _ => {}
                }
            }
            out
        }
        _ => Vec::new(),
    }
}

/// The names of `cache::` a file reaches: after `super::` from its top level (one more
/// `super::` per enclosing module), or after `crate::cache::`. `base` is how deep the file
/// itself sits below its top-level file.
fn imports(code: &str, base: usize) -> BTreeSet<String> {
    let toks = tokens(code);
    let depths = inline_depths(&toks);
    let mut out = BTreeSet::new();
    let mut i = 0;
    while i < toks.len() {
        let level = base + depths[i];
        let mut supers = 0;
        while ident(toks.get(i + 2 * supers)) == Some("super")
            && toks.get(i + 2 * supers + 1).map(|t| &t.0) == Some(&Tok::Path)
        {
            supers += 1;
        }
        let is_crate_cache = ident(toks.get(i)) == Some("crate")
            && ident(toks.get(i + 2)) == Some("cache")
            && toks.get(i + 3).map(|t| &t.0) == Some(&Tok::Path);
        let preceded_by_path = i > 0 && toks[i - 1].0 == Tok::Path;
        if supers == level + 1 && !preceded_by_path {
            out.extend(named(&toks, i + 2 * supers));
        } else if is_crate_cache {
            out.extend(named(&toks, i + 4));
        }
        i += (2 * supers).max(1);
    }
    out
}

/// Functions longer than `max` lines, from `fn` to the closing brace: (name, first line, lines).
fn long_functions(code: &str, max: usize) -> Vec<(String, usize, usize)> {
    let toks = tokens(code);
    let mut out = Vec::new();
    for (i, (t, line)) in toks.iter().enumerate() {
        let (Tok::Ident(kw), Some(name)) = (t, ident(toks.get(i + 1))) else {
            continue;
        };
        if kw != "fn" {
            continue;
        }
        let body = toks[i..]
            .iter()
            .position(|(t, _)| matches!(t, Tok::Open | Tok::Other(';')));
        let Some(open) = body.map(|b| i + b).filter(|&o| toks[o].0 == Tok::Open) else {
            continue;
        };
        let mut depth = 0;
        for (t, end) in &toks[open..] {
            match t {
                Tok::Open => depth += 1,
                Tok::Close => depth -= 1,
                _ => {}
            }
            if depth == 0 {
                let lines = end - line + 1;
                if lines > max {
                    out.push((name.to_string(), *line, lines));
                }
                break;
            }
        }
    }
    out
}

/// The circles of a graph, each as the path that closes it.
fn circles(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<String> {
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
        found: &mut Vec<String>,
    ) {
        if let Some(at) = path.iter().position(|p| p == node) {
            found.push(format!("{} -> {node}", path[at..].join(" -> ")));
            return;
        }
        if !done.insert(node.to_string()) {
            return;
        }
        path.push(node.to_string());
        for next in graph.get(node).into_iter().flatten() {
            visit(next, graph, path, done, found);
        }
        path.pop();
    }
    let (mut done, mut found) = (BTreeSet::new(), Vec::new());
    for node in graph.keys() {
        visit(node, graph, &mut Vec::new(), &mut done, &mut found);
    }
    found
}

/// Every `.rs` file under `dir`, with its path relative to it.
fn sources(dir: &Path) -> Vec<(PathBuf, String)> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for entry in std::fs::read_dir(&d).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                todo.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).unwrap();
                out.push((path.strip_prefix(dir).unwrap().to_path_buf(), text));
            }
        }
    }
    out
}

/// Every broken rule of the files under `dir`, one line each.
fn violations(dir: &Path) -> Vec<String> {
    let files = sources(dir);
    let modules: BTreeSet<String> = files
        .iter()
        .filter(|(rel, _)| rel.components().count() == 1)
        .filter_map(|(rel, _)| Some(rel.file_stem()?.to_str()?.to_string()))
        .collect();
    let (mut graph, mut bad) = (BTreeMap::<String, BTreeSet<String>>::new(), Vec::new());
    for (rel, text) in &files {
        let node = rel.with_extension("");
        let node = node
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy()
            .into_owned();
        let code = blank(text);
        let lines = text.lines().count();
        if lines > MAX_FILE_LINES {
            bad.push(format!(
                "{}: {lines} lines (at most {MAX_FILE_LINES})",
                rel.display()
            ));
        }
        for (name, line, n) in long_functions(&code, MAX_FN_LINES) {
            bad.push(format!(
                "{}:{line}: fn {name} has {n} lines (at most {MAX_FN_LINES})",
                rel.display()
            ));
        }
        for name in imports(&code, rel.components().count() - 1) {
            if modules.contains(&name) {
                if name != node {
                    graph.entry(node.clone()).or_default().insert(name);
                }
            } else {
                bad.push(format!(
                    "{}: names `{name}` of cache.rs; import it from its own file",
                    rel.display()
                ));
            }
        }
        graph.entry(node).or_default();
    }
    bad.extend(circles(&graph).into_iter().map(|c| format!("import circle: {c}")));
    bad
}

#[cfg(test)]
mod tests;
