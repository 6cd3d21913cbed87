//! The log readers as the webhook injects them, on real files, as real users: every line out exactly once and in
//! order across `kill -9` and restarts, the disk given back while the app writes, rotations while running and
//! while down, the classic-mode fallback, bad positions and bad paths, the backlog warning, the drain on SIGTERM.
//!
//! `slow_…` streams 1 GiB; the others a few MiB.

mod support;

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use entourage::core::config::{Config, SidecarMode};
use support::readers::*;

const SIDECAR_LOGS: &str = "entourage.dev/sidecar-logs";
const ADAPTER_LOGS: &str = "entourage.dev/adapter-logs";
const ACCESS_LOG: &str = "/var/log/app/access.log";

fn config(mode: SidecarMode) -> Config {
    let mut config = Config::default();
    config.sidecars.mode = mode;
    config
}

/// A reader whose whole stdout is collected.
fn collected(reader: &Reader, extra: &[&str]) -> (Running, Arc<Mutex<Vec<u8>>>) {
    let out = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&out);
    let running = reader.start(extra, move |data| sink.lock().unwrap().extend_from_slice(data));
    (running, out)
}

/// The line numbers in streamed bytes.
fn numbers(bytes: &[u8]) -> Vec<u64> {
    bytes
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| std::str::from_utf8(&l[..10]).unwrap().parse().unwrap())
        .collect()
}

fn range(from: u64, to: u64) -> Vec<u64> {
    (from..to).collect()
}

/// The app writes `count` lines of `len` bytes at `rate` bytes/s while the injected streamer runs; the streamer
/// is killed with SIGKILL `kills` times and started again with the same command. Checks every run byte for byte,
/// that no byte is lost between runs and that at most `max_repeat` bytes are repeated per restart, and samples
/// the file's allocated size, returning its maximum.
fn stream_through_kills(count: u64, len: usize, rate: f64, kills: usize, max_repeat: u64) -> u64 {
    let pod = Pod::new();
    let reader = pod.injected(SIDECAR_LOGS, ACCESS_LOG, &[], &config(SidecarMode::Native));
    let log = pod.log("access.log");
    let total = count * len as u64;
    let mut runs = Vec::new();
    let (check, sink) = checked(len, Some(0));
    let mut running = reader.start(&[], sink);
    runs.push(check);
    assert!(wait_until(|| reader.probe_passes()), "the startup probe never passed");
    let meta = fs::metadata(&log).expect("the reader created the log file before the app started");
    assert_eq!(
        meta.permissions().mode() & 0o777,
        0o666,
        "writable by an app of any uid"
    );
    if root() {
        assert_eq!(meta.uid(), reader.uid, "created by the reader, as its runAsUser");
    }
    let mut app = writer(&log, 0, count, len, rate, 64);
    let started = Instant::now();
    // The kills are spread over the time the app writes.
    let span = Duration::from_secs_f64(total as f64 / rate);
    let mut max_allocated = 0;
    for kill in 1..=kills {
        let at = span.mul_f64(kill as f64 / (kills as f64 + 1.0));
        while started.elapsed() < at {
            max_allocated = max_allocated.max(allocated(&log));
            thread::sleep(Duration::from_millis(10));
        }
        running.kill9();
        let (check, sink) = checked(len, None);
        running = reader.start(&[], sink);
        runs.push(check);
    }
    loop {
        max_allocated = max_allocated.max(allocated(&log));
        if app.try_wait().unwrap().is_some() && runs.last().unwrap().lock().unwrap().end >= total {
            break;
        }
        assert!(started.elapsed() < span + DEADLINE, "the streamer fell behind");
        thread::sleep(Duration::from_millis(10));
    }
    let (status, events) = running.terminate();
    assert!(status.success(), "exit status after SIGTERM: {status}");
    assert_eq!(
        messages(&events, "warn"),
        Vec::<String>::new(),
        "no warnings: {events:?}"
    );
    let mut previous_end = 0;
    for (i, run) in runs.iter().enumerate() {
        let run = run.lock().unwrap();
        assert_eq!(run.error, None, "run {i}");
        // A run killed before it streamed anything (a loaded machine) proves nothing either way.
        let Some(start) = run.start else { continue };
        assert!(
            start <= previous_end,
            "run {i} starts at {start}: bytes {previous_end}..{start} were lost"
        );
        assert!(
            previous_end - start <= max_repeat,
            "run {i} repeats {} bytes, more than {max_repeat}",
            previous_end - start
        );
        previous_end = run.end;
    }
    assert_eq!(previous_end, total, "the last run streamed to the end");
    assert_eq!(
        fs::metadata(&log).unwrap().len(),
        total,
        "the file keeps its apparent size"
    );
    max_allocated
}

