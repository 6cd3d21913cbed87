//! The layering rule of `src/lib.rs`, held by reading the source the compiler compiles: starting at `src/lib.rs`,
//! every `mod` declaration is followed (`#[path]` included, `#[cfg(test)]` modules included), and every path a
//! module names (`crate::…`, `super::…`, in `use` lines and in code, inside `{…}` groups too) must point down or
//! sideways within its own folder, never up and never into another program; and the synchronous core must not
//! touch tokio, axum, hyper, the file system, the clock or the environment.
//!
//! Test code holds to the same rule as the code it tests: a unit test sees its module and what that module may
//! see. A test that needs two programs at once is an integration test, in `tests/`. Inside the core, a unit test
//! may use what its module may not (a test of `annotations` may build a `mutate` plan to check its outcome), but
//! it may not touch I/O either: the core's tests are as deterministic as the core.
//!
//! A `.rs` file under `src/` that no `mod` reaches is reported too: the compiler does not build it, so no rule
//! holds it.

use std::{
    collections::BTreeSet,
    fs,
    path::{Path, PathBuf},
};

/// The folders of `src/`, bottom first, with what each may use besides itself.
const LAYERS: &[(&str, &[&str])] = &[
    ("support", &[]),
    ("core", &["support"]),
    ("admission", &["core", "support"]),
    ("follow", &["core", "support"]),
    ("webhook", &["follow", "admission", "core", "support"]),
    ("adapter", &["follow", "admission", "core", "support"]),
    ("streamer", &["follow", "admission", "core", "support"]),
    ("ambassador", &["follow", "admission", "core", "support"]),
    ("offline", &["follow", "admission", "core", "support"]),
    ("certs", &["follow", "admission", "core", "support"]),
    ("doctor", &["follow", "admission", "core", "support"]),
    ("watchdog", &["follow", "admission", "core", "support"]),
];

/// Above every program, and so out of the rule: the one command line (`src/main.rs` dispatches from it).
const ABOVE: &[&str] = &["cli"];

/// Arrows in test code that break the rule today, each with its way out. The list only shrinks: an entry that no
/// longer matches an arrow fails `every_exception_is_still_needed`.
const TEST_EXCEPTIONS: &[(&str, &str)] = &[];

/// Inside the core, the order of `src/core/mod.rs`: a module may use those of its rank or below.
const CORE_ORDER: &[(&str, u8)] = &[
    ("logformat", 0),
    ("config", 1),
    ("annotations", 2),
    ("reads", 2),
    ("request", 2),
    ("patch", 2),
    ("mutate", 3),
    ("limits", 4),
];

