//! The docs that mirror code are compared with it whole, row by row: the annotation tables with the key registry
//! (`KEYS`), the config reference and the files that spell out the config with `Config::default()`.
//!
//! `ENTOURAGE_UPDATE_DOCS=1 cargo test --test repo_docs` rewrites the annotation tables from `KEYS`; read the diff before
//! committing. An ordinary run never writes a file.

use std::path::{Path, PathBuf};

use entourage::core::{
    annotations::{KeyDoc, KEYS},
    config::Config,
};
use serde_json::{Map, Value};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &str) -> String {
    std::fs::read_to_string(root().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The pages that carry the annotation table, each rendered from `KEYS`.
const ANNOTATION_TABLE_PAGES: &[&str] = &["README.md", "docs/annotations.md"];
const ANNOTATION_TABLE_HEADER: &str = "| Annotation | On | Values | Without it |\n|---|---|---|---|\n";

/// The annotation table as `KEYS` says it, one row per key, in the registry's order.
fn annotation_table() -> String {
    let mut table = String::from(ANNOTATION_TABLE_HEADER);
    for k in KEYS {
        table += &format!("| `{}` | {} | {} | {} |\n", k.key, k.on, k.values, k.default);
    }
    table
}

/// The byte range of the table that starts with `header`: up to the first line that is not a table row.
fn table_range(page: &str, header: &str) -> Option<std::ops::Range<usize>> {
    let start = page.find(header)?;
    let mut end = start;
    for line in page[start..].split_inclusive('\n') {
        if !line.starts_with('|') {
            break;
        }
        end += line.len();
    }
    Some(start..end)
}

#[test]
fn annotation_tables_are_rendered_from_the_key_registry() {
    let expected = annotation_table();
    let update = std::env::var("ENTOURAGE_UPDATE_DOCS").as_deref() == Ok("1");
    let mut problems = Vec::new();
    for path in ANNOTATION_TABLE_PAGES {
        let page = read(path);
        let range = table_range(&page, ANNOTATION_TABLE_HEADER)
            .unwrap_or_else(|| panic!("{path} has no annotation table (header {ANNOTATION_TABLE_HEADER:?})"));
        let found = &page[range.clone()];
        if found == expected {
            continue;
        }
        if update {
            let mut new = page.clone();
            new.replace_range(range, &expected);
            std::fs::write(root().join(path), new).unwrap();
            eprintln!("rewrote the annotation table of {path}");
            continue;
        }
        let (want, got): (Vec<&str>, Vec<&str>) = (expected.lines().collect(), found.lines().collect());
        for i in 0..want.len().max(got.len()) {
            let (w, g) = (want.get(i).copied(), got.get(i).copied());
            if w != g {
                problems.push(format!(
                    "{path} row {i}:\n  KEYS says {}\n  page says {}",
                    w.unwrap_or("(no row)"),
                    g.unwrap_or("(no row)")
                ));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "annotation tables differ from KEYS (src/core/annotations); fix KEYS if the text is wrong, then \
         ENTOURAGE_UPDATE_DOCS=1 cargo test --test repo_docs:\n{}",
        problems.join("\n")
    );
}

#[test]
fn key_registry_cells_fit_in_a_markdown_table() {
    for k in KEYS {
        for cell in [k.key, k.on, k.values, k.default] {
            assert!(
                !cell.is_empty() && !cell.contains('|') && !cell.contains('\n'),
                "{}: {cell:?} would break the table",
                k.key
            );
        }
    }
}

/// `Config::default()` as the YAML keys spell it.
fn defaults() -> Value {
    serde_json::to_value(Config::default()).unwrap()
}

fn at<'a>(value: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(value, |v, key| v.get(key))
}

/// Scalars compare by their text: YAML's `cpu: 1` and the config's `"1"` are the same default.
fn same(a: &Value, b: &Value) -> bool {
    let text = |v: &Value| match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    };
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same(v, w)))
        }
        (Value::Array(x), Value::Array(y)) => x.len() == y.len() && x.iter().zip(y).all(|(v, w)| same(v, w)),
        (Value::Null, Value::Null) => true,
        _ => text(a).is_some() && text(a) == text(b),
    }
}

