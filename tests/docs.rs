//! The README documents the public API: every annotation entourage reads or writes appears in its table.

use entourage::core::annotations::KEYS;

#[test]
fn readme_table_lists_every_annotation() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let missing: Vec<&str> = KEYS
        .iter()
        .map(|k| k.key)
        .filter(|k| !readme.contains(&format!("| `{k}` |")))
        .collect();
    assert!(missing.is_empty(), "README.md annotation table lacks {missing:?}");
}

#[test]
fn readme_shows_the_two_commands() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    assert!(readme.contains("make run") && readme.contains("make test"));
}

#[test]
fn readme_config_example_is_a_valid_config() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let start = readme
        .find("```yaml\nkubernetesVersion")
        .expect("README has a config example")
        + "```yaml\n".len();
    let end = start + readme[start..].find("```").unwrap();
    if let Err(e) = entourage::core::config::Config::from_yaml(&readme[start..end], "README.md") {
        panic!("the README's config example is refused: {e}");
    }
}
