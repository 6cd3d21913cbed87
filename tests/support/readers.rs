//! Running the log readers as the webhook injects them: the arguments come from a real injection (the core's
//! patch applied to a Pod), the volumes are directories of a temporary "Pod" (world-writable, as an emptyDir is),
//! the reader runs as the injected `runAsUser`, the app's writer as another uid, appending with `O_APPEND`.
//!
//! Log lines are numbered and of fixed length, so any byte of the file is known from its offset: each run's stdout
//! is checked byte for byte against the file it streamed, wherever it started.

use std::fs;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use entourage::core::config::Config;
use serde_json::{json, Value};

/// Whether this test process may run others as another user (it is root here and in CI); if not, every process
/// runs as the current user and the tests check everything but the uids.
pub fn root() -> bool {
    // The owner of /proc/self is the process's effective uid.
    fs::metadata("/proc/self").map(|m| m.uid() == 0).unwrap_or(false)
}

/// Runs `command` as `uid:gid` when this process may.
fn as_user(command: &mut Command, uid: u32, gid: u32) -> &mut Command {
    if root() {
        command.uid(uid).gid(gid);
    }
    command
}

/// The uid the app's writer runs as (the reader runs as the injected 65534).
pub const APP_UID: u32 = 1000;
/// Generous: a loaded CI machine makes the tests slower, not red.
pub const DEADLINE: Duration = Duration::from_secs(60);

/// A Pod's volumes on this machine.
pub struct Pod {
    _dir: tempfile::TempDir,
    /// The log volume (mounted at /var/log/app in the Pod).
    pub logs: PathBuf,
    /// The readers' state volume (mounted at /var/lib/entourage).
    pub state: PathBuf,
}

impl Pod {
    pub fn new() -> Pod {
        let dir = tempfile::tempdir().expect("temp dir");
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
        let logs = dir.path().join("logs");
        let state = dir.path().join("state");
        for d in [&logs, &state] {
            fs::create_dir(d).unwrap();
            // An emptyDir is world-writable.
            fs::set_permissions(d, fs::Permissions::from_mode(0o777)).unwrap();
        }
        Pod { _dir: dir, logs, state }
    }

    /// The log file `name` as the Pod sees it at /var/log/app/NAME.
    pub fn log(&self, name: &str) -> PathBuf {
        self.logs.join(name)
    }

    /// The command the webhook injects for `annotation` (sidecar-logs or adapter-logs) under `config`, with the
    /// volumes' mount paths mapped to this Pod's directories.
    pub fn injected(&self, annotation: &str, value: &str, extra: &[(&str, &str)], config: &Config) -> Reader {
        let mut annotations = json!({ annotation: value });
        for (k, v) in extra {
            annotations[*k] = json!(v);
        }
        let pod = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "app", "namespace": "default", "annotations": annotations},
            "spec": {"containers": [{"name": "app", "image": "registry.example.com/app:1"}]}
        });
        let outcome = entourage::core::mutate::pod::mutate_pod(&pod, config);
        let patch = serde_json::to_value(&outcome.patch).unwrap();
        let patched = crate::support::apply(&pod, &patch).expect("the patch applies");
        let spec = &patched["spec"];
        let reader = spec["initContainers"]
            .as_array()
            .into_iter()
            .chain(spec["containers"].as_array())
            .flatten()
            .find(|c| c["name"] != "app")
            .expect("a reader was injected")
            .clone();
        let map = |s: &str| {
            s.replace("/var/log/app", &self.logs.display().to_string())
                .replace("/var/lib/entourage", &self.state.display().to_string())
        };
        let strings = |v: &Value| -> Vec<String> {
            v.as_array()
                .into_iter()
                .flatten()
                .map(|a| map(a.as_str().unwrap()))
                .collect()
        };
        let sc = &reader["securityContext"];
        // Without runAsUser/runAsGroup (config `hardening.runAsUser: null`) the image's user applies.
        let (image_uid, image_gid) = image_user();
        Reader {
            args: strings(&reader["args"]),
            probe: reader["startupProbe"]["exec"]["command"]
                .as_array()
                .map(|_| strings(&reader["startupProbe"]["exec"]["command"])),
            uid: sc["runAsUser"].as_u64().map_or(image_uid, |u| u as u32),
            gid: sc["runAsGroup"].as_u64().map_or(image_gid, |g| g as u32),
            spec: reader,
        }
    }
}

/// The `uid:gid` the entourage image runs as: the Dockerfile's last `USER`, which applies to a container whose
/// security context sets no `runAsUser`.
pub fn image_user() -> (u32, u32) {
    let dockerfile = fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/Dockerfile")).unwrap();
    let user = dockerfile
        .lines()
        .rev()
        .find_map(|l| l.trim().strip_prefix("USER "))
        .expect("the Dockerfile sets a USER");
    let (uid, gid) = user.trim().split_once(':').unwrap_or((user.trim(), user.trim()));
    let numeric = |s: &str| {
        s.parse()
            .unwrap_or_else(|_| panic!("USER {user} is not numeric: runAsNonRoot needs a numeric user"))
    };
    (numeric(uid), numeric(gid))
}

