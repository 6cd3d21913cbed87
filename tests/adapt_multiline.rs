//! `entourage adapt --multiline` on stack traces printed by real runtimes (Java, Python, Go: the programs in
//! tests/fixtures/multiline/ throw nested, chained and concurrent errors, interleaved with plain lines), and the
//! real binary's quiet-period flush, size cap, rotation and restart after `kill -9`.
//!
//! A runtime that is not installed skips its test on a developer's machine, saying so (`support::skip`), and fails
//! it under `CI=true`: CI installs them (`.ci/run`: default-jdk-headless, golang-go; python3 is there).

mod support;

use std::collections::BTreeSet;
use std::fs::{self, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

const DEADLINE: Duration = Duration::from_secs(30);

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/multiline")
        .join(name)
}

/// Whether `tool` runs; if not, panics under CI (which must have it) and elsewhere says the test is skipped.
fn have(tool: &str, version_flag: &str, package: &str) -> bool {
    let ok = Command::new(tool)
        .arg(version_flag)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        support::skip(&format!("{tool} is not installed; apt-get install {package}"));
    }
    ok
}

/// Runs `entourage adapt` over `log` to its end and returns every object.
fn adapt(log: &Path, args: &[&str]) -> Vec<Value> {
    let output = Command::new(env!("CARGO_BIN_EXE_entourage"))
        .arg("adapt")
        .arg("--file")
        .arg(log)
        .arg("--exit-at-eof")
        .args(args)
        .output()
        .expect("run entourage adapt");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

fn messages(objects: &[Value]) -> Vec<String> {
    objects
        .iter()
        .map(|o| o["message"].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// The checks every runtime shares: one record per event, each event once, the whole text in order.
fn assert_one_record_per_event(log: &Path, events: usize, records: &[String]) {
    let text = fs::read_to_string(log).unwrap();
    assert_eq!(
        records.join("\n"),
        text.trim_end_matches('\n'),
        "grouping lost or reordered text"
    );
    let ids: Vec<usize> = records
        .iter()
        .map(|r| {
            let first = r.lines().next().unwrap_or_default();
            let at = first
                .find("event ")
                .unwrap_or_else(|| panic!("record without an event: {r}"));
            let digits: String = first[at + 6..].chars().take_while(char::is_ascii_digit).collect();
            let markers = r
                .match_indices("event ")
                .filter(|(i, _)| r[i + 6..].starts_with(|c: char| c.is_ascii_digit()));
            assert_eq!(markers.count(), 1, "not one event in {r}");
            digits.parse().unwrap()
        })
        .collect();
    assert_eq!(ids.len(), events, "records: {records:#?}");
    assert_eq!(
        ids.iter().copied().collect::<BTreeSet<_>>(),
        (0..events).collect(),
        "{ids:?}"
    );
}

fn count(records: &[String], needle: &str) -> usize {
    records.iter().filter(|r| r.contains(needle)).count()
}

#[test]
fn java_nested_suppressed_and_concurrent_exceptions_are_one_record_each() {
    if !have("java", "-version", "default-jdk-headless") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("shop.log");
    let out = Command::new("java")
        .arg(fixture("Shop.java"))
        .arg(&log)
        .output()
        .expect("run java");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let events: usize = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    let records = messages(&adapt(&log, &["--multiline", "java"]));
    assert_one_record_per_event(&log, events, &records);
    // checkout(7) and the 16 carts: each with its two causes and the frames they share ("... N more").
    assert_eq!(count(&records, "Caused by: java.io.IOException: disk full"), 17);
    assert!(records.iter().all(|r| !r.contains("Caused by:") || r.contains("... ")));
    assert_eq!(count(&records, "\tSuppressed: java.io.IOException: close failed"), 1);
    // Messages over several lines stay with their exception, their cause's and the suppressed one's too.
    assert_eq!(
        count(
            &records,
            " cannot be saved\nits lines stay in the cart\nretry later\n\tat Shop.checkout("
        ),
        17
    );
    assert_eq!(count(&records, "UncheckedIOException: write failed\nfor cart "), 17);
    assert_eq!(count(&records, "close failed\non the second line\n\t\tat "), 1);
}

#[test]
fn python_chained_tracebacks_exception_groups_and_threads_are_one_record_each() {
    if !have("python3", "--version", "python3") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("shop.log");
    let out = Command::new("python3")
        .arg(fixture("shop.py"))
        .arg(&log)
        .output()
        .expect("run python3");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let events: usize = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    let records = messages(&adapt(&log, &["--multiline", "python"]));
    assert_one_record_per_event(&log, events, &records);
    assert_eq!(count(&records, "During handling of the above exception"), 21);
    assert_eq!(count(&records, "The above exception was the direct cause"), 21);
    assert_eq!(count(&records, "+ Exception Group Traceback"), 1);
    // A message over several lines: in a chained exception (the chain line confirms it), and in the final one
    // (the next log record's first line ends it).
    assert_eq!(
        count(
            &records,
            " has no items\nits lines stay in the cart\n\nThe above exception"
        ),
        21
    );
    assert_eq!(
        records.iter().filter(|r| r.ends_with(" failed\nretry later")).count(),
        21
    );

    // The first line still goes through the format: its time becomes RFC 3339, its level one word.
    let format = r"regex:^(?P<time>\S+ \S+) (?P<level>\w+) \[(?P<thread>[^\]]+)\] (?P<message>.*)$";
    let objects = adapt(
        &log,
        &[
            "--multiline",
            "python",
            "--format",
            format,
            "--level",
            "normalize",
            "--time-key",
            "@timestamp",
        ],
    );
    assert_eq!(objects.len(), events);
    for o in &objects {
        let time = o["@timestamp"].as_str().unwrap();
        assert!(time.ends_with("+00:00") && time.contains('T'), "{o}");
        assert!(["info", "error", "warn"].contains(&o["level"].as_str().unwrap()), "{o}");
    }
    let failed = objects.iter().find(|o| o["level"] == "error").unwrap();
    assert!(failed["message"]
        .as_str()
        .unwrap()
        .contains("\nTraceback (most recent call last):\n"));
}

#[test]
fn go_recovered_stacks_and_the_final_panic_with_every_goroutine_are_one_record_each() {
    if !have("go", "version", "golang-go") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("shop.log");
    let bin = dir.path().join("shop");
    let build = Command::new("go")
        .args(["build", "-o"])
        .arg(&bin)
        .arg(fixture("shop.go"))
        .env("GOCACHE", dir.path().join("gocache"))
        .env("GOPATH", dir.path().join("gopath"))
        .env("GO111MODULE", "off")
        .output()
        .expect("run go build");
    assert!(build.status.success(), "{}", String::from_utf8_lossy(&build.stderr));
    // The runtime writes the final panic to stderr: the same file, appended, as a container's shell redirect does.
    let stderr = OpenOptions::new().create(true).append(true).open(&log).unwrap();
    let out = Command::new(&bin)
        .arg(&log)
        .env("GOTRACEBACK", "all")
        .stderr(stderr)
        .output()
        .expect("run the Go program");
    assert_eq!(out.status.code(), Some(2), "the program ends with a panic");
    let events: usize = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    let records = messages(&adapt(&log, &["--multiline", "go"]));
    assert_one_record_per_event(&log, events, &records);
    assert_eq!(count(&records, "recovered: runtime error"), 16);
    assert!(records
        .iter()
        .filter(|r| r.contains("recovered"))
        .all(|r| r.contains("\ncreated by main.main")));
    let last = records.last().unwrap();
    assert!(last.starts_with("panic: event "), "{last}");
    // A panic value over several lines: Go up to 1.24 prints its later lines as they are, Go 1.25 and later
    // indents them with a tab. Either way they stay in the panic's record.
    assert!(
        last.contains(": cannot continue\nthe shop is closed\n\ngoroutine 1 [")
            || last.contains(": cannot continue\n\tthe shop is closed\n\ngoroutine 1 ["),
        "{last}"
    );
    assert_eq!(last.matches("\ngoroutine ").count(), 3, "{last}");
}

/// A running adapter whose objects are collected by a reader thread.
struct Running {
    child: Child,
    objects: Arc<Mutex<Vec<Value>>>,
}

impl Running {
    fn start(log: &Path, args: &[&str]) -> Running {
        let mut child = Command::new(env!("CARGO_BIN_EXE_entourage"))
            .arg("adapt")
            .arg("--file")
            .arg(log)
            .args(["--poll-interval-ms", "20"])
            .args(args)
            .stdout(Stdio::piped())
            .spawn()
            .expect("start entourage adapt");
        let stdout = child.stdout.take().unwrap();
        let objects = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&objects);
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let line = line.unwrap();
                sink.lock().unwrap().push(serde_json::from_str(&line).unwrap());
            }
        });
        Running { child, objects }
    }

    fn messages(&self) -> Vec<String> {
        messages(&self.objects.lock().unwrap())
    }

    fn wait_for(&self, n: usize) -> Vec<String> {
        let deadline = Instant::now() + DEADLINE;
        while self.messages().len() < n && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(10));
        }
        self.messages()
    }

    fn stop(mut self, signal: &str) -> Vec<String> {
        let status = Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        self.child.wait().unwrap();
        thread::sleep(Duration::from_millis(100));
        self.messages()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn append(path: &Path, text: &str) {
    let mut f = OpenOptions::new().create(true).append(true).open(path).unwrap();
    f.write_all(text.as_bytes()).unwrap();
}

#[test]
fn last_trace_of_a_quiet_app_is_emitted_after_the_quiet_period_and_slow_writes_stay_grouped() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("app.log");
    append(&log, "");
    let adapter = Running::start(&log, &["--multiline", "java", "--multiline-flush-after", "400ms"]);
    thread::sleep(Duration::from_millis(200));
    // The trace arrives in three writes, each within the quiet period of the one before.
    let written = Instant::now();
    append(&log, "ERROR failed\n");
    thread::sleep(Duration::from_millis(150));
    append(&log, "java.lang.IllegalStateException: x\n");
    thread::sleep(Duration::from_millis(150));
    append(&log, "\tat a.B.c(B.java:1)\n");
    let got = adapter.wait_for(1);
    let waited = written.elapsed();
    assert_eq!(
        got,
        ["ERROR failed\njava.lang.IllegalStateException: x\n\tat a.B.c(B.java:1)"]
    );
    assert!(
        waited >= Duration::from_millis(700),
        "emitted before the quiet period: {waited:?}"
    );
    assert!(waited < Duration::from_secs(10), "held back too long: {waited:?}");
    assert_eq!(adapter.stop("-TERM"), got);
}

