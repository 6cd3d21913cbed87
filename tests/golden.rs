//! Golden cases: `tests/golden/<case>/` holds `input.json` (the object the apiserver sends, defaults applied)
//! and optionally `case.json` (`namespace`, `operation`, `config` as YAML text, `strict` schema validation,
//! `owned` pointers the mutation may change). The expected answer is `response.json` (allowed, message,
//! warnings, patch) and the expected patched object `patched.json`.
//!
//! Every case is also checked the way the apiserver would: the patch applies (RFC 6902), a second review of the
//! patched object adds nothing, fields not owned are unchanged, a patched Pod passes the Pod rules, and every
//! patched object passes strict schema validation. `ENTOURAGE_UPDATE_GOLDEN=1 cargo test --test golden`
//! rewrites the expected files — read every diff by eye before committing it.

mod support;

use std::path::{Path, PathBuf};

use entourage::{core::config::Config, core::mutate};
use serde_json::{json, Value};

struct Case {
    name: String,
    dir: PathBuf,
    input: Value,
    namespace: String,
    operation: String,
    config: Config,
    strict: bool,
    owned: Vec<String>,
}

fn cases() -> Vec<Case> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    dirs.into_iter()
        .map(|dir| {
            let read = |f: &str| {
                std::fs::read_to_string(dir.join(f))
                    .ok()
                    .map(|t| serde_json::from_str::<Value>(&t).unwrap_or_else(|e| panic!("{}/{f}: {e}", dir.display())))
            };
            let meta = read("case.json").unwrap_or(json!({}));
            let config = match meta.get("config").and_then(Value::as_str) {
                Some(yaml) => mutate::load_config(yaml, "case.json").unwrap(),
                None => Config::default(),
            };
            Case {
                name: dir.file_name().unwrap().to_string_lossy().into_owned(),
                input: read("input.json").unwrap_or_else(|| panic!("{} has no input.json", dir.display())),
                namespace: meta
                    .get("namespace")
                    .and_then(Value::as_str)
                    .unwrap_or("default")
                    .to_string(),
                operation: meta
                    .get("operation")
                    .and_then(Value::as_str)
                    .unwrap_or("CREATE")
                    .to_string(),
                strict: meta.get("strict").and_then(Value::as_bool).unwrap_or(true),
                owned: meta
                    .get("owned")
                    .and_then(Value::as_array)
                    .map(|a| a.iter().filter_map(|v| v.as_str().map(String::from)).collect())
                    .unwrap_or_default(),
                config,
                dir,
            }
        })
        .collect()
}

fn run(case: &Case, object: &Value) -> mutate::Outcome {
    let (group, version, kind) = support::gvk(object);
    let review = support::review((&group, &version, &kind), &case.namespace, &case.operation, object);
    let decoded = entourage::review::decode(&support::apiserver_order(&review), &case.config).unwrap();
    mutate::mutate(&decoded.request, &case.config)
}

fn response_json(outcome: &mutate::Outcome) -> Value {
    let mut out = json!({
        "allowed": outcome.verdict == mutate::Verdict::Allow,
        "reason": outcome.reason.as_str(),
        "warnings": outcome.warnings,
        "patch": outcome.patch,
    });
    if let mutate::Verdict::Deny(message) = &outcome.verdict {
        out["message"] = json!(message);
    }
    out
}

fn compare_or_update(case: &str, path: &Path, actual: &Value, failures: &mut Vec<String>) {
    let text = serde_json::to_string_pretty(actual).unwrap() + "\n";
    if std::env::var_os("ENTOURAGE_UPDATE_GOLDEN").is_some() {
        std::fs::write(path, text).unwrap();
        return;
    }
    match std::fs::read_to_string(path) {
        Ok(expected) if serde_json::from_str::<Value>(&expected).ok().as_ref() == Some(actual) => {}
        Ok(_) => failures.push(format!("{case}: {} differs; actual:\n{text}", path.display())),
        Err(_) => failures.push(format!(
            "{case}: {} is missing (ENTOURAGE_UPDATE_GOLDEN=1 writes it)",
            path.display()
        )),
    }
}

#[test]
fn golden_cases_match_apply_and_are_idempotent() {
    let cases = cases();
    assert!(!cases.is_empty());
    let mut failures = Vec::new();
    let mut schema = Vec::new();
    for case in &cases {
        let outcome = run(case, &case.input);
        compare_or_update(
            &case.name,
            &case.dir.join("response.json"),
            &response_json(&outcome),
            &mut failures,
        );
        let patched = match support::apply(&case.input, &serde_json::to_value(&outcome.patch).unwrap()) {
            Ok(p) => p,
            Err(e) => {
                failures.push(format!("{}: {e}", case.name));
                continue;
            }
        };
        if outcome.patch.0.is_empty() {
            let _ = std::fs::remove_file(case.dir.join("patched.json"));
        } else {
            compare_or_update(&case.name, &case.dir.join("patched.json"), &patched, &mut failures);
        }
        let owned: Vec<&str> = case.owned.iter().map(String::as_str).collect();
        if let Err(e) = support::preserved(&case.input, &patched, &owned) {
            failures.push(format!("{}: a field the mutation does not own changed: {e}", case.name));
        }
        let again = run(case, &patched);
        // The apiserver reinvokes with the patched object: an admitted object must be admitted again.
        if outcome.verdict == mutate::Verdict::Allow && again.verdict != mutate::Verdict::Allow {
            failures.push(format!(
                "{}: the patched object is denied on a second review: {:?}",
                case.name, again.verdict
            ));
        }
        if !again.patch.0.is_empty() {
            failures.push(format!(
                "{}: second review patched again: {}",
                case.name,
                serde_json::to_string(&again.patch).unwrap()
            ));
        }
        if patched["kind"] == "Pod" && outcome.verdict == mutate::Verdict::Allow {
            for v in support::pod_rule_violations(&patched) {
                failures.push(format!("{}: {v}", case.name));
            }
        }
        schema.push(support::SchemaCase {
            name: case.name.clone(),
            object: patched,
            strict: case.strict,
        });
    }
    failures.extend(support::schema_violations(&schema));
    // Every failure names its case first: list the cases that broke, by name, before the details.
    let broken: Vec<&str> = cases
        .iter()
        .map(|c| c.name.as_str())
        .filter(|name| failures.iter().any(|f| f.starts_with(&format!("{name}:"))))
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {} golden cases failed: {}\n\n{}",
        broken.len(),
        cases.len(),
        broken.join(", "),
        failures.join("\n")
    );
}

#[test]
fn every_injected_container_of_an_admitted_pod_passes_its_runtimes_flag_parser() {
    let mut failures = Vec::new();
    let mut started: std::collections::BTreeMap<&str, usize> = Default::default();
    for case in cases() {
        let outcome = run(&case, &case.input);
        if outcome.verdict != mutate::Verdict::Allow || case.input["kind"] != "Pod" {
            continue;
        }
        let patched = support::apply(&case.input, &serde_json::to_value(&outcome.patch).unwrap()).unwrap();
        for (container, argv) in support::runtimes::injected_argv(&case.input, &patched, &case.config) {
            match support::runtimes::starts(&argv) {
                Ok(program) => *started.entry(program).or_default() += 1,
                Err(e) => failures.push(format!("{}: {container}: {argv:?}: {e}", case.name)),
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // Every program the webhook injects was walked at least once, so a case that stops injecting one shows here.
    for program in ["adapt", "ambassador", "stream", "started"] {
        assert!(
            started.get(program).is_some_and(|n| *n > 0),
            "no golden case injects {program}: {started:?}"
        );
    }
}
