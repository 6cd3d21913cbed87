//! Classic Pods: on deletion every container gets SIGTERM at the same moment, and the app, shutting down, still
//! calls through its ambassador. The webhook hands classic ambassadors `--drain-period`; these tests run the real
//! process with exactly the arguments the webhook injects, as the injected non-root user, and send it SIGTERM.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use entourage::core::{config::Config, mutate};
use serde_json::json;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// An upstream that answers every request with `200 upstream` and closes the connection.
fn spawn_upstream() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            thread::spawn(move || {
                let mut stream = stream;
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") && stream.read(&mut byte).is_ok_and(|n| n == 1) {
                    head.push(byte[0]);
                }
                let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\nConnection: close\r\n\r\nupstream");
            });
        }
    });
    port
}

/// The argv of the ambassador the webhook injects into a classic Pod (`kubernetesVersion: "1.28"`) whose
/// upstream is `upstream`, with the ambassador's ports at `port` and `admin`; and the injected `runAsUser`.
fn injected_ambassador(upstream: &str, port: u16, admin: u16, drain: &str) -> (Vec<String>, u32) {
    let yaml = format!(
        "kubernetesVersion: \"1.28\"\nsidecars:\n  drainPeriod: {drain}\nambassador:\n  port: {port}\n  adminPort: {admin}\n"
    );
    let config = Config::from_yaml(&yaml, "test").unwrap();
    let pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "app", "annotations": {"entourage.dev/ambassador-upstream": upstream}},
        "spec": {"containers": [{"name": "app", "image": "app"}]}
    });
    let outcome = mutate::pod::mutate_pod(&pod, &config);
    let patch = serde_json::to_value(&outcome.patch).unwrap();
    let added = patch
        .as_array()
        .unwrap()
        .iter()
        .find(|op| op["path"] == "/spec/containers/-" && op["value"]["name"] == "ambassador")
        .unwrap_or_else(|| panic!("no classic ambassador in {patch}"));
    let container = &added["value"];
    let argv = container["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_string())
        .collect();
    let uid = container["securityContext"]["runAsUser"].as_u64().unwrap();
    (argv, u32::try_from(uid).unwrap())
}

/// Starts the entourage binary with `argv`, as `uid` when the tests run as root (CI does).
fn start(argv: &[String], uid: u32) -> Child {
    let mut command = Command::new(env!("CARGO_BIN_EXE_entourage"));
    command
        .args(argv)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // /proc/self belongs to the process's effective user.
    if std::fs::metadata("/proc/self").unwrap().uid() == 0 {
        command.uid(uid).gid(uid);
    }
    command.spawn().expect("start the entourage binary")
}

/// One `GET /` through the ambassador on a new connection: the status code, or the connection error.
fn get(port: u16) -> Result<u16, std::io::Error> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.write_all(b"GET / HTTP/1.1\r\nHost: app\r\nConnection: close\r\n\r\n")?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer)?;
    let code = answer.split(' ').nth(1).and_then(|c| c.parse().ok());
    code.ok_or_else(|| std::io::Error::other(format!("not an HTTP answer: {answer:?}")))
}

fn wait_until(what: &str, deadline: Duration, mut ready: impl FnMut() -> bool) {
    let start = Instant::now();
    while !ready() {
        assert!(start.elapsed() < deadline, "{what} within {deadline:?}");
        thread::sleep(Duration::from_millis(20));
    }
}

fn sigterm(child: &Child) {
    let sent = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
}

#[test]
fn classic_ambassador_keeps_answering_the_app_for_the_drain_period_after_sigterm_then_exits_zero() {
    let upstream = spawn_upstream();
    let (port, admin) = (free_port(), free_port());
    let (argv, uid) = injected_ambassador(&format!("http://127.0.0.1:{upstream}"), port, admin, "2s");
    assert!(argv.windows(2).any(|w| w == ["--drain-period", "2s"]), "{argv:?}");
    let mut child = start(&argv, uid);
    wait_until("the ambassador answers", Duration::from_secs(20), || get(port).is_ok());

    sigterm(&child);
    let terminated = Instant::now();
    // The app is shutting down too, and still calls out: new connections are served during the drain period.
    thread::sleep(Duration::from_millis(300));
    assert_eq!(get(port).unwrap(), 200, "a request 0.3 s after SIGTERM");
    thread::sleep(Duration::from_millis(1000));
    assert_eq!(get(port).unwrap(), 200, "a request 1.3 s after SIGTERM");
    assert!(
        child.try_wait().unwrap().is_none(),
        "still running inside the drain period"
    );

    let mut status = None;
    wait_until(
        "the ambassador exits after its drain period",
        Duration::from_secs(20),
        || {
            status = child.try_wait().unwrap();
            status.is_some()
        },
    );
    assert!(
        terminated.elapsed() >= Duration::from_secs(2),
        "{:?}",
        terminated.elapsed()
    );
    assert!(status.unwrap().success(), "{status:?}");
    assert!(get(port).is_err(), "nothing listens once it has exited");
}

#[test]
fn native_ambassador_stops_accepting_at_sigterm() {
    // Native sidecars are stopped after the app, so they are given no drain period: same flags but that one.
    let upstream = spawn_upstream();
    let (port, admin) = (free_port(), free_port());
    let (argv, uid) = injected_ambassador(&format!("http://127.0.0.1:{upstream}"), port, admin, "2s");
    let at = argv.iter().position(|a| a == "--drain-period").unwrap();
    let native: Vec<String> = argv[..at].iter().chain(&argv[at + 2..]).cloned().collect();
    let mut child = start(&native, uid);
    wait_until("the ambassador answers", Duration::from_secs(20), || get(port).is_ok());
    sigterm(&child);
    let mut status = None;
    wait_until("the ambassador exits", Duration::from_secs(5), || {
        status = child.try_wait().unwrap();
        status.is_some()
    });
    assert!(status.unwrap().success());
    let refused: Result<u16, _> = get(port);
    assert!(refused.is_err(), "{refused:?}");
}
