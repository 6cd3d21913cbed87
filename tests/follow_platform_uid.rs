//! `hardening.runAsUser: null` (OpenShift and other platforms that assign the uid): the injected readers set no
//! uid, so they run as the image's own numeric non-root user (the Dockerfile's `USER`), and still share the log
//! file with an app of another uid: the reader creates it `0666` before the app starts, the app appends to it, and
//! the reader streams every byte and gives the disk back. Real processes, real uids (as root, like CI).

mod support;

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::thread;
use std::time::{Duration, Instant};

use entourage::core::config::{Config, SidecarMode};
use support::readers::*;

/// Default config but no uid or gid: what an OpenShift install sets.
fn platform_uid_config() -> Config {
    let mut config = Config::default();
    config.sidecars.mode = SidecarMode::Native;
    config.hardening.run_as_user = None;
    config.hardening.run_as_group = None;
    config
}

#[test]
fn without_a_configured_uid_readers_run_as_the_images_user_and_share_the_file_with_an_app_of_another_uid() {
    let pod = Pod::new();
    let config = platform_uid_config();
    let reader = pod.injected("entourage.dev/sidecar-logs", "/var/log/app/access.log", &[], &config);
    let sc = &reader.spec["securityContext"];
    assert_eq!(sc["runAsNonRoot"], true, "{sc}");
    assert!(sc.get("runAsUser").is_none() && sc.get("runAsGroup").is_none(), "{sc}");
    let (image_uid, _) = image_user();
    assert_eq!(reader.uid, image_uid);
    assert_ne!(image_uid, APP_UID, "the test needs the app to run as another uid");

    let log = pod.log("access.log");
    let (count, len, rate) = (160_000u64, 200usize, 8e6);
    let total = count * len as u64;
    let (check, sink) = checked(len, Some(0));
    let running = reader.start(&[], sink);
    assert!(wait_until(|| reader.probe_passes()), "the startup probe never passed");
    let meta = fs::metadata(&log).expect("the reader created the log file before the app started");
    assert_eq!(
        meta.permissions().mode() & 0o777,
        0o666,
        "writable by an app of any uid"
    );
    if root() {
        assert_eq!(meta.uid(), image_uid, "created by the reader, as the image's user");
    }

    let mut app = writer(&log, 0, count, len, rate, 64);
    let started = Instant::now();
    let span = Duration::from_secs_f64(total as f64 / rate);
    let mut max_allocated = 0;
    loop {
        max_allocated = max_allocated.max(allocated(&log));
        if app.try_wait().unwrap().is_some() && check.lock().unwrap().end >= total {
            break;
        }
        assert!(started.elapsed() < span + DEADLINE, "the streamer fell behind");
        thread::sleep(Duration::from_millis(10));
    }
    assert!(app.wait().unwrap().success(), "the app (uid {APP_UID}) could append");
    let (status, events) = running.terminate();
    assert!(status.success(), "exit status after SIGTERM: {status}");
    assert_eq!(
        messages(&events, "warn"),
        Vec::<String>::new(),
        "no warnings: {events:?}"
    );
    let check = check.lock().unwrap();
    assert_eq!(
        (check.error.clone(), check.end),
        (None, total),
        "every byte once, in order"
    );
    assert!(
        max_allocated <= 16 << 20,
        "the reader gave back what it streamed: the file held {} MiB of {} MiB on disk",
        max_allocated >> 20,
        total >> 20
    );
    if root() {
        assert_eq!(
            fs::metadata(&log).unwrap().uid(),
            image_uid,
            "the file is still the reader's"
        );
    }
}

#[test]
fn without_a_configured_uid_the_adapter_reads_what_an_app_of_another_uid_wrote() {
    let pod = Pod::new();
    let reader = pod.injected(
        "entourage.dev/adapter-logs",
        "/var/log/app/access.log",
        &[("entourage.dev/adapter-format", "plain")],
        &platform_uid_config(),
    );
    assert_eq!(reader.args[0], "adapt");
    assert_eq!(reader.uid, image_user().0);
    let log = pod.log("access.log");
    // As a native adapter prepares it before the app starts: its own (the image's uid), mode 0666.
    created_by_reader(&log, &reader);
    write(&log, 0, 500, 80);
    let out = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = std::sync::Arc::clone(&out);
    let mut running = reader.start(&["--exit-at-eof"], move |d| sink.lock().unwrap().extend_from_slice(d));
    let (status, events) = running.wait();
    assert!(status.success(), "{events:?}");
    let out = out.lock().unwrap();
    let lines: Vec<serde_json::Value> = std::str::from_utf8(&out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 500);
    assert_eq!(&lines[499]["message"].as_str().unwrap()[..10], "0000000499");
    // No warning: it could also punch out what it read (a file it could not write to says "cannot give back").
    assert_eq!(
        messages(&events, "warn"),
        Vec::<String>::new(),
        "no warnings: {events:?}"
    );
}
