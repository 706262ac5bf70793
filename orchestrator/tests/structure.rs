// SPDX-License-Identifier: MPL-2.0
//! The layout rules of issue 17, checked on the sources: production code never imports the
//! simulator (`gopswarm-sim` drives the orchestrator, never the reverse), no production crate
//! depends on it, and the orchestrator's modules import each other without circles.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// Module names the simulator had inside the orchestrator before it became its own crate.
const OLD_SIMULATOR_MODULES: [&str; 4] = ["sim", "churn", "traces", "bench"];

/// Workspace crates (by folder) that may depend on the simulator: the simulator itself, the
/// command line (it dispatches `gopswarm simulate` and `bench-control`), and tests.
const MAY_DEPEND_ON_SIM: [&str; 3] = ["sim", "cli", "tests"];

/// The only CLI sources that may import the simulator: the two commands that run it.
const CLI_SIMULATOR_COMMANDS: [&str; 2] = ["commands/simulate.rs", "commands/bench_control.rs"];

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the orchestrator sits in the workspace")
        .to_path_buf()
}

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

/// Lines of Rust source with comments (`//`, `///`, `//!`) left out.
fn code_lines(source: &str) -> impl Iterator<Item = (usize, &str)> {
    source
        .lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.split("//").next().unwrap_or("")))
        .filter(|(_, l)| !l.trim().is_empty())
}

/// What in `source` reaches the simulator: the sim crate, or one of `old_modules` in the
/// same crate (by path or by a `mod` declaration).
fn simulator_imports(source: &str, old_modules: &[&str]) -> Vec<String> {
    let mut found = Vec::new();
    for (n, line) in code_lines(source) {
        let trimmed = line.trim();
        let old_module = old_modules.iter().any(|m| {
            crate_modules(line).contains(*m)
                || trimmed == format!("mod {m};")
                || trimmed == format!("pub mod {m};")
        });
        if line.contains("gopswarm_sim") || old_module {
            found.push(format!("line {n}: {trimmed}"));
        }
    }
    found
}

/// Top-level modules of this crate that a line names (`crate::x::...`, `crate::{x, y}`).
fn crate_modules(line: &str) -> BTreeSet<String> {
    let ident = |s: &str| -> String {
        s.trim()
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect()
    };
    let mut modules = BTreeSet::new();
    for (i, _) in line.match_indices("crate::") {
        // `gopswarm_orchestrator::` and `$crate::` are not this crate's paths.
        if line[..i].ends_with(|c: char| c.is_alphanumeric() || "_$:".contains(c)) {
            continue;
        }
        let rest = &line[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            // The first name of each top-level item of the group (`{a::{b, c}, d}`: a, d).
            let mut depth = 0;
            let mut item_start = true;
            for (j, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => item_start = true,
                    _ if item_start && !c.is_whitespace() => {
                        modules.insert(ident(&group[j..]));
                        item_start = false;
                    }
                    _ => {}
                }
            }
        } else {
            modules.insert(ident(rest));
        }
    }
    modules.retain(|m| !m.is_empty());
    modules
}

/// The top-level module a source file under `src` belongs to (`controller/fleet.rs` is part
/// of `controller`).
fn module_of(src: &Path, file: &Path) -> String {
    let relative = file.strip_prefix(src).unwrap();
    let first = relative.components().next().unwrap().as_os_str();
    Path::new(first)
        .file_stem()
        .unwrap()
        .to_string_lossy()
        .into_owned()
}

/// Which top-level module imports which, from `crate::` paths (a module using its own
/// submodules or itself does not count).
fn module_graph(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in rust_files(src) {
        let module = module_of(src, &file);
        if module == "lib" || module == "main" {
            continue;
        }
        let source = fs::read_to_string(&file).unwrap();
        let uses = graph.entry(module.clone()).or_default();
        for (_, line) in code_lines(&source) {
            uses.extend(crate_modules(line).into_iter().filter(|m| *m != module));
        }
    }
    graph
}

/// A circle in `graph`, as the modules along it, if there is one.
fn find_cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(start) = path.iter().position(|n| n == node) {
            let mut cycle = path[start..].to_vec();
            cycle.push(node.to_string());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_string());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(cycle) = visit(next, graph, path, done) {
                return Some(cycle);
            }
        }
        path.pop();
        done.insert(node.to_string());
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|node| visit(node, graph, &mut Vec::new(), &mut done))
}

fn workspace_members(root: &Path) -> Vec<String> {
    let manifest: toml::Table = fs::read_to_string(root.join("Cargo.toml"))
        .unwrap()
        .parse()
        .expect("workspace Cargo.toml parses");
    manifest["workspace"]["members"]
        .as_array()
        .expect("workspace members")
        .iter()
        .map(|m| m.as_str().unwrap().to_string())
        .collect()
}