#[test]
fn trace_over_the_size_cap_is_cut_into_marked_records_and_no_byte_is_lost() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("app.log");
    let frames: Vec<String> = (0..100)
        .map(|i| format!("\tat com.example.Deep.call{i:03}(Deep.java:{i})"))
        .collect();
    let trace = format!("ERROR deep\njava.lang.StackOverflowError\n{}", frames.join("\n"));
    append(&log, &format!("{trace}\nINFO after\n"));
    let objects = adapt(&log, &["--multiline", "java", "--multiline-max-bytes", "1024"]);
    let records = messages(&objects);
    assert!(records.len() >= 4, "{records:#?}");
    assert_eq!(records[..records.len() - 1].join("\n"), trace);
    assert!(records.iter().all(|r| r.len() <= 1024));
    let cut: Vec<bool> = objects.iter().map(|o| o["truncated"] == true).collect();
    assert!(
        cut[..cut.len() - 2].iter().all(|&c| c),
        "every piece but the last says it was cut: {cut:?}"
    );
    assert_eq!(records.last().unwrap(), "INFO after");
    assert_eq!(objects.last().unwrap().get("truncated"), None);
}

#[test]
fn trace_split_by_a_rotation_loses_and_repeats_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("app.log");
    append(&log, "INFO one\nERROR two\n\tat a.B.c(B.java:1)\n");
    let adapter = Running::start(&log, &["--multiline", "java", "--multiline-flush-after", "10s"]);
    assert_eq!(adapter.wait_for(1), ["INFO one"]);
    fs::rename(&log, dir.path().join("app.log.1")).unwrap();
    append(&log, "\tat d.E.f(E.java:2)\nINFO three\n");
    // Leaving the old file ends its open record: the rest of the trace starts the new file's first record.
    assert_eq!(
        adapter.wait_for(3),
        ["INFO one", "ERROR two\n\tat a.B.c(B.java:1)", "\tat d.E.f(E.java:2)"]
    );
    assert_eq!(
        adapter.stop("-TERM"),
        [
            "INFO one",
            "ERROR two\n\tat a.B.c(B.java:1)",
            "\tat d.E.f(E.java:2)",
            "INFO three"
        ]
    );
}