#[test]
fn streamer_killed_five_times_loses_no_byte_repeats_at_most_a_second_and_gives_the_disk_back() {
    // 32 MB at 8 MB/s: four seconds of writing, five kills.
    let rate = 8e6;
    let max_allocated = stream_through_kills(160_000, 200, rate, 5, rate as u64);
    assert!(
        max_allocated <= 16 << 20,
        "the file held {} MiB on disk",
        max_allocated >> 20
    );
}

/// ONE slow test: 1 GiB, long lines (so a debug build keeps up), five kills.
#[test]
fn slow_streamer_streams_1_gib_written_by_another_uid_exactly_once_with_at_most_16_mib_on_disk() {
    let rate = 100.0 * (1 << 20) as f64;
    let max_allocated = stream_through_kills(262_144, 4096, rate, 5, rate as u64);
    assert!(
        max_allocated <= 16 << 20,
        "the file held {} MiB on disk",
        max_allocated >> 20
    );
}

#[test]
fn adapter_killed_twice_emits_every_line_as_one_object_and_repeats_at_most_a_second() {
    let pod = Pod::new();
    let reader = pod.injected(
        ADAPTER_LOGS,
        ACCESS_LOG,
        &[("entourage.dev/adapter-format", "plain")],
        &config(SidecarMode::Native),
    );
    assert_eq!(reader.args[0], "adapt");
    let log = pod.log("access.log");
    let mut runs = Vec::new();
    let (mut running, out) = collected(&reader, &[]);
    runs.push(out);
    assert!(wait_until(|| reader.probe_passes()));
    let mut app = writer(&log, 0, 30_000, 100, 1e6, 20);
    for _ in 0..2 {
        thread::sleep(Duration::from_millis(900));
        running.kill9();
        let (next, out) = collected(&reader, &[]);
        running = next;
        runs.push(out);
    }
    assert!(app.wait().unwrap().success());
    let last = Arc::clone(runs.last().unwrap());
    assert!(wait_until(|| last
        .lock()
        .unwrap()
        .windows(10)
        .any(|w| w == b"0000029999")));
    let (status, _) = running.terminate();
    assert!(status.success());
    let mut previous: Option<u64> = None;
    for (i, out) in runs.iter().enumerate() {
        let out = out.lock().unwrap();
        let got: Vec<u64> = std::str::from_utf8(&out)
            .unwrap()
            .lines()
            .map(|l| {
                let object: serde_json::Value = serde_json::from_str(l).unwrap();
                object["message"].as_str().unwrap()[..10].parse().unwrap()
            })
            .collect();
        let first = got[0];
        assert_eq!(
            got,
            range(first, first + got.len() as u64),
            "run {i}: in order, each once"
        );
        if let Some(previous) = previous {
            assert!(
                first <= previous + 1,
                "run {i} starts at line {first}, after {previous}: lines lost"
            );
            assert!(
                previous + 1 - first <= 10_000,
                "run {i} repeats {} lines (a second is 10,000)",
                previous + 1 - first
            );
        } else {
            assert_eq!(first, 0);
        }
        previous = Some(got[got.len() - 1]);
    }
    assert_eq!(previous, Some(29_999));
}

