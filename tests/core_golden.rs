//! Golden cases: `tests/golden/<case>/` holds `input.json` (the object the apiserver sends, defaults applied)
//! and optionally `case.json` (`namespace`, `operation`, `config` as YAML text, `strict` schema validation,
//! `owned` pointers the mutation may change). The expected answer is `response.json` (allowed, message,
//! warnings, patch) and the expected patched object `patched.json`.
//!
//! Every case is also checked the way the apiserver would: the patch applies (RFC 6902), a second review of the
//! patched object adds nothing, fields not owned are unchanged, a patched Pod passes the Pod rules, and every
//! patched object passes strict schema validation, and every injected container's argv passes its runtime's own
//! flag parser.
//!
//! One test per case, named after its directory (`cargo test --test core_golden -- sidecar-nginx` runs one), by
//! libtest-mimic over the directory listing: a new directory is a new test. An ordinary run only reads;
//! `ENTOURAGE_UPDATE_GOLDEN=1 cargo test --test core_golden` rewrites the expected files (and deletes a
//! `patched.json` that a case without a patch no longer has) — read every diff by eye before committing it.

mod support;

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    sync::OnceLock,
};

use entourage::{core::config::Config, core::mutate};
use libtest_mimic::{Arguments, Failed, Trial};
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
    let decoded = entourage::admission::decode(&support::apiserver_order(&review), &case.config).unwrap();
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

fn updating() -> bool {
    std::env::var("ENTOURAGE_UPDATE_GOLDEN").as_deref() == Ok("1")
}

/// Compares `actual` with the expected file; under `ENTOURAGE_UPDATE_GOLDEN=1`, writes it instead.
fn compare_or_update(path: &Path, actual: &Value, failures: &mut Vec<String>) {
    let text = serde_json::to_string_pretty(actual).unwrap() + "\n";
    if updating() {
        std::fs::write(path, text).unwrap();
        return;
    }
    let file = path.file_name().unwrap().to_string_lossy();
    match std::fs::read_to_string(path) {
        Ok(expected) if serde_json::from_str::<Value>(&expected).ok().as_ref() == Some(actual) => {}
        Ok(_) => failures.push(format!("{file} differs; actual:\n{text}")),
        Err(_) => failures.push(format!("{file} is missing (ENTOURAGE_UPDATE_GOLDEN=1 writes it)")),
    }
}

/// The object the apiserver would store for a case: its input with the case's patch applied.
fn patched(case: &Case, outcome: &mutate::Outcome) -> Result<Value, String> {
    support::apply(&case.input, &serde_json::to_value(&outcome.patch).unwrap())
}

/// Strict schema validation of every case's patched object, in one run of the validator (a Python process per
/// case would cost a minute): computed by the first case that asks, then looked up by name.
fn schema_violations(cases: &[Case]) -> &'static BTreeMap<String, Vec<String>> {
    static VIOLATIONS: OnceLock<BTreeMap<String, Vec<String>>> = OnceLock::new();
    VIOLATIONS.get_or_init(|| {
        let objects: Vec<support::SchemaCase> = cases
            .iter()
            .filter_map(|case| {
                let object = patched(case, &run(case, &case.input)).ok()?;
                Some(support::SchemaCase {
                    name: case.name.clone(),
                    object,
                    strict: case.strict,
                })
            })
            .collect();
        let mut by_case: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for line in support::schema_violations(&objects) {
            let name = line.split(": ").next().unwrap_or_default().to_string();
            by_case.entry(name).or_default().push(line);
        }
        by_case
    })
}

/// Every check of one case; each failure is one line.
fn check(case: &Case, cases: &[Case]) -> Vec<String> {
    let mut failures = Vec::new();
    let outcome = run(case, &case.input);
    compare_or_update(&case.dir.join("response.json"), &response_json(&outcome), &mut failures);
    let patched = match patched(case, &outcome) {
        Ok(p) => p,
        Err(e) => {
            failures.push(e);
            return failures;
        }
    };
    let patched_file = case.dir.join("patched.json");
    if !outcome.patch.0.is_empty() {
        compare_or_update(&patched_file, &patched, &mut failures);
    } else if patched_file.exists() {
        if updating() {
            std::fs::remove_file(&patched_file).unwrap();
        } else {
            failures
                .push("patched.json is there but the case has no patch (ENTOURAGE_UPDATE_GOLDEN=1 removes it)".into());
        }
    }
    let owned: Vec<&str> = case.owned.iter().map(String::as_str).collect();
    if let Err(e) = support::preserved(&case.input, &patched, &owned) {
        failures.push(format!("a field the mutation does not own changed: {e}"));
    }
    let again = run(case, &patched);
    // The apiserver reinvokes with the patched object: an admitted object must be admitted again.
    if outcome.verdict == mutate::Verdict::Allow && again.verdict != mutate::Verdict::Allow {
        failures.push(format!(
            "the patched object is denied on a second review: {:?}",
            again.verdict
        ));
    }
    if !again.patch.0.is_empty() {
        failures.push(format!(
            "second review patched again: {}",
            serde_json::to_string(&again.patch).unwrap()
        ));
    }
    if patched["kind"] == "Pod" && outcome.verdict == mutate::Verdict::Allow {
        failures.extend(support::pod_rule_violations(&patched));
        // Every injected container of an admitted Pod starts: its argv passes its runtime's own flag parser.
        for (container, argv) in support::runtimes::injected_argv(&case.input, &patched, &case.config) {
            if let Err(e) = support::runtimes::starts(&argv) {
                failures.push(format!("{container}: {argv:?}: {e}"));
            }
        }
    }
    failures.extend(schema_violations(cases).get(&case.name).cloned().unwrap_or_default());
    failures
}

/// Every program the webhook injects is walked by some case, so a case that stops injecting one shows here.
fn every_program_is_injected_by_some_case(cases: &[Case]) -> Result<(), Failed> {
    let mut started: BTreeMap<&str, usize> = BTreeMap::new();
    for case in cases {
        let outcome = run(case, &case.input);
        if outcome.verdict != mutate::Verdict::Allow || case.input["kind"] != "Pod" {
            continue;
        }
        let Ok(patched) = patched(case, &outcome) else { continue };
        for (_, argv) in support::runtimes::injected_argv(&case.input, &patched, &case.config) {
            if let Ok(program) = support::runtimes::starts(&argv) {
                *started.entry(program).or_default() += 1;
            }
        }
    }
    for program in ["adapt", "ambassador", "stream", "started"] {
        if started.get(program).is_none_or(|n| *n == 0) {
            return Err(format!("no golden case injects {program}: {started:?}").into());
        }
    }
    Ok(())
}

fn main() {
    let args = Arguments::from_args();
    let cases: &'static [Case] = Vec::leak(cases());
    assert!(!cases.is_empty(), "no golden cases in tests/golden");
    let mut trials: Vec<Trial> = cases
        .iter()
        .map(|case| {
            Trial::test(case.name.clone(), move || {
                let failures = check(case, cases);
                if failures.is_empty() {
                    Ok(())
                } else {
                    Err(format!("{}:\n{}", case.name, failures.join("\n")).into())
                }
            })
        })
        .collect();
    trials.push(Trial::test(
        "every_program_the_webhook_injects_is_in_some_case",
        move || every_program_is_injected_by_some_case(cases),
    ));
    libtest_mimic::run(&args, trials).exit();
}