/// The cells of the annotation registry name config keys with their default: "`ambassador.port` (9000)". Every
/// config key named must exist, and every default given must be the config's. Returns the problems and how many
/// config keys the cells name.
fn config_mentions(keys: &[KeyDoc]) -> (Vec<String>, usize) {
    let defaults = defaults();
    let top: Vec<&String> = defaults.as_object().unwrap().keys().collect();
    let mention = regex::Regex::new(r"`([a-z][A-Za-z]*(?:\.[a-z][A-Za-z-]*)+)`(?: \(`?([^)`]+)`?\))?").unwrap();
    let (mut problems, mut named) = (Vec::new(), 0);
    for k in keys {
        for cell in [k.values, k.default] {
            for m in mention.captures_iter(cell) {
                let path = &m[1];
                if !top.iter().any(|t| path.starts_with(&format!("{t}."))) {
                    continue;
                }
                named += 1;
                match (at(&defaults, path), m.get(2)) {
                    (None, _) => problems.push(format!("{}: `{path}` is not a config key", k.key)),
                    (Some(value), Some(said)) if !same(&Value::String(said.as_str().into()), value) => problems.push(
                        format!("{}: `{path}` ({}) but the default is {value}", k.key, said.as_str()),
                    ),
                    _ => {}
                }
            }
        }
    }
    (problems, named)
}

#[test]
fn config_keys_and_defaults_named_in_the_key_registry_are_the_configs() {
    let (problems, named) = config_mentions(KEYS);
    assert!(problems.is_empty(), "{problems:?}");
    assert!(
        named >= 5,
        "the registry names config keys; the pattern found only {named}"
    );
}

#[test]
fn config_mentions_check_can_fail() {
    let wrong = [KeyDoc {
        key: "entourage.dev/example",
        on: "Pod",
        values: "at most `sidecars.maxLogFiles` (9), key `ambassador.caKey` (`ca.pem`)",
        default: "`ambassador.portt` (9000)",
    }];
    let (problems, named) = config_mentions(&wrong);
    assert_eq!(named, 3);
    assert_eq!(problems.len(), 3, "{problems:?}");
}

/// The default column of the config reference, as YAML: "`cpu: 10m`, `memory: 16Mi`" is a map, "unset" is null.
fn reference_default(cell: &str) -> Value {
    let cell = cell.trim().trim_end_matches(" each");
    if cell == "unset" {
        return Value::Null;
    }
    let text = cell.replace('`', "");
    let text = if text.contains(": ") && !text.starts_with('{') {
        format!("{{{text}}}")
    } else {
        text
    };
    let text = text.replace("<version>", env!("CARGO_PKG_VERSION"));
    serde_yaml_ng::from_str(&text).unwrap_or_else(|e| panic!("config reference default {cell:?}: {e}"))
}

/// The keys of one row: "`resources.maxima.sidecar`, `.adapter`" names `resources.maxima.adapter` too.
fn reference_keys(cell: &str) -> Vec<String> {
    let names: Vec<&str> = cell.split(',').map(|n| n.trim().trim_matches('`')).collect();
    let first = names[0].to_string();
    let parent = first.rsplit_once('.').map_or("", |(p, _)| p).to_string();
    let mut keys = vec![first];
    for n in &names[1..] {
        keys.push(format!("{parent}.{}", n.trim_start_matches('.')));
    }
    keys
}

/// Every leaf of the default config (an empty map counts as a leaf), by dotted path.
fn leaves(value: &Value, prefix: &str, out: &mut Vec<String>) {
    match value {
        Value::Object(map) if !map.is_empty() => {
            for (k, v) in map {
                let path = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                leaves(v, &path, out);
            }
        }
        _ => out.push(prefix.to_string()),
    }
}

