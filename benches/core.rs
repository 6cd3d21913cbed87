//! The synchronous path of one review, in process: decode + mutate + encode, for Pods of ~5 KB, ~100 KB and
//! ~1 MB (the 5 KB bench fixture grown with many containers carrying large env lists).
//!
//! Writes the grown reviews to `target/bench/fixtures/` (for the HTTP scaling run of `scripts/bench.sh`) and the
//! timings to `target/bench/core.json`: the thread's CPU time per review (median and best of 15 batches), and
//! the wall time. Timings only: nothing here asserts a duration.
//!
//! `cargo bench --bench core`
//!
//! For a profiler: `CORE_PROFILE=FIXTURE [CORE_PROFILE_REPEAT=N]` runs the path N times (1000) over one review
//! body and times nothing, e.g. `valgrind --tool=callgrind target/release/deps/core-* --bench` with
//! `CORE_PROFILE=bench/fixtures/pod-5k.json`.

use std::{
    fs,
    hint::black_box,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use entourage::{
    admission::{self as review},
    core::config::Config,
    core::mutate::{self, Verdict},
};
use serde_json::{json, Value};

/// The sizes measured: a label and the least size of the serialised review.
const SIZES: &[(&str, usize)] = &[("5k", 0), ("100k", 100 * 1024), ("1m", 1024 * 1024)];

/// Each size is timed in this many batches; the median batch is reported.
const BATCHES: usize = 15;

/// A batch runs for about this long.
const BATCH_TIME: Duration = Duration::from_millis(100);

fn out_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| PathBuf::from("target"), PathBuf::from);
    target.join("bench")
}

/// An extra app container: no ports (the ambassador's port stays free), a long env list, a mount.
fn worker(i: usize) -> Value {
    let env: Vec<Value> = (0..40)
        .map(|e| json!({"name": format!("WORKER_{i}_SETTING_{e:02}"), "value": format!("worker-{i}-value-{e:02}-production-setting")}))
        .collect();
    json!({
        "name": format!("worker-{i}"),
        "image": "registry.example.com/shop/worker:2.14.1",
        "imagePullPolicy": "IfNotPresent",
        "args": ["--queue", format!("orders-{i}"), "--concurrency", "4"],
        "env": env,
        "resources": {"limits": {"cpu": "250m", "memory": "128Mi"}, "requests": {"cpu": "50m", "memory": "64Mi"}},
        "volumeMounts": [{"name": "kube-api-access-7x2kq", "readOnly": true, "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount"}],
        "terminationMessagePath": "/dev/termination-log",
        "terminationMessagePolicy": "File"
    })
}

/// The 5 KB review grown with workers until it is at least `least` bytes. Only the object's text is replaced:
/// the rest of the fixture stays byte for byte as the apiserver writes it (`kind` and `operation` before
/// `object`, which lets the decoder parse the object in the same pass).
fn grown(base: &str, least: usize) -> Vec<u8> {
    #[derive(serde::Deserialize)]
    struct Envelope<'a> {
        #[serde(borrow)]
        request: Request<'a>,
    }
    #[derive(serde::Deserialize)]
    struct Request<'a> {
        #[serde(borrow)]
        object: &'a serde_json::value::RawValue,
    }
    let envelope: Envelope = serde_json::from_str(base).expect("the fixture is a review");
    let text = envelope.request.object.get();
    let start = text.as_ptr() as usize - base.as_ptr() as usize;
    let (before, after) = (&base[..start], &base[start + text.len()..]);
    let mut object: Value = serde_json::from_str(text).expect("the fixture's object");
    let mut i = 0;
    loop {
        let body = [before, &object.to_string(), after].concat().into_bytes();
        if body.len() >= least {
            return body;
        }
        // Add workers in steps (each is ~3.6 KB), so that a 1 MB Pod does not take quadratic time to build.
        let step = ((least - body.len()) / 7200).max(1);
        let containers = object
            .pointer_mut("/spec/containers")
            .and_then(Value::as_array_mut)
            .expect("the fixture has containers");
        for _ in 0..step {
            containers.push(worker(i));
            i += 1;
        }
    }
}

/// decode + mutate + encode, as the server's handler does; the encoded answer's length.
fn review(body: &[u8], config: &Config) -> usize {
    let review = review::decode(body, config).expect("the fixture is a review");
    let mut outcome = mutate::mutate(&review.request, config);
    let (_, answer) = review::answer(&review, &mut outcome);
    answer.to_vec().len()
}

/// CPU time this thread has run, in nanoseconds (the scheduler's own count): unlike the wall clock, it does not
/// grow while other processes on a shared machine have the core.
fn thread_cpu_ns() -> Option<u64> {
    let text = fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    text.split_whitespace().next()?.parse().ok()
}

/// Per review, in µs: (median batch CPU time, best batch CPU time, median batch wall time).
/// Decoding the whole review through a `Value` (body → `Value` → envelope → request), as entourage once did,
/// kept to show side by side what the decode costs now that it parses of the object, in the same pass, only what
/// the core reads; the uid's length stands for the result.
fn decode_through_value(body: &[u8], _: &Config) -> usize {
    #[derive(serde::Deserialize)]
    struct Envelope {
        request: Value,
    }
    let value: Value = serde_json::from_slice(body).expect("JSON");
    let envelope: Envelope = serde_json::from_value(value).expect("an envelope");
    let request: review::AdmissionRequest = serde_json::from_value(envelope.request).expect("a request");
    request.uid.len()
}