/// An injected reader's command.
#[derive(Clone, Debug)]
pub struct Reader {
    /// Its args (the entourage image's ENTRYPOINT is the binary).
    pub args: Vec<String>,
    /// Its startup probe's command, when native.
    pub probe: Option<Vec<String>>,
    pub uid: u32,
    pub gid: u32,
    /// The injected container, as the patch has it.
    pub spec: Value,
}

impl Reader {
    /// Starts the reader (stdout piped to `sink`, stderr collected).
    pub fn start(&self, extra: &[&str], sink: impl FnMut(&[u8]) + Send + 'static) -> Running {
        self.start_as(self.uid, self.gid, extra, sink)
    }

    pub fn start_as(
        &self,
        uid: u32,
        gid: u32,
        extra: &[&str],
        mut sink: impl FnMut(&[u8]) + Send + 'static,
    ) -> Running {
        let mut command = Command::new(env!("CARGO_BIN_EXE_entourage"));
        command.args(&self.args).args(extra);
        if !extra.contains(&"--poll-interval-ms") {
            command.args(["--poll-interval-ms", "20"]);
        }
        let mut child = as_user(&mut command, uid, gid)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the reader");
        let mut stdout = child.stdout.take().unwrap();
        let out = thread::spawn(move || {
            let mut buf = vec![0; 1 << 20];
            loop {
                match stdout.read(&mut buf) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => sink(&buf[..n]),
                }
            }
        });
        let stderr_lines = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().unwrap();
        let lines = Arc::clone(&stderr_lines);
        let err = thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                lines.lock().unwrap().push(line);
            }
        });
        Running {
            child,
            threads: vec![out, err],
            stderr: stderr_lines,
        }
    }

    /// Runs the startup probe's command (as the kubelet would, in the reader's container).
    pub fn probe_passes(&self) -> bool {
        let probe = self.probe.as_ref().expect("a native reader has a startup probe");
        assert_eq!(probe[0], "/entourage", "the probe runs the image's binary");
        let mut command = Command::new(env!("CARGO_BIN_EXE_entourage"));
        command.args(&probe[1..]);
        as_user(&mut command, self.uid, self.gid)
            .stderr(Stdio::null())
            .status()
            .unwrap()
            .success()
    }
}

/// A running reader.
pub struct Running {
    pub child: Child,
    threads: Vec<thread::JoinHandle<()>>,
    stderr: Arc<Mutex<Vec<String>>>,
}

impl Running {
    /// SIGKILL, then wait until its stdout is read to the end.
    pub fn kill9(mut self) {
        self.child.kill().unwrap();
        self.wait();
    }

    /// SIGTERM, then wait for the exit; returns the status and the stderr lines.
    pub fn terminate(mut self) -> (ExitStatus, Vec<Value>) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        self.wait()
    }

    /// Waits for the exit (for --exit-at-eof); returns the status and the stderr lines, each a JSON object.
    pub fn wait(&mut self) -> (ExitStatus, Vec<Value>) {
        let deadline = Instant::now() + DEADLINE;
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            assert!(Instant::now() < deadline, "the reader did not exit");
            thread::sleep(Duration::from_millis(10));
        };
        for t in self.threads.drain(..) {
            t.join().unwrap();
        }
        (status, self.events())
    }

    /// Its stderr lines so far, each of which must be one JSON object.
    pub fn events(&self) -> Vec<Value> {
        self.stderr
            .lock()
            .unwrap()
            .iter()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("stderr line not JSON ({e}): {l}")))
            .collect()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Line `k` of a log with lines of `len` bytes: its number, a space, letters, a newline.
pub fn line(k: u64, len: usize) -> Vec<u8> {
    let mut l = Vec::with_capacity(len);
    l.extend_from_slice(format!("{k:010} ").as_bytes());
    let from = (k % 26) as usize;
    // Letters from the k-th on, cycling (sliced from a repeated alphabet: this runs for every line of 1 GiB).
    let mut left = len - 12;
    let mut at = from;
    while left > 0 {
        let n = left.min(26 - at);
        l.extend_from_slice(&b"abcdefghijklmnopqrstuvwxyz"[at..at + n]);
        left -= n;
        at = 0;
    }
    l.push(b'\n');
    l
}

/// What a writer process appends: lines `from..from+count` of `len` bytes.
pub fn lines(from: u64, count: u64, len: usize) -> Vec<u8> {
    (from..from + count).flat_map(|k| line(k, len)).collect()
}