#[test]
fn file_renamed_while_the_reader_was_down_is_drained_from_the_saved_position_first() {
    let pod = Pod::new();
    let reader = pod.injected(SIDECAR_LOGS, ACCESS_LOG, &[], &config(SidecarMode::Native));
    let log = pod.log("access.log");
    let (running, first) = collected(&reader, &[]);
    assert!(wait_until(|| reader.probe_passes()));
    write(&log, 0, 1000, 80);
    assert!(wait_until(|| first.lock().unwrap().len() == 80_000));
    // Past one checkpoint interval: the position is saved.
    thread::sleep(Duration::from_millis(1300));
    running.kill9();
    // While the reader is down: more lines, then logrotate renames the file and the app starts a new one.
    write(&log, 1000, 100, 80);
    fs::rename(&log, pod.log("access.log.1")).unwrap();
    write(&log, 1100, 50, 80);
    let (mut running, second) = collected(&reader, &["--exit-at-eof"]);
    let (status, events) = running.wait();
    assert!(status.success());
    assert_eq!(numbers(&second.lock().unwrap()), range(1000, 1150), "{events:?}");
    // The app created the new file itself (as logrotate's `create` would without a mode for everyone): its space
    // cannot be given back, and the reader says so; nothing else.
    let warnings = messages(&events, "warn");
    assert!(warnings.iter().all(|w| w.contains("cannot give back")), "{warnings:?}");
}

#[test]
fn file_truncated_while_the_reader_was_down_is_read_again_from_its_start_after_one_warning() {
    let pod = Pod::new();
    let reader = pod.injected(SIDECAR_LOGS, ACCESS_LOG, &[], &config(SidecarMode::Native));
    let log = pod.log("access.log");
    created_by_reader(&log, &reader);
    write(&log, 0, 500, 80);
    let (mut running, _) = collected(&reader, &["--exit-at-eof"]);
    assert!(running.wait().0.success());
    // copytruncate while down: the copy is logrotate's; the app goes on writing into the emptied file.
    fs::copy(&log, pod.log("access.log.1")).unwrap();
    fs::OpenOptions::new()
        .write(true)
        .open(&log)
        .unwrap()
        .set_len(0)
        .unwrap();
    write(&log, 500, 20, 80);
    let (mut running, out) = collected(&reader, &["--exit-at-eof"]);
    let (status, events) = running.wait();
    assert!(status.success());
    assert_eq!(numbers(&out.lock().unwrap()), range(500, 520));
    let warnings = messages(&events, "warn");
    assert_eq!(warnings.len(), 1, "{events:?}");
    assert!(
        warnings[0].contains("shorter than the saved position"),
        "{}",
        warnings[0]
    );
}

#[test]
fn rename_copytruncate_and_replacement_while_running_stream_every_line_once_in_order() {
    let pod = Pod::new();
    let reader = pod.injected(SIDECAR_LOGS, ACCESS_LOG, &[], &config(SidecarMode::Native));
    let log = pod.log("access.log");
    let (running, out) = collected(&reader, &[]);
    assert!(wait_until(|| reader.probe_passes()));
    let count = |n: usize| wait_until(|| out.lock().unwrap().len() == n * 60);
    write(&log, 0, 100, 60);
    assert!(count(100));
    // Rename; the app writes to the old inode once more before it reopens the path.
    fs::rename(&log, pod.log("access.log.1")).unwrap();
    write(&pod.log("access.log.1"), 100, 10, 60);
    write(&log, 110, 90, 60);
    assert!(count(200));
    // copytruncate.
    fs::copy(&log, pod.log("access.log.2")).unwrap();
    fs::OpenOptions::new()
        .write(true)
        .open(&log)
        .unwrap()
        .set_len(0)
        .unwrap();
    write(&log, 200, 5, 60);
    assert!(count(205));
    write(&log, 205, 95, 60);
    assert!(count(300));
    // Replacement: deleted and created again by the app.
    fs::remove_file(&log).unwrap();
    write(&log, 300, 100, 60);
    assert!(count(400));
    let (status, _) = running.terminate();
    assert!(status.success());
    assert_eq!(numbers(&out.lock().unwrap()), range(0, 400));
}