/// Every row of the config reference against the default, and every default key against the rows.
fn reference_problems(page: &str) -> Vec<String> {
    let header = "| key | default | meaning |\n|---|---|---|\n";
    let range = table_range(page, header).expect("the page has the config reference table");
    let defaults = defaults();
    let mut covered = Vec::new();
    let mut problems = Vec::new();
    for row in page[range].lines().skip(2) {
        let cells: Vec<&str> = row.trim_matches('|').split(" | ").collect();
        assert!(cells.len() >= 2, "config reference row {row:?}");
        let said = reference_default(cells[1]);
        for key in reference_keys(cells[0]) {
            match at(&defaults, &key) {
                None => problems.push(format!("`{key}` is not a config key")),
                Some(value) if !same(&said, value) => {
                    problems.push(format!("`{key}`: the reference says {said}, the default is {value}"))
                }
                Some(_) => {}
            }
            covered.push(key);
        }
    }
    let mut all = Vec::new();
    leaves(&defaults, "", &mut all);
    for leaf in all {
        if !covered.iter().any(|c| leaf == *c || leaf.starts_with(&format!("{c}."))) {
            problems.push(format!("`{leaf}` has no row"));
        }
    }
    problems
}

#[test]
fn config_reference_has_one_row_per_key_with_the_configs_default() {
    let problems = reference_problems(&read("docs/operations.md"));
    assert!(
        problems.is_empty(),
        "docs/operations.md, Config reference:\n{}",
        problems.join("\n")
    );
}

#[test]
fn config_reference_check_can_fail() {
    let page = read("docs/operations.md");
    let row = page
        .lines()
        .find(|l| l.starts_with("| `adapter.timeZone` |"))
        .expect("a row for adapter.timeZone");
    let page = page
        .replace(&format!("{row}\n"), "")
        .replace("| `ambassador.retries` | `2` |", "| `ambassador.retries` | `3` |")
        .replace("| `sidecars.maxLogFiles` |", "| `sidecars.maxLogFile` |");
    let problems = reference_problems(&page);
    assert_eq!(problems.len(), 4, "{problems:?}");
}

/// Differences between a file that spells out the config and the default: a key missing (a key whose default is
/// null may be left out: absent and null are the same default), a key the config does not have, another value.
fn spelled_out(file: &Value, default: &Value, path: &str, exempt: &[&str], problems: &mut Vec<String>) {
    if exempt.contains(&path) {
        return;
    }
    match (file, default) {
        (Value::Object(f), Value::Object(d)) => {
            for (k, dv) in d {
                let sub = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                match f.get(k) {
                    None if dv.is_null() || exempt.contains(&sub.as_str()) => {}
                    None => problems.push(format!("`{sub}` is missing (default {dv})")),
                    Some(fv) => spelled_out(fv, dv, &sub, exempt, problems),
                }
            }
            for k in f.keys().filter(|k| !d.contains_key(*k)) {
                problems.push(format!("`{path}.{k}` is not a config key"));
            }
        }
        _ if same(file, default) => {}
        _ => problems.push(format!("`{path}` is {file}, the default is {default}")),
    }
}

fn check_spelled_out(origin: &str, text: &str, exempt: &[&str]) {
    let file: Value = serde_yaml_ng::from_str(text).unwrap_or_else(|e| panic!("{origin}: {e}"));
    let mut problems = Vec::new();
    spelled_out(&file, &defaults(), "", exempt, &mut problems);
    assert!(
        problems.is_empty(),
        "{origin} does not spell out the built-in defaults (Config::default()):\n{}",
        problems.join("\n")
    );
}

#[test]
fn configmap_spells_out_every_default() {
    let manifest: Value = serde_yaml_ng::from_str(&read("manifests/base/configmap.yaml")).unwrap();
    let text = manifest["data"]["config.yaml"].as_str().expect("data.config.yaml");
    check_spelled_out("manifests/base/configmap.yaml", text, &[]);
    assert_eq!(Config::from_yaml(text, "configmap").unwrap(), Config::default());
}

