//! The real `entourage adapt` binary following a real file through rotations, then stopped with SIGTERM.
//!
//! Every wait polls the output with a generous deadline, so a loaded CI machine makes the tests slower, not red.

mod support;

use std::fs::{self, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

const DEADLINE: Duration = Duration::from_secs(20);

/// A running adapter whose stdout objects are collected by a reader thread.
struct Adapter {
    child: Child,
    objects: Arc<Mutex<Vec<serde_json::Value>>>,
    reader: Option<thread::JoinHandle<()>>,
}

impl Adapter {
    fn start(file: &Path, extra: &[&str]) -> Adapter {
        let mut child = Command::new(env!("CARGO_BIN_EXE_entourage"))
            .arg("adapt")
            .arg("--file")
            .arg(file)
            .args(["--poll-interval-ms", "50"])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start entourage adapt");
        let stdout = child.stdout.take().expect("piped stdout");
        let objects = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&objects);
        let reader = thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let line = line.expect("stdout is UTF-8");
                let object = serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
                sink.lock().unwrap().push(object);
            }
        });
        Adapter {
            child,
            objects,
            reader: Some(reader),
        }
    }

    fn messages(&self) -> Vec<String> {
        self.objects
            .lock()
            .unwrap()
            .iter()
            .map(|o| o["message"].as_str().unwrap_or_default().to_owned())
            .collect()
    }

    /// Waits until the messages satisfy `done` (or the deadline passes; the caller's assertions then say what is
    /// wrong), and returns them.
    fn wait_until(&self, done: impl Fn(&[String]) -> bool) -> Vec<String> {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let messages = self.messages();
            if done(&messages) || Instant::now() > deadline {
                return messages;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until `n` objects have arrived.
    fn wait_for_count(&self, n: usize) -> Vec<String> {
        self.wait_until(|m| m.len() >= n)
    }

    fn wait_for_exit(&mut self) -> ExitStatus {
        let deadline = Instant::now() + DEADLINE;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait for adapter") {
                if let Some(reader) = self.reader.take() {
                    reader.join().expect("reader thread");
                }
                return status;
            }
            assert!(Instant::now() < deadline, "adapter did not exit");
            thread::sleep(Duration::from_millis(20));
        }
    }

    fn terminate(&mut self) -> ExitStatus {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM failed");
        self.wait_for_exit()
    }
}

impl Drop for Adapter {
    fn drop(&mut self) {
        // A failed assertion must not leave the adapter running.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn append(path: &Path, lines: impl IntoIterator<Item = usize>) {
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .expect("open log for append");
    for n in lines {
        writeln!(file, "line {n:06}").expect("append line");
    }
}

fn numbered(range: std::ops::RangeInclusive<usize>) -> Vec<String> {
    range.map(|n| format!("line {n:06}")).collect()
}

fn log_path() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("app.log");
    (dir, path)
}

#[test]
fn follows_rename_copytruncate_and_recreate_emitting_every_line_once_in_order() {
    let (dir, log) = log_path();
    append(&log, 1..=50);
    let mut adapter = Adapter::start(&log, &["--format", "plain"]);
    for chunk in (51..=100).step_by(10) {
        append(&log, chunk..chunk + 10);
        thread::sleep(Duration::from_millis(20));
    }

    // Rename rotation; the app writes two more lines to the old inode before it reopens the path.
    fs::rename(&log, dir.path().join("app.log.1")).unwrap();
    append(&dir.path().join("app.log.1"), 101..=102);
    append(&log, 103..=150);
    assert_eq!(adapter.wait_for_count(150), numbered(1..=150));

    // copytruncate: lines are written only before the copy and after the truncate (logrotate's own race lies
    // between the two). The first lines after the truncate are fewer bytes than before it.
    fs::copy(&log, dir.path().join("app.log.2")).unwrap();
    OpenOptions::new().write(true).open(&log).unwrap().set_len(0).unwrap();
    append(&log, 151..=155);
    assert_eq!(adapter.wait_for_count(155), numbered(1..=155));
    append(&log, 156..=200);
    assert_eq!(adapter.wait_for_count(200), numbered(1..=200));

    // Delete and re-create.
    fs::remove_file(&log).unwrap();
    append(&log, 201..=250);
    assert_eq!(adapter.wait_for_count(250), numbered(1..=250));

    let status = adapter.terminate();
    assert!(status.success(), "exit status after SIGTERM: {status}");
    assert_eq!(adapter.messages(), numbered(1..=250), "nothing more after SIGTERM");
    let objects = adapter.objects.lock().unwrap();
    assert!(objects
        .iter()
        .all(|o| o["file"] == log.display().to_string() && o["time"].is_string()));
}

#[test]
fn truncated_file_refilled_past_its_old_size_before_a_poll_is_read_from_its_start() {
    let (_dir, log) = log_path();
    append(&log, 1..=20);
    let mut adapter = Adapter::start(&log, &["--format", "plain"]);
    assert_eq!(adapter.wait_for_count(20), numbered(1..=20));
    // Truncate and at once write more bytes than the file had: its size never looks smaller to a poll.
    OpenOptions::new().write(true).open(&log).unwrap().set_len(0).unwrap();
    append(&log, 21..=60);
    assert_eq!(adapter.wait_for_count(60), numbered(1..=60));
    assert!(adapter.terminate().success());
    assert_eq!(adapter.messages(), numbered(1..=60));
}