#[test]
fn trace_held_by_grouping_survives_kill_9_because_the_saved_position_stays_before_it() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("app.log");
    let position = dir.path().join("state/app.pos");
    fs::create_dir_all(position.parent().unwrap()).unwrap();
    let pos = position.to_str().unwrap();
    append(&log, "INFO one\nERROR two\n\tat a.B.c(B.java:1)\n");
    let first = Running::start(
        &log,
        &[
            "--multiline",
            "java",
            "--multiline-flush-after",
            "60s",
            "--position",
            pos,
        ],
    );
    assert_eq!(first.wait_for(1), ["INFO one"]);
    // Longer than the checkpoint period: a position is saved while the trace is held.
    thread::sleep(Duration::from_millis(1500));
    assert_eq!(first.stop("-KILL"), ["INFO one"]);

    let second = Running::start(&log, &["--multiline", "java", "--position", pos]);
    append(&log, "INFO three\n");
    let got = second.wait_for(1);
    assert_eq!(
        got.first().map(String::as_str),
        Some("ERROR two\n\tat a.B.c(B.java:1)"),
        "{got:?}"
    );
    assert_eq!(second.stop("-TERM"), ["ERROR two\n\tat a.B.c(B.java:1)", "INFO three"]);
}

#[test]
fn message_lines_held_tentatively_survive_kill_9_and_join_their_trace_after_the_restart() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("app.log");
    let position = dir.path().join("app.pos");
    let pos = position.to_str().unwrap();
    let args = [
        "--multiline",
        "java",
        "--multiline-flush-after",
        "60s",
        "--position",
        pos,
    ];
    // "second line" may be the message's or the next event's: nothing has said yet, so it is held.
    append(
        &log,
        "INFO one\nERROR two\njava.lang.IllegalStateException: first\nsecond line\n",
    );
    let first = Running::start(&log, &args);
    assert_eq!(first.wait_for(1), ["INFO one"]);
    // Longer than the checkpoint period: a position is saved while the lines are held.
    thread::sleep(Duration::from_millis(1500));
    assert_eq!(first.stop("-KILL"), ["INFO one"]);

    let second = Running::start(&log, &args);
    append(&log, "\tat a.B.c(B.java:1)\nINFO three\n");
    let trace = "ERROR two\njava.lang.IllegalStateException: first\nsecond line\n\tat a.B.c(B.java:1)";
    assert_eq!(second.wait_for(1), [trace]);
    assert_eq!(second.stop("-TERM"), [trace, "INFO three"]);
}

