//! checkov, as an auditor would run it, over everything the project installs: the kustomize base and overlays
//! and the chart with its defaults and every value set. No finding is left open: each one that stays is skipped
//! in the manifest with a written reason, and docs/security.md lists it.

mod support;

use std::{collections::BTreeSet, process::Command};

use serde_json::Value;
use support::install::{root, tool};

/// Every rendering, written as `<name>.yaml` into one directory for one checkov run.
fn renderings(dir: &std::path::Path) -> Option<usize> {
    let certs = support::install::dev_certs();
    let image = "registry.local/entourage@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    let mut all = vec![
        (
            "kustomize-base",
            support::install::kustomize(&root().join("manifests"))?,
        ),
        ("kustomize-dev", support::install::dev_overlay(certs.path(), image)?),
        (
            "kustomize-cert-manager",
            support::install::kustomize(&root().join("manifests/overlays/cert-manager"))?,
        ),
        ("chart-defaults", support::install::helm_template(&[])?),
    ];
    let names: Vec<String> = support::install::value_sets()
        .keys()
        .map(|k| format!("chart-{k}"))
        .collect();
    for ((_, path), name) in support::install::value_sets().into_iter().zip(&names) {
        let ca = format!("certificates.caBundle={}", certs.path().join("ca.crt").display());
        all.push((
            name,
            support::install::helm_template(&["-f", path.to_str().unwrap(), "--set-file", &ca])?,
        ));
    }
    for (name, docs) in &all {
        let text: Vec<String> = docs.iter().map(|d| serde_yaml_ng::to_string(d).unwrap()).collect();
        std::fs::write(dir.join(format!("{name}.yaml")), text.join("---\n")).unwrap();
    }
    Some(all.len())
}

#[test]
fn checkov_finds_nothing_left_open_and_every_skip_has_a_reason_listed_in_security_md() {
    let Some(checkov) = tool("checkov") else { return };
    // checkov skips paths with a hidden component ("/."), which tempfile's default names are.
    let dir = tempfile::Builder::new().prefix("checkov-").tempdir().unwrap();
    let Some(count) = renderings(dir.path()) else { return };
    assert!(count >= 8, "{count} renderings");
    let out = Command::new(&checkov)
        .args([
            "--framework",
            "kubernetes",
            "--skip-download",
            "--output",
            "json",
            "--directory",
        ])
        .arg(dir.path())
        .output()
        .expect("checkov runs");
    let report: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "checkov's report ({e}): {}{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        )
    });
    let results = &report["results"];
    let failed: Vec<String> = results["failed_checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| format!("{} {} in {}", c["check_id"], c["resource"], c["file_path"]))
        .collect();
    assert_eq!(failed, Vec::<String>::new(), "open findings");
    let passed = results["passed_checks"].as_array().unwrap();
    // Every rendering was scanned.
    let files: BTreeSet<&str> = passed.iter().map(|c| c["file_path"].as_str().unwrap()).collect();
    assert_eq!(files.len(), count, "{files:?}");
    let security = std::fs::read_to_string(root().join("docs/security.md")).unwrap();
    let mut skipped = BTreeSet::new();
    for check in results["skipped_checks"].as_array().unwrap() {
        let id = check["check_id"].as_str().unwrap();
        let reason = check["check_result"]["suppress_comment"].as_str().unwrap_or_default();
        assert!(
            reason.len() > 40 && reason != "No comment provided",
            "{id} in {}: {reason:?}",
            check["file_path"]
        );
        assert!(
            security.contains(&format!("`{id}`")),
            "docs/security.md does not list {id}"
        );
        skipped.insert(id.to_string());
    }
    // The findings of the scan of the old base, and why each is gone or skipped.
    assert!(!skipped.contains("CKV2_K8S_6"), "a NetworkPolicy selects the Pods");
    assert_eq!(
        skipped,
        ["CKV_K8S_15", "CKV_K8S_155", "CKV_K8S_19", "CKV_K8S_38", "CKV_K8S_43"]
            .map(String::from)
            .into()
    );
}