#[test]
fn file_that_does_not_exist_yet_is_waited_for_and_read_from_its_start() {
    let (_dir, log) = log_path();
    let mut adapter = Adapter::start(&log, &["--format", "logfmt", "--field", "app=shop"]);
    thread::sleep(Duration::from_millis(300));
    fs::write(&log, "level=info msg=first\nlevel=warn msg=second\n").unwrap();
    adapter.wait_for_count(2);
    let status = adapter.terminate();
    assert!(status.success(), "exit status after SIGTERM: {status}");
    let objects = adapter.objects.lock().unwrap();
    let got: Vec<_> = objects
        .iter()
        .map(|o| (o["level"].as_str(), o["msg"].as_str(), o["app"].as_str()))
        .collect();
    assert_eq!(
        got,
        [
            (Some("info"), Some("first"), Some("shop")),
            (Some("warn"), Some("second"), Some("shop"))
        ]
    );
}

#[test]
fn existing_file_is_read_from_its_start_so_lines_written_before_the_adapter_started_are_not_lost() {
    // The report: 100 lines, the adapter started, one line appended: all 101 come out, not only the last.
    let (_dir, log) = log_path();
    append(&log, 1..=100);
    let mut adapter = Adapter::start(&log, &["--format", "plain"]);
    append(&log, 101..=101);
    assert_eq!(adapter.wait_for_count(101), numbered(1..=101));
    assert!(adapter.terminate().success());
    assert_eq!(adapter.messages(), numbered(1..=101));
}

#[test]
fn partial_last_line_is_emitted_only_after_its_newline_arrives() {
    let (_dir, log) = log_path();
    fs::write(&log, "complete\npart").unwrap();
    let mut adapter = Adapter::start(&log, &["--format", "plain"]);
    assert_eq!(adapter.wait_for_count(1), ["complete"]);
    // Several poll intervals: the partial line must still be held back.
    thread::sleep(Duration::from_millis(500));
    assert_eq!(adapter.messages(), ["complete"]);
    OpenOptions::new()
        .append(true)
        .open(&log)
        .unwrap()
        .write_all(b"ial line\n")
        .unwrap();
    assert_eq!(adapter.wait_for_count(2), ["complete", "partial line"]);
    assert!(adapter.terminate().success());
}

#[test]
fn line_of_3_mib_is_split_into_pieces_of_at_most_1_mib_and_nothing_is_lost() {
    let (_dir, log) = log_path();
    let long: String = (0..3 * 1024 * 1024 + 10)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
    fs::write(&log, format!("before\n{long}\nafter\n")).unwrap();
    let mut adapter = Adapter::start(&log, &["--format", "plain", "--exit-at-eof"]);
    let status = adapter.wait_for_exit();
    assert!(status.success(), "exit status at EOF: {status}");
    let messages = adapter.messages();
    assert_eq!(messages.first().map(String::as_str), Some("before"));
    assert_eq!(messages.last().map(String::as_str), Some("after"));
    let pieces = &messages[1..messages.len() - 1];
    assert_eq!(pieces.len(), 4);
    assert!(pieces.iter().all(|p| p.len() <= 1024 * 1024), "a piece is over 1 MiB");
    assert_eq!(pieces.concat(), long);
}

#[test]
fn nginx_lines_become_typed_objects_and_garbage_is_kept_with_parse_error() {
    let (_dir, log) = log_path();
    fs::write(
        &log,
        "192.0.2.1 - - [01/May/2024:13:55:36 +0000] \"GET /health HTTP/1.1\" 200 2 \"-\" \"kube-probe/1.33\"\n\
         not an access log line\n",
    )
    .unwrap();
    let mut adapter = Adapter::start(&log, &["--format", "nginx", "--exit-at-eof"]);
    assert!(adapter.wait_for_exit().success());
    let objects = adapter.objects.lock().unwrap();
    assert_eq!(objects.len(), 2);
    assert_eq!(objects[0]["status"], 200);
    assert_eq!(objects[0]["path"], "/health");
    assert_eq!(objects[1]["parse_error"], true);
    assert_eq!(objects[1]["message"], "not an access log line");
}

#[test]
fn unknown_format_fails_with_a_json_error_on_stderr() {
    let output = Command::new(env!("CARGO_BIN_EXE_entourage"))
        .args(["adapt", "--file", "/nonexistent/app.log", "--format", "xml"])
        .output()
        .expect("run entourage adapt");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    let first: serde_json::Value = serde_json::from_str(stderr.lines().next().unwrap_or_default()).unwrap();
    assert_eq!(first["level"], "error");
    assert!(
        first["msg"].as_str().unwrap().contains("unknown format \"xml\""),
        "{first}"
    );
}

#[test]
fn running_adapter_stays_within_the_memory_its_container_requests_without_huge_pages() {
    let (_dir, log) = log_path();
    append(&log, 1..=3);
    let mut adapter = Adapter::start(&log, &["--format", "plain"]);
    adapter.wait_for_count(3);
    let pid = adapter.child.id();
    // Linux has reported the flag since 5.0; where it does not, the RSS bound still holds.
    if let Some(enabled) = support::proc_status(pid, "THP_enabled") {
        assert_eq!(enabled, 0, "transparent huge pages are still enabled for the adapter");
    }
    let requested = entourage::core::config::Config::default().resources.requests["memory"]
        .0
        .clone();
    assert_eq!(requested, "16Mi", "the bound below assumes the default request");
    // What the adapter allocates (anonymous memory: heap, stacks, and huge pages when they sneak back) must leave
    // half the request for the program's own text. VmRSS would also count the text of this test's debug binary
    // (about 50 MB, three times the shipped one), which grows with every feature whatever the adapter does.
    let anon_kib = support::proc_status(pid, "RssAnon").expect("RssAnon in /proc/<pid>/status");
    assert!(
        anon_kib < 8 * 1024,
        "the adapter holds {anon_kib} KiB of its own memory, over half the {requested} its container requests"
    );
    assert!(adapter.terminate().success());
}