fn core_rank(module: &str) -> Option<u8> {
    CORE_ORDER
        .iter()
        .find(|(name, _)| *name == module)
        .map(|(_, rank)| *rank)
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

/// The text with comments removed and the contents of string and char literals blanked, line for line (every
/// newline kept, so that a line number in one is a line number in the other).
fn strip(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let blank = |c: char| if c == '\n' { '\n' } else { ' ' };
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        if c == '/' && next == Some('/') {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            let mut depth = 0;
            while i < chars.len() {
                if chars[i] == '/' && chars.get(i + 1) == Some(&'*') {
                    depth += 1;
                    i += 2;
                } else if chars[i] == '*' && chars.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    out.push(blank(chars[i]));
                    i += 1;
                }
            }
        } else if c == 'r' && (next == Some('"') || next == Some('#')) && raw_prefix(&chars, i) {
            // A raw string: r"…", r#"…"#.
            let mut j = i + 1;
            let mut hashes = 0;
            while chars.get(j) == Some(&'#') {
                hashes += 1;
                j += 1;
            }
            if chars.get(j) != Some(&'"') {
                out.push(c);
                i += 1;
                continue;
            }
            out.push('"');
            j += 1;
            loop {
                if j >= chars.len() {
                    break;
                }
                if chars[j] == '"' && (0..hashes).all(|k| chars.get(j + 1 + k) == Some(&'#')) {
                    j += 1 + hashes;
                    break;
                }
                out.push(blank(chars[j]));
                j += 1;
            }
            out.push('"');
            i = j;
        } else if c == '"' {
            out.push('"');
            i += 1;
            while i < chars.len() && chars[i] != '"' {
                if chars[i] == '\\' {
                    out.push(' ');
                    i += 1;
                }
                if i < chars.len() {
                    out.push(blank(chars[i]));
                    i += 1;
                }
            }
            out.push('"');
            i += 1;
        } else if c == '\'' {
            // A char literal ('a', '\n', '\u{1F600}') or a lifetime ('a, 'static).
            if next == Some('\\') {
                out.push_str("' ");
                i += 2;
                while i < chars.len() && chars[i] != '\'' {
                    out.push(' ');
                    i += 1;
                }
                out.push('\'');
                i += 1;
            } else if chars.get(i + 2) == Some(&'\'') {
                out.push_str("' '");
                i += 3;
            } else {
                out.push(c);
                i += 1;
            }
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

/// Whether the `r` at `at` starts a raw string: not the end of an identifier, unless that identifier is the `b`
/// of `br"…"`.
fn raw_prefix(chars: &[char], at: usize) -> bool {
    let before = |n: usize| at.checked_sub(n).and_then(|i| chars.get(i));
    !ident_char(before(1)) || (before(1) == Some(&'b') && !ident_char(before(2)))
}

fn ident_char(c: Option<&char>) -> bool {
    c.is_some_and(|c| c.is_alphanumeric() || *c == '_')
}

/// One stretch of a module's code: the module it belongs to (`["adapter", "keys", "tests"]`) and whether it is
/// compiled only for tests.
struct Chunk {
    file: PathBuf,
    module: Vec<String>,
    test: bool,
    code: String,
}

/// A parsed `mod` item: its name, whether a `#[cfg(test)]` is on it, its `#[path]`, and, for an inline module,
/// the byte range of its body in the stripped text.
struct ModItem {
    name: String,
    test: bool,
    path: Option<String>,
    body: Option<(usize, usize)>,
    indented: bool,
}

/// The `mod` items of a stripped text (inline ones at any depth, with their bodies), reading the attributes
/// above each from the original text.
fn mod_items(raw: &str, code: &str) -> Vec<ModItem> {
    let raw_lines: Vec<&str> = raw.lines().collect();
    let bytes = code.as_bytes();
    let mut items = Vec::new();
    let mut line_no = 0;
    let mut line_start = 0;
    for (at, _) in code.match_indices("mod ") {
        line_no += code[line_start..at].matches('\n').count();
        line_start = at;
        if at > 0 && (bytes[at - 1].is_ascii_alphanumeric() || bytes[at - 1] == b'_') {
            continue;
        }
        let rest = &code[at + 4..];
        let name: String = rest
            .trim_start()
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        if name.is_empty() {
            continue;
        }
        let after_name = at + 4 + (rest.len() - rest.trim_start().len()) + name.len();
        let tail = code[after_name..].trim_start();
        let line_begin = code[..at].rfind('\n').map_or(0, |n| n + 1);
        let indented = code[line_begin..at].starts_with(' ');
        // The attributes: the lines above, up to the first line that is not an attribute.
        let (mut test, mut path) = (false, None);
        for line in raw_lines[..line_no].iter().rev() {
            let line = line.trim();
            if line.starts_with("//") {
                continue;
            }
            if !line.starts_with("#[") {
                break;
            }
            test |= line.starts_with("#[cfg(test)]");
            if let Some(value) = line.strip_prefix("#[path = \"") {
                path = value.split('"').next().map(str::to_string);
            }
        }
        // `pub(crate) mod x` and the like put the attributes on the same item; they sit above it, as read.
        if tail.starts_with(';') {
            items.push(ModItem {
                name,
                test,
                path,
                body: None,
                indented,
            });
        } else if tail.starts_with('{') {
            let open = code.len() - tail.len();
            let mut depth = 0;
            let mut close = code.len();
            for (i, b) in bytes.iter().enumerate().skip(open) {
                match b {
                    b'{' => depth += 1,
                    b'}' => {
                        depth -= 1;
                        if depth == 0 {
                            close = i;
                            break;
                        }
                    }
                    _ => {}
                }
            }
            items.push(ModItem {
                name,
                test,
                path,
                body: Some((open + 1, close)),
                indented,
            });
        }
    }
    items
}

/// Reads the crate from its root the way the compiler does: every module's code, in chunks, and every problem
/// met on the way (a `mod` whose file is missing, a file nothing declares).
fn read_crate(src: &Path) -> (Vec<Chunk>, Vec<String>) {
    let mut chunks = Vec::new();
    let mut problems = Vec::new();
    let mut seen = BTreeSet::new();
    // (file, module path, test, whether the file owns a directory: lib.rs, mod.rs, or a #[path] file)
    let mut queue = vec![(src.join("lib.rs"), Vec::<String>::new(), false, true)];
    while let Some((file, module, test, mod_rs)) = queue.pop() {
        let Ok(raw) = fs::read_to_string(&file) else {
            problems.push(format!("{}: declared by a `mod` but missing", rel(src, &file)));
            continue;
        };
        seen.insert(file.clone());
        let code = strip(&raw);
        let items = mod_items(&raw, &code);
        // The directory child modules are looked for in: beside a mod.rs-like file, else in a folder named after it.
        let dir = if mod_rs {
            file.parent().unwrap().to_path_buf()
        } else {
            file.with_extension("")
        };
        // Inline bodies, innermost last, to hand each byte to the innermost module.
        let mut owner: Vec<(Vec<String>, bool)> = vec![(module.clone(), test); code.len() + 1];
        let mut inline: Vec<&ModItem> = items.iter().filter(|i| i.body.is_some()).collect();
        inline.sort_by_key(|i| i.body.unwrap().0);
        for item in &inline {
            let (start, end) = item.body.unwrap();
            let (mut parent, parent_test) = owner[start].clone();
            parent.push(item.name.clone());
            for slot in &mut owner[start..end] {
                *slot = (parent.clone(), parent_test || item.test);
            }
        }
        for item in items.iter().filter(|i| i.body.is_none()) {
            if item.indented {
                problems.push(format!(
                    "{}: `mod {};` inside a block is not followed by this test",
                    rel(src, &file),
                    item.name
                ));
                continue;
            }
            if module.is_empty() && ABOVE.contains(&item.name.as_str()) {
                continue;
            }
            let mut child = module.clone();
            child.push(item.name.clone());
            let (path, owns_dir) = match &item.path {
                Some(path) => (file.parent().unwrap().join(path), true),
                None => {
                    let leaf = dir.join(format!("{}.rs", item.name));
                    if leaf.exists() {
                        (leaf, false)
                    } else {
                        (dir.join(&item.name).join("mod.rs"), true)
                    }
                }
            };
            queue.push((path, child, test || item.test, owns_dir));
        }
        // Cut the code into runs of one owner.
        let mut start = 0;
        for i in 1..=code.len() {
            if (i == code.len() || owner[i] != owner[start]) && code.is_char_boundary(start) && code.is_char_boundary(i)
            {
                chunks.push(Chunk {
                    file: file.clone(),
                    module: owner[start].0.clone(),
                    test: owner[start].1,
                    code: code[start..i].to_string(),
                });
                start = i;
            }
        }
    }
    let mut all = Vec::new();
    rust_files(src, &mut all);
    for file in all {
        let name = rel(src, &file);
        if !seen.contains(&file) && name != "main.rs" && !ABOVE.iter().any(|a| name == format!("{a}.rs")) {
            problems.push(format!("{name}: no `mod` declares it, so nothing compiles it"));
        }
    }
    (chunks, problems)
}

fn rel(src: &Path, file: &Path) -> String {
    file.strip_prefix(src).unwrap_or(file).display().to_string()
}

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

/// The use-tree after a `crate::` or `super::` at `at`: every path it names, as segments (`core::{config, mutate}`
/// gives `core::config` and `core::mutate`; `self` in a group names the group's parent).
fn use_tree(code: &[u8], mut at: usize) -> (Vec<Vec<String>>, usize) {
    while at < code.len() && code[at].is_ascii_whitespace() {
        at += 1;
    }
    if code.get(at) == Some(&b'{') {
        at += 1;
        let mut paths = Vec::new();
        loop {
            while at < code.len() && (code[at].is_ascii_whitespace() || code[at] == b',') {
                at += 1;
            }
            if at >= code.len() || code[at] == b'}' {
                return (paths, at + 1);
            }
            let (more, next) = use_tree(code, at);
            paths.extend(more);
            if next == at {
                return (paths, at + 1);
            }
            at = next;
        }
    }
    let start = at;
    while at < code.len() && (code[at].is_ascii_alphanumeric() || code[at] == b'_' || code[at] == b'*') {
        at += 1;
    }
    let name = String::from_utf8_lossy(&code[start..at]).into_owned();
    if name.is_empty() {
        return (vec![], at);
    }
    if code[at..].starts_with(b"::") {
        let (rest, next) = use_tree(code, at + 2);
        let paths = if rest.is_empty() {
            vec![vec![name]]
        } else {
            rest.into_iter()
                .map(|mut path| {
                    if path.first().is_some_and(|s| s == "self") {
                        path.remove(0);
                    }
                    path.insert(0, name.clone());
                    path
                })
                .collect()
        };
        return (paths, next);
    }
    (vec![vec![name]], at)
}

/// Every path a chunk names inside the crate, made absolute (`super::x` in `core::annotations` is `core::x`).
fn crate_paths(chunk: &Chunk) -> Vec<Vec<String>> {
    let code = chunk.code.as_bytes();
    let mut paths = Vec::new();
    let mut at = 0;
    while at < code.len() {
        let word_start =
            at == 0 || !(code[at - 1].is_ascii_alphanumeric() || code[at - 1] == b'_' || code[at - 1] == b':');
        if word_start && code[at..].starts_with(b"crate::") {
            let (found, next) = use_tree(code, at + 7);
            paths.extend(found);
            at = next.max(at + 7);
        } else if word_start && code[at..].starts_with(b"super::") {
            let mut base = chunk.module.clone();
            let mut next = at;
            while code[next..].starts_with(b"super::") {
                base.pop();
                next += 7;
            }
            let (found, after) = use_tree(code, next);
            for path in found {
                let mut absolute = base.clone();
                absolute.extend(path.into_iter().filter(|s| s != "self"));
                paths.push(absolute);
            }
            at = after.max(next);
        } else {
            at += 1;
        }
    }
    paths
}

/// Every arrow that breaks the rule, as `file (module) -> target`.
fn violations(src: &Path) -> Vec<String> {
    let (chunks, mut wrong) = read_crate(src);
    let mut found = BTreeSet::new();
    for chunk in &chunks {
        let Some(folder) = chunk.module.first() else {
            continue; // lib.rs declares the folders
        };
        let file = rel(src, &chunk.file);
        let at = format!("{file} ({})", chunk.module.join("::"));
        let Some((_, allowed)) = LAYERS.iter().find(|(name, _)| name == folder) else {
            found.insert(format!("{at}: not in a folder of the layering rule"));
            continue;
        };
        for path in crate_paths(chunk) {
            let target = &path[0];
            if target != folder && !allowed.contains(&target.as_str()) {
                found.insert(format!("{at} -> {target}"));
            }
            if folder == "core" && target == "core" && !chunk.test {
                if let (Some(own), Some(other)) = (chunk.module.get(1), path.get(1)) {
                    if let (Some(own_rank), Some(rank)) = (core_rank(own), core_rank(other)) {
                        if rank > own_rank {
                            found.insert(format!("{at} -> core::{other}"));
                        }
                    }
                }
            }
        }
        if folder == "core" {
            for word in NOT_IN_CORE {
                if chunk.code.contains(word) {
                    found.insert(format!("{at}: the synchronous core names {word}"));
                }
            }
        }
    }
    wrong.extend(found);
    wrong
}

#[test]
fn every_arrow_points_down_and_no_program_uses_another() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let wrong: Vec<String> = violations(&src)
        .into_iter()
        .filter(|v| !TEST_EXCEPTIONS.iter().any(|(e, _)| e == v))
        .collect();
    assert_eq!(wrong, Vec::<String>::new());
}

#[test]
fn every_exception_is_still_needed() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let found = violations(&src);
    let stale: Vec<&str> = TEST_EXCEPTIONS
        .iter()
        .map(|(e, _)| *e)
        .filter(|e| !found.iter().any(|v| v == e))
        .collect();
    assert_eq!(stale, Vec::<&str>::new(), "remove these from TEST_EXCEPTIONS");
}