/// The same as [`line`], in Python, for the writer process.
const WRITER: &str = r#"
import os, sys, time
path, first, count, length, rate, batch = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5]), int(sys.argv[6])
alpha = "abcdefghijklmnopqrstuvwxyz" * (length // 26 + 3)
fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
start = time.monotonic()
written = 0
k = first
while k < first + count:
    n = min(batch, first + count - k)
    data = "".join(f"{j:010d} " + alpha[j % 26 : j % 26 + length - 12] + "\n" for j in range(k, k + n)).encode()
    os.write(fd, data)
    written += len(data)
    k += n
    if rate > 0:
        ahead = written / rate - (time.monotonic() - start)
        if ahead > 0:
            time.sleep(ahead)
"#;

/// The app: appends lines `from..from+count` of `len` bytes as uid [`APP_UID`] with `O_APPEND` (creating the file
/// 0644 if it is missing), `batch` lines per write, at about `rate` bytes/s (0: as fast as it can).
pub fn writer(path: &Path, from: u64, count: u64, len: usize, rate: f64, batch: u64) -> Child {
    let mut command = Command::new("python3");
    command.args(["-c", WRITER]).arg(path).args([
        from.to_string(),
        count.to_string(),
        len.to_string(),
        rate.to_string(),
        batch.to_string(),
    ]);
    as_user(&mut command, APP_UID, APP_UID)
        .spawn()
        .expect("start the writer (python3)")
}

/// Creates `path` as a native reader does before the app starts: its own, mode 0666.
pub fn created_by_reader(path: &Path, reader: &Reader) {
    fs::write(path, b"").unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(0o666)).unwrap();
    if root() {
        std::os::unix::fs::chown(path, Some(reader.uid), Some(reader.gid)).unwrap();
    }
}

/// Appends synchronously as the app.
pub fn write(path: &Path, from: u64, count: u64, len: usize) {
    let status = writer(path, from, count, len, 0.0, 1000).wait().unwrap();
    assert!(status.success(), "the writer failed");
}

/// Checks one run's stdout against the file, byte for byte, wherever in the file it started.
#[derive(Debug, Default)]
pub struct RunCheck {
    len: usize,
    /// Bytes seen before the run's start offset could be known (up to the first line number after a newline).
    pending: Vec<u8>,
    /// The file offset of the run's first byte.
    pub start: Option<u64>,
    /// The file offset after the run's last byte.
    pub end: u64,
    pub error: Option<String>,
    cached: Option<(u64, Vec<u8>)>,
}

impl RunCheck {
    /// A check for a run known to start at `start` (or found from its output when `None`).
    pub fn new(len: usize, start: Option<u64>) -> RunCheck {
        RunCheck {
            len,
            start,
            end: start.unwrap_or(0),
            ..RunCheck::default()
        }
    }

    pub fn feed(&mut self, data: &[u8]) {
        if self.error.is_some() {
            return;
        }
        if self.start.is_none() {
            self.pending.extend_from_slice(data);
            let Some(nl) = self.pending.iter().position(|&b| b == b'\n') else {
                return;
            };
            if self.pending.len() < nl + 11 {
                return;
            }
            let k: u64 = match std::str::from_utf8(&self.pending[nl + 1..nl + 11])
                .ok()
                .and_then(|s| s.parse().ok())
            {
                Some(k) => k,
                None => {
                    self.error = Some(format!(
                        "no line number after the first newline: {:?}",
                        &self.pending[..nl + 11]
                    ));
                    return;
                }
            };
            let start = (k * self.len as u64).checked_sub(nl as u64 + 1);
            let Some(start) = start else {
                self.error = Some("the first line starts before the file".into());
                return;
            };
            self.start = Some(start);
            self.end = start;
            let pending = std::mem::take(&mut self.pending);
            return self.compare(&pending);
        }
        self.compare(data);
    }

    fn compare(&mut self, mut data: &[u8]) {
        let len = self.len as u64;
        while !data.is_empty() {
            let (k, col) = (self.end / len, (self.end % len) as usize);
            if self.cached.as_ref().map(|(c, _)| *c) != Some(k) {
                self.cached = Some((k, line(k, self.len)));
            }
            let expected = &self.cached.as_ref().unwrap().1[col..];
            let n = expected.len().min(data.len());
            if data[..n] != expected[..n] {
                self.error = Some(format!(
                    "at offset {}: got {:?}, expected {:?}",
                    self.end,
                    String::from_utf8_lossy(&data[..n.min(40)]),
                    String::from_utf8_lossy(&expected[..n.min(40)])
                ));
                return;
            }
            self.end += n as u64;
            data = &data[n..];
        }
    }
}

/// A [`RunCheck`] shared with the reader's stdout thread.
pub fn checked(len: usize, start: Option<u64>) -> (Arc<Mutex<RunCheck>>, impl FnMut(&[u8]) + Send + 'static) {
    let check = Arc::new(Mutex::new(RunCheck::new(len, start)));
    let feed = Arc::clone(&check);
    (check, move |data: &[u8]| feed.lock().unwrap().feed(data))
}

/// Waits until `done()` or the deadline.
pub fn wait_until(mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + DEADLINE;
    while !done() {
        if Instant::now() > deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(10));
    }
    true
}

/// Bytes allocated on disk for `path` (`st_blocks` × 512), what the kubelet counts.
pub fn allocated(path: &Path) -> u64 {
    fs::metadata(path).map(|m| m.blocks() * 512).unwrap_or(0)
}

/// The `msg` of every event at `level`.
pub fn messages(events: &[Value], level: &str) -> Vec<String> {
    events
        .iter()
        .filter(|e| e["level"] == level)
        .map(|e| e["msg"].as_str().unwrap_or_default().to_owned())
        .collect()
}