#[test]
fn classic_reader_of_a_file_the_app_created_first_warns_once_and_streams_everything() {
    let pod = Pod::new();
    let mut config = config(SidecarMode::Classic);
    config.sidecars.drain_period = "1s".into();
    let reader = pod.injected(SIDECAR_LOGS, ACCESS_LOG, &[], &config);
    assert!(reader.probe.is_none(), "a classic container gates nothing");
    assert!(reader.args.windows(2).any(|w| w == ["--drain-period", "1s"]));
    let log = pod.log("access.log");
    // The app won the race: its file, 0644, its uid.
    write(&log, 0, 100, 80);
    let (running, out) = collected(&reader, &[]);
    assert!(wait_until(|| out.lock().unwrap().len() == 8000));
    write(&log, 100, 100, 80);
    assert!(wait_until(|| out.lock().unwrap().len() == 16_000));
    // SIGTERM reaches the app and the reader together: the app's last lines, written during the drain period,
    // are still streamed.
    let last = thread::spawn({
        let log = log.clone();
        move || {
            thread::sleep(Duration::from_millis(300));
            write(&log, 200, 10, 80);
        }
    });
    let (status, events) = running.terminate();
    last.join().unwrap();
    assert!(status.success());
    assert_eq!(numbers(&out.lock().unwrap()), range(0, 210));
    let warnings = messages(&events, "warn");
    if root() {
        assert_eq!(warnings.len(), 1, "{events:?}");
        assert!(warnings[0].contains("cannot give back"), "{}", warnings[0]);
    }
}

#[test]
fn native_reader_drains_to_the_end_on_sigterm_and_exits_0() {
    let pod = Pod::new();
    let reader = pod.injected(SIDECAR_LOGS, ACCESS_LOG, &[], &config(SidecarMode::Native));
    assert!(
        !reader.args.contains(&"--drain-period".to_string()),
        "a native sidecar stops after the app"
    );
    let log = pod.log("access.log");
    let (running, out) = collected(&reader, &["--poll-interval-ms", "5000"]);
    assert!(wait_until(|| reader.probe_passes()));
    // Written just before SIGTERM, within one (long) poll interval: nothing has been read yet.
    write(&log, 0, 5000, 100);
    let (status, _) = running.terminate();
    assert!(status.success());
    assert_eq!(numbers(&out.lock().unwrap()), range(0, 5000));
}

/// Runs the injected streamer once to the end of `log` with the position file holding `position`.
fn with_position(position: &[u8]) -> (Vec<u64>, Vec<String>) {
    let pod = Pod::new();
    let reader = pod.injected(SIDECAR_LOGS, ACCESS_LOG, &[], &config(SidecarMode::Native));
    let log = pod.log("access.log");
    created_by_reader(&log, &reader);
    write(&log, 0, 300, 50);
    let saved = pod.state.join("sidecar-access.pos");
    fs::write(&saved, position).unwrap();
    let (mut running, out) = collected(&reader, &["--exit-at-eof"]);
    let (status, events) = running.wait();
    assert!(status.success());
    let got = numbers(&out.lock().unwrap());
    (got, messages(&events, "warn"))
}

#[test]
fn garbled_position_streams_the_file_from_its_start_after_one_warning() {
    let (got, warnings) = with_position(b"{\"version\":1,\"file\":\"/var/log/app/acc\x00");
    assert_eq!(got, range(0, 300));
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].contains("the saved position is unusable"),
        "{}",
        warnings[0]
    );
}