#[test]
fn the_whole_crate_is_read_test_modules_included() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let (chunks, _) = read_crate(&src);
    let read: BTreeSet<String> = chunks.iter().map(|c| rel(&src, &c.file)).collect();
    let mut all = Vec::new();
    rust_files(&src, &mut all);
    let all: BTreeSet<String> = all
        .iter()
        .map(|f| rel(&src, f))
        .filter(|f| f != "main.rs" && !ABOVE.iter().any(|a| *f == format!("{a}.rs")))
        .collect();
    assert_eq!(read, all);
    // The unit tests are read as test code: the files of their own and the inline modules.
    let test_files: BTreeSet<&str> = chunks
        .iter()
        .filter(|c| c.test)
        .map(|c| c.file.to_str().unwrap())
        .collect();
    assert!(
        test_files.iter().any(|f| f.ends_with("core/annotations/tests.rs")),
        "{test_files:?}"
    );
    assert!(
        test_files.iter().any(|f| f.ends_with("follow/position.rs")),
        "{test_files:?}"
    );
    // And their paths are read: arrows every build has, in shipped code and in test code.
    let arrows: BTreeSet<(String, String, bool)> = chunks
        .iter()
        .flat_map(|c| {
            crate_paths(c)
                .into_iter()
                .filter_map(|p| Some((c.module.first()?.clone(), p.first()?.clone(), c.test)))
                .collect::<Vec<_>>()
        })
        .collect();
    for (from, to, test) in [
        ("webhook", "admission", false),
        ("adapter", "core", false),
        ("adapter", "adapter", true),
    ] {
        assert!(
            arrows.contains(&(from.into(), to.into(), test)),
            "{from} -> {to} (test: {test}) not read"
        );
    }
}