/// Today's decode alone: the envelope, and of the object what the core reads.
fn decode_only(body: &[u8], config: &Config) -> usize {
    review::decode(body, config).expect("a review").request.uid.len()
}

fn measure(body: &[u8], config: &Config) -> (f64, f64, f64) {
    measure_fn(review, body, config)
}

fn measure_fn(f: fn(&[u8], &Config) -> usize, body: &[u8], config: &Config) -> (f64, f64, f64) {
    let review = f;
    // Calibrate: how many iterations fill one batch.
    let started = Instant::now();
    let mut per_batch = 0usize;
    while started.elapsed() < BATCH_TIME {
        black_box(review(black_box(body), config));
        per_batch += 1;
    }
    let (mut cpu, mut wall): (Vec<f64>, Vec<f64>) = (0..BATCHES)
        .map(|_| {
            let (started, cpu_started) = (Instant::now(), thread_cpu_ns());
            for _ in 0..per_batch {
                black_box(review(black_box(body), config));
            }
            let wall = started.elapsed().as_secs_f64() * 1e6 / per_batch as f64;
            let cpu = match (cpu_started, thread_cpu_ns()) {
                (Some(a), Some(b)) => (b - a) as f64 / 1e3 / per_batch as f64,
                _ => wall,
            };
            (cpu, wall)
        })
        .unzip();
    cpu.sort_by(f64::total_cmp);
    wall.sort_by(f64::total_cmp);
    (cpu[BATCHES / 2], cpu[0], wall[BATCHES / 2])
}

fn main() {
    if let Some(path) = std::env::var_os("CORE_PROFILE") {
        let body = fs::read(&path).expect("CORE_PROFILE names a review");
        let repeat: usize = std::env::var("CORE_PROFILE_REPEAT")
            .ok()
            .and_then(|n| n.parse().ok())
            .unwrap_or(1000);
        let config = Config::default().into_shared(); // as the webhook holds it
        for _ in 0..repeat {
            black_box(review(black_box(&body), &config));
        }
        return;
    }
    // `cargo bench` passes `--bench`; a filter argument, if any, selects sizes by label.
    let timed = std::env::args().any(|a| a == "--bench");
    let filter: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("bench/fixtures/pod-5k.json");
    let base = fs::read_to_string(&fixture).expect("bench/fixtures/pod-5k.json");
    let config = Config::default().into_shared();
    if !timed {
        // `cargo test --all-targets` runs this without `--bench`: check that every size is a review entourage
        // patches, once each, and time nothing.
        for &(label, least) in SIZES {
            let body = grown(&base, least);
            let review = review::decode(&body, &config).expect("a review");
            let outcome = mutate::mutate(&review.request, &config);
            assert!(!outcome.patch.0.is_empty(), "the {label} Pod must be patched");
        }
        println!("bench fixtures ok (run `cargo bench --bench core` to time them)");
        return;
    }
    let dir = out_dir();
    fs::create_dir_all(dir.join("fixtures")).expect("target/bench/fixtures");
    let mut results = Vec::new();
    let mut decodes = Vec::new();
    println!("| Pod | bytes | containers | CPU µs (median) | CPU µs (best) | wall µs (median) | µs/KB |");
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for &(label, least) in SIZES {
        if !filter.is_empty() && !filter.iter().any(|f| f == label) {
            continue;
        }
        let body = grown(&base, least);
        fs::write(dir.join(format!("fixtures/pod-{label}.json")), &body).expect("write fixture");
        let decoded = review::decode(&body, &config).expect("a review");
        let outcome = mutate::mutate(&decoded.request, &config);
        assert!(
            outcome.verdict == Verdict::Allow && !outcome.patch.0.is_empty(),
            "the {label} Pod must be patched, got {:?} ({:?})",
            outcome.verdict,
            outcome.reason
        );
        let containers = decoded
            .request
            .object
            .as_ref()
            .and_then(|o| o.pointer("/spec/containers"));
        let containers = containers.and_then(Value::as_array).map_or(0, Vec::len);
        let (median, best, wall) = measure(&body, &config);
        let kb = body.len() as f64 / 1024.0;
        println!(
            "| {label} | {} | {containers} | {median:.1} | {best:.1} | {wall:.1} | {:.2} |",
            body.len(),
            median / kb
        );
        let (one_pass, _, _) = measure_fn(decode_only, &body, &config);
        let (through_value, _, _) = measure_fn(decode_through_value, &body, &config);
        decodes.push(format!(
            "| {label} | {one_pass:.1} | {through_value:.1} | {:.2} |",
            through_value / one_pass
        ));
        results.push(json!({
            "decode_us": one_pass, "decode_through_value_us": through_value,
            "label": label, "bytes": body.len(), "containers": containers, "patch_ops": outcome.patch.0.len(),
            "us_median": median, "us_best": best, "us_wall_median": wall, "us_per_kb": median / kb,
        }));
    }
    println!("\n| Pod | decode µs (object as the core reads it) | whole review through a Value µs | ratio |");
    println!("|---|---:|---:|---:|");
    for line in decodes {
        println!("{line}");
    }
    let path = dir.join("core.json");
    fs::write(&path, serde_json::to_vec_pretty(&results).expect("JSON")).expect("write core.json");
    println!("wrote {}", path.display());
}