/// The adapter's arguments exactly as the webhook injected them in a golden case, with the log and position moved
/// into `dir` and `--exit-at-eof` added.
fn injected_args(case: &str, dir: &Path) -> Vec<String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(case)
        .join("response.json");
    let response: Value = serde_json::from_str(&fs::read_to_string(path).unwrap()).unwrap();
    let container = response["patch"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|op| match &op["value"] {
            Value::Array(items) => items.clone(),
            other => vec![other.clone()],
        })
        .find(|c| c["args"][0] == "adapt")
        .expect("an injected adapter");
    let mut args: Vec<String> = serde_json::from_value(container["args"].clone()).unwrap();
    for (flag, file) in [("--file", "app.log"), ("--position", "app.pos")] {
        if let Some(i) = args.iter().position(|a| a == flag) {
            args[i + 1] = dir.join(file).display().to_string();
        }
    }
    args.push("--exit-at-eof".into());
    args
}

#[test]
fn adapter_runs_with_the_flags_the_webhook_injects_for_every_multiline_annotation() {
    let dir = tempfile::tempdir().unwrap();
    let args = injected_args("adapter-multiline-java-with-time-key-renames-and-levels", dir.path());
    append(
        &dir.path().join("app.log"),
        "2024-05-01 12:00:00.001 WARNING slow\n2024-05-01 12:00:01.002 SEVERE checkout failed\n\
         java.lang.IllegalStateException: closed\n\tat a.B.c(B.java:1)\n",
    );
    let out = Command::new(env!("CARGO_BIN_EXE_entourage"))
        .args(&args[..])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let objects: Vec<Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(objects.len(), 2, "{objects:#?}");
    assert_eq!(objects[0]["@timestamp"], "2024-05-01T12:00:00.001+00:00");
    assert_eq!(objects[0]["severity"], "warn");
    assert_eq!(objects[1]["severity"], "error");
    assert_eq!(
        objects[1]["msg"],
        "checkout failed\njava.lang.IllegalStateException: closed\n\tat a.B.c(B.java:1)"
    );
    assert!(objects
        .iter()
        .all(|o| o.get("time").is_none() && o.get("message").is_none()));

    // With the config's zone and quiet period (case.json): times without a zone are read in Europe/Paris.
    let dir = tempfile::tempdir().unwrap();
    let args = injected_args("adapter-multiline-python-zone-and-quiet-period-from-config", dir.path());
    assert!(
        args.windows(2).any(|w| w == ["--time-zone", "Europe/Paris"]),
        "{args:?}"
    );
    append(
        &dir.path().join("app.log"),
        "Traceback (most recent call last):\nValueError: x\n",
    );
    let out = Command::new(env!("CARGO_BIN_EXE_entourage"))
        .args(&args[..])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(text.lines().count(), 1, "{text}");
}
