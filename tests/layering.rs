//! The layering rule of `src/lib.rs`, held by reading the source: every `crate::…` path a file names (outside its
//! `#[cfg(test)]` code) must point down or sideways within its own folder, never up and never into another
//! program; and the synchronous core must not touch tokio, axum, hyper, the file system, the clock or the
//! environment.

use std::{
    collections::BTreeSet,
    fs,
    path::{Path, PathBuf},
};

/// The folders of `src/`, bottom first, with what each may use besides itself.
const LAYERS: &[(&str, &[&str])] = &[
    ("support", &[]),
    ("core", &["support"]),
    ("review", &["core", "support"]),
    ("follow", &["core", "support"]),
    ("webhook", &["follow", "review", "core", "support"]),
    ("adapter", &["follow", "review", "core", "support"]),
    ("streamer", &["follow", "review", "core", "support"]),
    ("ambassador", &["follow", "review", "core", "support"]),
    ("offline", &["follow", "review", "core", "support"]),
    ("certs", &["follow", "review", "core", "support"]),
    ("doctor", &["follow", "review", "core", "support"]),
    ("watchdog", &["follow", "review", "core", "support"]),
];

/// Inside the core, the order of `src/core/mod.rs`: a module may use those of its rank or below.
const CORE_ORDER: &[(&str, u8)] = &[
    ("logformat", 0),
    ("config", 1),
    ("annotations", 2),
    ("reads", 2),
    ("request", 2),
    ("patch", 2),
    ("mutate", 3),
];

fn core_rank(module: &str) -> Option<u8> {
    CORE_ORDER
        .iter()
        .find(|(name, _)| *name == module)
        .map(|(_, rank)| *rank)
}

/// The core modules named by `crate::core::X` paths (and, in a top-level core file, `super::X`).
fn core_targets(code: &str, top_level: bool) -> BTreeSet<String> {
    let mut targets = BTreeSet::new();
    for prefix in ["crate::core::", if top_level { "super::" } else { "crate::core::" }] {
        for (at, _) in code.match_indices(prefix) {
            let name: String = code[at + prefix.len()..]
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            targets.insert(name);
        }
    }
    targets
}

/// What the synchronous core must not name: async runtimes, HTTP, files, clocks, the environment.
const NOT_IN_CORE: &[&str] = &[
    "tokio",
    "axum",
    "hyper",
    "std::fs",
    "std::env",
    "std::net",
    "SystemTime",
    "Instant",
    "std::process",
];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The file's code without its test module and comments: the arrows that ship.
fn shipped_code(text: &str) -> String {
    let code = match text.find("#[cfg(test)]") {
        Some(at) => &text[..at],
        None => text,
    };
    code.lines()
        .filter(|line| !line.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The top-level folders named by `crate::X` paths, including those inside `use crate::{X::…, Y::…}` groups.
fn crate_targets(code: &str) -> BTreeSet<String> {
    let mut targets = BTreeSet::new();
    let mut rest = code;
    while let Some(at) = rest.find("crate::") {
        rest = &rest[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            // Top-level names of the group: those after `{` or a `,` at depth 0.
            let mut depth = 0;
            let mut start = true;
            let mut name = String::new();
            for c in group.chars() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => start = true,
                    c if start && (c.is_alphanumeric() || c == '_') => name.push(c),
                    _ if start && !name.is_empty() => {
                        targets.insert(std::mem::take(&mut name));
                        start = false;
                    }
                    _ => {}
                }
            }
            if !name.is_empty() {
                targets.insert(name);
            }
        } else {
            let name: String = rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
            targets.insert(name);
        }
    }
    targets
}

/// Every arrow that breaks the rule, as `file -> folder`.
fn violations(src: &Path) -> Vec<String> {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    files.sort();
    let mut wrong = Vec::new();
    for file in files {
        let relative = file.strip_prefix(src).unwrap();
        let folder = relative
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy()
            .into_owned();
        // lib.rs declares the folders; main.rs is the binary and cli.rs its command line, above every program.
        if folder == "lib.rs" || folder == "main.rs" || folder == "cli.rs" {
            continue;
        }
        let Some((_, allowed)) = LAYERS.iter().find(|(name, _)| *name == folder) else {
            wrong.push(format!("{}: not in a folder of the layering rule", relative.display()));
            continue;
        };
        // A file of its own for a module's unit tests (`mod tests;` under `#[cfg(test)]`) is test code whole.
        if file.file_name().is_some_and(|n| n == "tests.rs") {
            continue;
        }
        let code = shipped_code(&fs::read_to_string(&file).unwrap());
        for target in crate_targets(&code) {
            if target != folder && !allowed.contains(&target.as_str()) {
                wrong.push(format!("{} -> {target}", relative.display()));
            }
        }
        if folder == "core" {
            let mut parts = relative.components().skip(1);
            let module = parts
                .next()
                .unwrap()
                .as_os_str()
                .to_string_lossy()
                .trim_end_matches(".rs")
                .to_string();
            let top_level = parts.next().is_none();
            if let Some(own) = core_rank(&module) {
                for target in core_targets(&code, top_level) {
                    if core_rank(&target).is_some_and(|rank| rank > own) {
                        wrong.push(format!("{} -> core::{target}", relative.display()));
                    }
                }
            }
            for word in NOT_IN_CORE {
                if code.contains(word) {
                    wrong.push(format!("{}: the synchronous core names {word}", relative.display()));
                }
            }
        }
    }
    wrong
}

#[test]
fn every_arrow_points_down_and_no_program_uses_another() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    assert_eq!(violations(&src), Vec::<String>::new());
}

#[test]
fn the_rule_catches_an_upward_arrow_an_arrow_between_programs_and_io_in_the_core() {
    let dir = tempfile::tempdir().unwrap();
    let write = |path: &str, text: &str| {
        let path = dir.path().join(path);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, text).unwrap();
    };
    write(
        "core/config.rs",
        "use crate::webhook::metrics::Metrics;\nuse crate::core::mutate::harden::Rendered;\n",
    );
    write(
        "adapter/mod.rs",
        "use crate::{\n    core::config::Config,\n    ambassador::config::Upstream,\n};\n",
    );
    write("core/mutate.rs", "fn now() { std::time::SystemTime::now(); }\n");
    write("support/names.rs", "// crate::core is named only in a comment\n");
    write(
        "follow/follower.rs",
        "use crate::adapter::Format;\nuse crate::core::config::Config;\n",
    );
    write(
        "webhook/reload.rs",
        "use crate::core::config::Config;\n#[cfg(test)]\nmod tests { use crate::certs; }\n",
    );
    assert_eq!(
        violations(dir.path()),
        vec![
            "adapter/mod.rs -> ambassador".to_string(),
            "core/config.rs -> webhook".to_string(),
            "core/config.rs -> core::mutate".to_string(),
            "core/mutate.rs: the synchronous core names SystemTime".to_string(),
            "follow/follower.rs -> adapter".to_string(),
        ]
    );
}