#[test]
fn position_past_the_end_streams_the_file_from_its_start_after_one_warning() {
    // The right file, but an offset far past its end.
    let pod = Pod::new();
    let reader = pod.injected(SIDECAR_LOGS, ACCESS_LOG, &[], &config(SidecarMode::Native));
    let log = pod.log("access.log");
    created_by_reader(&log, &reader);
    write(&log, 0, 1, 50);
    let meta = fs::metadata(&log).unwrap();
    let position = format!(
        "{{\"version\":1,\"file\":\"{}\",\"dev\":{},\"ino\":{},\"offset\":999999,\"before\":\"0a\"}}",
        log.display(),
        meta.dev(),
        meta.ino()
    );
    write(&log, 1, 299, 50);
    fs::write(pod.state.join("sidecar-access.pos"), position).unwrap();
    let (mut running, out) = collected(&reader, &["--exit-at-eof"]);
    let (status, events) = running.wait();
    assert!(status.success());
    assert_eq!(numbers(&out.lock().unwrap()), range(0, 300));
    let warnings = messages(&events, "warn");
    assert_eq!(warnings.len(), 1, "{events:?}");
    assert!(
        warnings[0].contains("shorter than the saved position"),
        "{}",
        warnings[0]
    );
    // And a position of another path is not used either.
    let (got, warnings) =
        with_position(b"{\"version\":1,\"file\":\"/elsewhere.log\",\"dev\":1,\"ino\":2,\"offset\":0,\"before\":\"\"}");
    assert_eq!((got, warnings.len()), (range(0, 300), 1));
}

#[test]
fn log_path_that_is_a_directory_or_a_fifo_is_one_clear_warning_and_no_panic() {
    for (kind, make) in [("a directory", "mkdir"), ("a FIFO", "mkfifo")] {
        let pod = Pod::new();
        let reader = pod.injected(SIDECAR_LOGS, ACCESS_LOG, &[], &config(SidecarMode::Native));
        let log = pod.log("access.log");
        assert!(Command::new(make).arg(&log).status().unwrap().success());
        let (running, out) = collected(&reader, &[]);
        assert!(wait_until(|| !running.events().is_empty() && reader.probe_passes()));
        thread::sleep(Duration::from_millis(300));
        let (status, events) = running.terminate();
        assert!(status.success(), "{kind}: {status}");
        assert!(out.lock().unwrap().is_empty());
        let warnings: Vec<_> = events.iter().filter(|e| e["level"] == "warn").collect();
        assert_eq!(warnings.len(), 1, "{kind}: said once, not at every poll: {events:?}");
        assert!(
            warnings.iter().any(|w| w["error"]
                .as_str()
                .unwrap_or_default()
                .contains(&format!("the path is {kind}"))),
            "{kind}: {events:?}"
        );
    }
}

#[test]
fn backlog_past_the_share_of_the_size_limit_warns_once_per_episode() {
    let pod = Pod::new();
    let mut config = config(SidecarMode::Native);
    config.sidecars.log_volume_size_limit = entourage::core::config::Quantity("4Mi".into());
    let reader = pod.injected(SIDECAR_LOGS, ACCESS_LOG, &[], &config);
    assert!(
        reader.args.windows(2).any(|w| w == ["--backlog-warn-bytes", "2097152"]),
        "{:?}",
        reader.args
    );
    let log = pod.log("access.log");
    // stdout is not read while `blocked`: the pipe fills and the reader waits in write().
    let blocked = Arc::new(AtomicBool::new(true));
    let received = Arc::new(Mutex::new(0usize));
    let running = {
        let (blocked, received) = (Arc::clone(&blocked), Arc::clone(&received));
        reader.start(&[], move |data| {
            while blocked.load(Ordering::Relaxed) {
                thread::sleep(Duration::from_millis(5));
            }
            *received.lock().unwrap() += data.len();
        })
    };
    assert!(wait_until(|| reader.probe_passes()));
    write(&log, 0, 40_000, 100);
    assert!(wait_until(|| !messages(&running.events(), "warn").is_empty()));
    thread::sleep(Duration::from_millis(300));
    blocked.store(false, Ordering::Relaxed);
    assert!(wait_until(|| *received.lock().unwrap() == 4_000_000));
    let (status, events) = running.terminate();
    assert!(status.success());
    let warnings: Vec<_> = events.iter().filter(|e| e["level"] == "warn").collect();
    assert_eq!(warnings.len(), 1, "{events:?}");
    assert!(warnings[0]["msg"].as_str().unwrap().contains("backlog"));
    assert_eq!(warnings[0]["limit_bytes"], "2097152");
}