/// The dependency tables of a crate manifest that name `gopswarm-sim` (target-specific ones
/// included).
fn sim_dependency_tables(manifest: &toml::Table) -> Vec<String> {
    const KINDS: [&str; 3] = ["dependencies", "dev-dependencies", "build-dependencies"];
    let mut tables: Vec<(String, &toml::Table)> = KINDS
        .iter()
        .filter_map(|k| Some((k.to_string(), manifest.get(*k)?.as_table()?)))
        .collect();
    if let Some(targets) = manifest.get("target").and_then(|t| t.as_table()) {
        for (target, t) in targets {
            for k in KINDS {
                if let Some(table) = t.get(k).and_then(|d| d.as_table()) {
                    tables.push((format!("target.{target}.{k}"), table));
                }
            }
        }
    }
    tables
        .into_iter()
        .filter(|(_, table)| {
            table.iter().any(|(name, spec)| {
                name == "gopswarm-sim"
                    || spec.get("package").and_then(|p| p.as_str()) == Some("gopswarm-sim")
            })
        })
        .map(|(kind, _)| kind)
        .collect()
}

#[test]
fn orchestrator_sources_never_import_the_simulator() {
    let src = workspace_root().join("orchestrator/src");
    let mut offenders = Vec::new();
    for file in rust_files(&src) {
        for hit in simulator_imports(&fs::read_to_string(&file).unwrap(), &OLD_SIMULATOR_MODULES) {
            offenders.push(format!("{}: {hit}", file.display()));
        }
    }
    assert!(
        offenders.is_empty(),
        "production code imports the simulator (move what production needs into the \
         orchestrator; keep generators in sim/):\n{}",
        offenders.join("\n")
    );
}

#[test]
fn only_the_simulator_commands_of_the_cli_import_it() {
    let src = workspace_root().join("cli/src");
    let mut offenders = Vec::new();
    for file in rust_files(&src) {
        let relative = file
            .strip_prefix(&src)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        if CLI_SIMULATOR_COMMANDS.contains(&relative.as_str()) {
            continue;
        }
        // The CLI has a `bench` module of its own: only the sim crate counts here.
        for hit in simulator_imports(&fs::read_to_string(&file).unwrap(), &[]) {
            offenders.push(format!("cli/src/{relative}: {hit}"));
        }
    }
    assert!(
        offenders.is_empty(),
        "only {CLI_SIMULATOR_COMMANDS:?} may use the simulator:\n{}",
        offenders.join("\n")
    );
}

#[test]
fn no_production_crate_depends_on_the_simulator() {
    let root = workspace_root();
    let members = workspace_members(&root);
    assert!(
        members.iter().any(|m| m == "orchestrator") && members.iter().any(|m| m == "sim"),
        "{members:?}"
    );
    let mut offenders = Vec::new();
    for member in members
        .iter()
        .filter(|m| !MAY_DEPEND_ON_SIM.contains(&m.as_str()))
    {
        let manifest: toml::Table = fs::read_to_string(root.join(member).join("Cargo.toml"))
            .unwrap()
            .parse()
            .unwrap_or_else(|e| panic!("{member}/Cargo.toml: {e}"));
        for table in sim_dependency_tables(&manifest) {
            offenders.push(format!("{member}/Cargo.toml [{table}]"));
        }
    }
    assert!(
        offenders.is_empty(),
        "production crates depend on gopswarm-sim: {offenders:?}"
    );
}

#[test]
fn orchestrator_modules_import_each_other_without_circles() {
    let graph = module_graph(&workspace_root().join("orchestrator/src"));
    assert!(graph.contains_key("controller") && graph.contains_key("service"));
    if let Some(cycle) = find_cycle(&graph) {
        panic!(
            "import circle between orchestrator modules: {}",
            cycle.join(" -> ")
        );
    }
}

/// The checks above must be able to fail: they see what they are meant to see.
#[test]
fn the_checks_catch_what_they_look_for() {
    let imports = simulator_imports(
        "// gopswarm_sim in a comment is fine\n\
         use gopswarm_sim::churn::history;\n\
         let t = crate::traces::generate(&cfg); // a trace\n\
         use crate::{forecast, sim};\n\
         pub mod churn;\n\
         use gopswarm_orchestrator::bench_x; let s = crate::simulate::x;",
        &OLD_SIMULATOR_MODULES,
    );
    assert_eq!(imports.len(), 4, "{imports:#?}");
    assert!(imports[0].starts_with("line 2:"), "{imports:#?}");

    assert_eq!(
        crate_modules("use crate::{score::{self, Tier}, learn}; x = $crate::y; a::crate::z"),
        BTreeSet::from(["score".to_string(), "learn".to_string()])
    );

    let graph = |edges: &[(&str, &str)]| {
        let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (a, b) in edges {
            g.entry(a.to_string()).or_default().insert(b.to_string());
        }
        g
    };
    assert_eq!(
        find_cycle(&graph(&[("a", "b"), ("b", "c"), ("c", "a"), ("d", "a")])),
        Some(vec!["a".into(), "b".into(), "c".into(), "a".into()])
    );
    assert_eq!(
        find_cycle(&graph(&[("a", "b"), ("a", "c"), ("b", "c")])),
        None
    );

    let manifest: toml::Table =
        "[dependencies]\nsim = { package = \"gopswarm-sim\", path = \"../sim\" }\n\
         [target.'cfg(unix)'.dev-dependencies]\ngopswarm-sim = { path = \"../sim\" }\n"
            .parse()
            .unwrap();
    assert_eq!(
        sim_dependency_tables(&manifest),
        ["dependencies", "target.cfg(unix).dev-dependencies"]
    );
}
