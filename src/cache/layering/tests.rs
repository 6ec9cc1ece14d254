//! The rules applied to `src/cache/`, and the reader behind them tried on small sources.

use super::*;

#[test]
fn src_cache_keeps_its_shape() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/cache");
    let bad = violations(&dir);
    assert!(bad.is_empty(), "src/cache/ breaks its rules:\n{}", bad.join("\n"));
}

#[test]
fn imports_are_found_in_use_lines_and_paths_but_not_in_comments_or_strings() {
    let code = blank(concat!(
        "//! see `super::doc`\n",
        "use super::{a, b::{C, D}, c::*};\n",
        "use super::d::E as F;\n",
        "use crate::cache::e;\n",
        "fn f() { super::g::h(); let s = \"super::x\"; let c = '{'; }\n",
        "/* super::y */ fn l<'a>(x: &'a str) { crate::cache::i::j(x) }\n",
        "mod tests { use super::*; use super::super::k; }\n",
        "use super::super::outside;\n",
    ));
    let got: Vec<String> = imports(&code, 0).into_iter().collect();
    assert_eq!(got, ["a", "b", "c", "d", "e", "g", "i", "k"]);
    assert_eq!(
        imports("use super::super::x;", 1).into_iter().collect::<Vec<_>>(),
        ["x"]
    );
    assert!(
        imports("use super::x;", 1).is_empty(),
        "inside its own parent file"
    );
}

#[test]
fn circles_and_long_functions_are_found() {
    let graph: BTreeMap<String, BTreeSet<String>> = [("a", "b"), ("b", "c"), ("c", "a"), ("d", "a")]
        .into_iter()
        .map(|(x, y)| (x.to_string(), BTreeSet::from([y.to_string()])))
        .collect();
    assert_eq!(circles(&graph), ["a -> b -> c -> a"]);
    let body = "fn long() {\n".to_string() + &"    x();\n".repeat(3) + "}\nfn short() {}\n";
    assert_eq!(long_functions(&body, 4), [("long".to_string(), 1, 5)]);
    assert!(long_functions("fn decl(x: fn(u8) -> u8);\nfn f() {}\n", 0).len() == 1);
}