#[test]
fn chart_values_spell_out_every_default() {
    let values: Value = serde_yaml_ng::from_str(&read("charts/entourage/values.yaml")).unwrap();
    let config = &values["config"];
    // `images.entourage: ""` stands for the chart's own image, which the ConfigMap template writes in.
    assert_eq!(config["images"]["entourage"], "");
    check_spelled_out(
        "charts/entourage/values.yaml (config:)",
        &serde_yaml_ng::to_string(config).unwrap(),
        &["images.entourage"],
    );
}

#[test]
fn spelled_out_check_can_fail() {
    let mut problems = Vec::new();
    let mut file = defaults();
    file["adapter"].as_object_mut().unwrap().remove("timeZone");
    file["ambassador"]["retries"] = Value::from(9);
    file["sidecars"]
        .as_object_mut()
        .unwrap()
        .insert("surplus".into(), Value::Bool(true));
    spelled_out(&file, &defaults(), "", &[], &mut problems);
    assert_eq!(problems.len(), 3, "{problems:?}");
    let empty = Value::Object(Map::new());
    let mut problems = Vec::new();
    spelled_out(&empty, &defaults(), "", &[], &mut problems);
    assert!(
        problems.iter().any(|p| p.contains("`adapter` is missing")),
        "{problems:?}"
    );
}

#[test]
fn readme_shows_the_two_commands_and_the_cluster() {
    let readme = read("README.md");
    for needle in [
        "make run",
        "make test",
        "make cluster",
        "make e2e",
        "make cluster-down",
        "export KUBECONFIG=target/cluster/kubeconfig",
        "kubectl apply -f docs/examples/nginx-sidecar.yaml",
        "kubectl logs -f nginx -c sidecar-access",
        "## Tested on a real cluster",
        "docs/e2e.md",
    ] {
        assert!(readme.contains(needle), "README.md lacks {needle:?}");
    }
}

/// The curl of the README is the setup's promise: the fixture it posts exists and is an AdmissionReview.
#[test]
fn readme_curl_posts_a_fixture_that_exists() {
    let readme = read("README.md");
    let fixture = "tests/fixtures/pod-sidecar-nginx.json";
    assert!(
        readme.contains(&format!("--data-binary @{fixture}")),
        "README.md curls {fixture}"
    );
    let review: Value = serde_json::from_str(&read(fixture)).unwrap();
    assert_eq!(review["kind"], "AdmissionReview");
}

#[test]
fn readme_stays_a_newcomers_page() {
    let size = read("README.md").len();
    assert!(
        size < 15 * 1024,
        "README.md is {size} bytes; deep reference belongs in docs/"
    );
}

/// Every relative link of the README and of docs/ points at a file that exists.
#[test]
fn relative_links_resolve() {
    let link = regex::Regex::new(r"\]\(([^)#\s]+)(?:#[^)]*)?\)").unwrap();
    let mut pages = vec![root().join("README.md"), root().join("SECURITY.md")];
    for entry in std::fs::read_dir(root().join("docs")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "md") {
            pages.push(path);
        }
    }
    let mut broken = Vec::new();
    for page in &pages {
        let text = std::fs::read_to_string(page).unwrap();
        let dir = page.parent().unwrap_or(Path::new("."));
        for m in link.captures_iter(&text) {
            let target = &m[1];
            if target.contains("://") || target.starts_with("mailto:") {
                continue;
            }
            if !dir.join(target).exists() {
                broken.push(format!("{}: {target}", page.display()));
            }
        }
    }
    assert!(broken.is_empty(), "broken links: {broken:?}");
}

#[test]
fn operations_config_example_is_a_valid_config() {
    let page = read("docs/operations.md");
    let start = page
        .find("```yaml\nkubernetesVersion")
        .expect("docs/operations.md has a config example")
        + "```yaml\n".len();
    let end = start + page[start..].find("```").unwrap();
    if let Err(e) = Config::from_yaml(&page[start..end], "docs/operations.md") {
        panic!("the config example of docs/operations.md is refused: {e}");
    }
}