fn synthetic(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (path, text) in files {
        let path = dir.path().join(path);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, text).unwrap();
    }
    dir
}

#[test]
fn the_rule_catches_an_upward_arrow_an_arrow_between_programs_and_io_in_the_core() {
    let dir = synthetic(&[
        (
            "lib.rs",
            "pub mod support;\npub mod core;\npub mod follow;\npub mod adapter;\npub mod webhook;\n",
        ),
        ("core/mod.rs", "pub mod config;\npub mod mutate;\n"),
        (
            "core/config.rs",
            "use crate::webhook::metrics::Metrics;\nuse crate::core::mutate::harden::Rendered;\n",
        ),
        (
            "adapter/mod.rs",
            "use crate::{\n    core::config::Config,\n    ambassador::config::Upstream,\n};\n",
        ),
        ("core/mutate.rs", "fn now() { std::time::SystemTime::now(); }\n"),
        (
            "support/mod.rs",
            "// crate::core is named only in a comment\nconst A: &str = \"crate::core\";\n",
        ),
        (
            "follow/mod.rs",
            "use crate::adapter::Format;\nuse crate::core::config::Config;\n",
        ),
        ("webhook/mod.rs", "use crate::core::config::Config;\n"),
    ]);
    assert_eq!(
        violations(dir.path()),
        vec![
            "adapter/mod.rs (adapter) -> ambassador".to_string(),
            "core/config.rs (core::config) -> core::mutate".to_string(),
            "core/config.rs (core::config) -> webhook".to_string(),
            "core/mutate.rs (core::mutate): the synchronous core names SystemTime".to_string(),
            "follow/mod.rs (follow) -> adapter".to_string(),
        ]
    );
}

