//! Checks the host's module map (tests only): every `crate::` path in a
//! module's code points to a module of a lower layer, so that the data flow
//! reads one way and no import cycle can come back unnoticed. The layers are
//! the ones docs/architecture.md draws.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// The host's top-level modules, lowest first; a module may use only the
/// modules of lower layers.
const LAYERS: &[&[&str]] = &[
    &["topic", "error", "credentials"],
    &["ledger", "runtime"],
    &["trust", "plugins"],
    &["bus"],
    &["settle"],
    &["dispatch"],
    &["node"],
    &["config"],
    &["host"],
    &["gateway"],
];

/// Modules that are not part of the map: checks that exist only in tests.
const TEST_ONLY: &[&str] = &["protocol_doc", "layers"];

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|layer| layer.contains(&module))
}

/// The code of a file: no comment lines, nothing from its `#[cfg(test)]`
/// module on.
fn code_of(text: &str) -> String {
    let end = text.find("#[cfg(test)]\nmod tests").unwrap_or(text.len());
    text[..end].lines().filter(|l| !l.trim_start().starts_with("//")).collect::<Vec<_>>().join("\n")
}

/// The first names after each `crate::` in `code`: `crate::bus::Task` gives
/// `bus`, `crate::{bus, ledger::Ledger}` gives `bus` and `ledger`.
fn crate_paths(code: &str) -> Vec<String> {
    let ident = |s: &str| s.trim().split(|c: char| !(c.is_alphanumeric() || c == '_')).next().unwrap_or("").to_owned();
    let mut found = Vec::new();
    for (i, _) in code.match_indices("crate::") {
        let rest = &code[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let group = &group[..group.find('}').unwrap_or(group.len())];
            found.extend(group.split(',').map(ident).filter(|s| !s.is_empty()));
        } else {
            found.push(ident(rest));
        }
    }
    found
}

/// What the crate root re-exports, by name: `pub use bus::Decision` maps
/// `Decision` to `bus`.
fn root_exports(lib: &str) -> BTreeMap<String, String> {
    let mut map = BTreeMap::new();
    for line in lib.lines().filter_map(|l| l.strip_prefix("pub use ")) {
        let Some((module, names)) = line.trim_end_matches(';').split_once("::") else { continue };
        let names = names.trim_start_matches('{').trim_end_matches('}');
        for name in names.split(',') {
            map.insert(name.trim().to_owned(), module.to_owned());
        }
    }
    map
}

fn sources(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("readable src folder").flatten() {
        let path = entry.path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Every module's uses of other top-level modules.
fn edges() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let exports = root_exports(&std::fs::read_to_string(src.join("lib.rs")).expect("lib.rs"));
    let mut files = Vec::new();
    sources(&src, &mut files);
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in files {
        let relative = file.strip_prefix(&src).expect("under src");
        let first = relative.components().next().expect("a path").as_os_str().to_string_lossy();
        let module = first.trim_end_matches(".rs").to_owned();
        if ["lib", "main"].contains(&module.as_str()) || TEST_ONLY.contains(&module.as_str()) {
            continue;
        }
        let code = code_of(&std::fs::read_to_string(&file).expect("readable source"));
        for used in crate_paths(&code) {
            let target = exports.get(&used).cloned().unwrap_or(used);
            if target != module {
                edges.entry(module.clone()).or_default().insert(target);
            }
        }
    }
    edges
}

#[test]
fn every_module_uses_only_lower_layers() {
    let mut wrong = Vec::new();
    for (module, uses) in edges() {
        let Some(from) = layer_of(&module) else {
            wrong.push(format!("module {module} is not in the layer map"));
            continue;
        };
        for target in uses {
            match layer_of(&target) {
                Some(to) if to < from => {}
                Some(_) => wrong.push(format!("{module} uses {target}, which is not below it")),
                None => wrong.push(format!("{module} uses {target}, which is not in the layer map")),
            }
        }
    }
    assert!(wrong.is_empty(), "the module map is broken:\n{}", wrong.join("\n"));
}

#[test]
fn the_checker_sees_paths_and_groups() {
    let code = code_of(
        "use crate::{bus, ledger::Ledger};\n// crate::cli in a comment\nfn f() { crate::topic::Topic::parse(\"a\"); }\n#[cfg(test)]\nmod tests { use crate::node; }",
    );
    assert_eq!(crate_paths(&code), ["bus", "ledger", "topic"]);
    let exports = root_exports("pub use bus::Decision;\npub use host::{Host, PluginWatch};\n");
    assert_eq!(exports.get("PluginWatch").map(String::as_str), Some("host"));
}