/// The control for what the old reading missed: an arrow in test code, in each of the three places a unit test
/// can live, is now an arrow like any other; and a `super::` path is resolved, not skipped.
#[test]
fn the_rule_catches_arrows_in_test_modules_path_files_and_super_paths() {
    let dir = synthetic(&[
        (
            "lib.rs",
            "pub mod core;\npub mod adapter;\npub mod webhook;\npub mod follow;\n",
        ),
        ("core/mod.rs", "pub mod annotations;\npub mod mutate;\n"),
        (
            "core/annotations/mod.rs",
            "use super::mutate::Plan;\n#[cfg(test)]\nmod tests;\n",
        ),
        ("core/annotations/tests.rs", "use std::fs::read;\n"),
        ("core/mutate.rs", "pub struct Plan;\n"),
        (
            "adapter/mod.rs",
            "pub mod keys;\nfn f() {}\n#[cfg(test)]\nmod tests {\n    use crate::webhook::server;\n}\n",
        ),
        (
            "adapter/keys.rs",
            "#[cfg(test)]\n#[path = \"keys_tests.rs\"]\nmod tests;\n",
        ),
        (
            "adapter/keys_tests.rs",
            "use crate::{follow::Follower, webhook::Reload};\n",
        ),
        ("webhook/mod.rs", "pub mod reload;\n"),
        (
            "webhook/reload.rs",
            "#[cfg(test)]\nmod tests {\n    use super::super::super::adapter::Keys;\n}\n",
        ),
        ("follow/mod.rs", "mod gone;\n"),
        ("follow/orphan.rs", "use crate::webhook::Server;\n"),
    ]);
    assert_eq!(
        violations(dir.path()),
        vec![
            "follow/gone/mod.rs: declared by a `mod` but missing".to_string(),
            "follow/orphan.rs: no `mod` declares it, so nothing compiles it".to_string(),
            "adapter/keys_tests.rs (adapter::keys::tests) -> webhook".to_string(),
            "adapter/mod.rs (adapter::tests) -> webhook".to_string(),
            "core/annotations/mod.rs (core::annotations) -> core::mutate".to_string(),
            "core/annotations/tests.rs (core::annotations::tests): the synchronous core names std::fs".to_string(),
            "webhook/reload.rs (webhook::reload::tests) -> adapter".to_string(),
        ]
    );
}
