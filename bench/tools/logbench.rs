//! `make bench-logs` helper (scripts/bench-logs.sh): runs one log reader and measures it, and draws the chart.
//!
//! `logbench run --name N --lines L [--file F] [--feed CORPUS --rate MIBPS] -- CMD…` runs `CMD` under
//! `/usr/bin/time`, reads its stdout until `L` newlines arrived (a follower such as `tail -F` never exits by
//! itself: it is then sent SIGTERM), samples the allocated size of `F` (`st_blocks` × 512, what the kubelet counts)
//! every 5 ms, and, with `--feed`, appends CORPUS to `F` in 1 MiB writes with `O_APPEND` at RATE MiB/s while the
//! reader runs (the app). Prints one JSON object.
//!
//! `logbench chart RESULTS.json OUT.svg` draws throughput and allocated size per reader.

use std::fs::{self, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use plotters::prelude::*;
use serde_json::{json, Value};

fn allocated(path: &Path) -> u64 {
    fs::metadata(path).map(|m| m.blocks() * 512).unwrap_or(0)
}

/// The pid of the only child of `pid` (the command `/usr/bin/time` runs).
fn child_of(pid: u32) -> Option<u32> {
    let text = fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).ok()?;
    text.split_whitespace().next()?.parse().ok()
}

fn run(args: &[String]) -> Value {
    let mut name = String::new();
    let mut lines = 0u64;
    let mut file: Option<PathBuf> = None;
    let mut feed: Option<PathBuf> = None;
    let mut rate = 0f64;
    let mut i = 0;
    while i < args.len() && args[i] != "--" {
        let value = args.get(i + 1).cloned().unwrap_or_default();
        match args[i].as_str() {
            "--name" => name = value,
            "--lines" => lines = value.parse().expect("--lines"),
            "--file" => file = Some(value.into()),
            "--feed" => feed = Some(value.into()),
            "--rate" => rate = value.parse().expect("--rate"),
            other => panic!("unknown flag {other}"),
        }
        i += 2;
    }
    let command = &args[i + 1..];
    let times = std::env::temp_dir().join(format!("logbench-{}.time", std::process::id()));
    let done = Arc::new(AtomicBool::new(false));
    let max_alloc = Arc::new(AtomicU64::new(0));
    let sampler = file.clone().map(|f| {
        let (done, max_alloc) = (Arc::clone(&done), Arc::clone(&max_alloc));
        thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                max_alloc.fetch_max(allocated(&f), Ordering::Relaxed);
                thread::sleep(Duration::from_millis(5));
            }
        })
    });
    let start = Instant::now();
    let mut child = Command::new("/usr/bin/time")
        .args(["-f", "%U %S %M", "-o"])
        .arg(&times)
        .args(command)
        .stdout(Stdio::piped())
        .spawn()
        .expect("run /usr/bin/time");
    let feeder = feed.map(|corpus| {
        let target = file.clone().expect("--feed needs --file");
        thread::spawn(move || {
            let mut source = fs::File::open(corpus).unwrap();
            let mut out = OpenOptions::new().append(true).open(target).unwrap();
            let mut buf = vec![0; 1 << 20];
            let started = Instant::now();
            let mut written = 0u64;
            loop {
                let n = source.read(&mut buf).unwrap();
                if n == 0 {
                    break;
                }
                out.write_all(&buf[..n]).unwrap();
                written += n as u64;
                let due = Duration::from_secs_f64(written as f64 / (rate * 1048576.0));
                if let Some(ahead) = due.checked_sub(started.elapsed()) {
                    thread::sleep(ahead);
                }
            }
        })
    });
    let mut stdout = child.stdout.take().unwrap();
    let mut buf = vec![0; 1 << 20];
    let (mut seen, mut bytes) = (0u64, 0u64);
    while seen < lines {
        let n = stdout.read(&mut buf).expect("read the reader's stdout");
        if n == 0 {
            break;
        }
        bytes += n as u64;
        seen += memchr::memchr_iter(b'\n', &buf[..n]).count() as u64;
    }
    let wall = start.elapsed().as_secs_f64();
    if let Some(inner) = child_of(child.id()) {
        let _ = Command::new("kill").args(["-TERM", &inner.to_string()]).status();
    }
    // Whatever the reader prints while it drains is not timed.
    let _ = std::io::copy(&mut stdout, &mut std::io::sink());
    child.wait().unwrap();
    done.store(true, Ordering::Relaxed);
    if let Some(s) = sampler {
        s.join().unwrap();
    }
    if let Some(f) = feeder {
        f.join().unwrap();
    }
    let measured = fs::read_to_string(&times).unwrap_or_default();
    let _ = fs::remove_file(&times);
    let last = measured.lines().last().unwrap_or_default().to_string();
    let fields: Vec<f64> = last.split_whitespace().filter_map(|f| f.parse().ok()).collect();
    let (user, sys, rss) = match fields[..] {
        [u, s, r] => (u, s, r),
        _ => panic!("unexpected /usr/bin/time output: {measured:?}"),
    };
    json!({
        "name": name, "lines": seen, "bytes_out": bytes, "complete": seen >= lines,
        "wall_s": wall, "cpu_s": user + sys, "max_rss_kib": rss as u64,
        "max_allocated_bytes": max_alloc.load(Ordering::Relaxed),
        "lines_per_s": seen as f64 / wall, "lines_per_cpu_s": seen as f64 / (user + sys).max(0.01),
    })
}

fn chart(results: &Path, out: &Path) -> Result<(), Box<dyn std::error::Error>> {
    let report: Value = serde_json::from_slice(&fs::read(results)?)?;
    let rows: Vec<&Value> = report["results"]
        .as_array()
        .map(|a| a.iter().collect())
        .unwrap_or_default();
    let root = SVGBackend::new(out, (960, 80 + 34 * rows.len() as u32)).into_drawing_area();
    root.fill(&WHITE)?;
    let (left, right) = root.split_horizontally(620);
    let mi_b = |r: &Value| r["bytes_per_s"].as_f64().unwrap_or(0.0) / 1048576.0;
    let max_rate = rows.iter().map(|r| mi_b(r)).fold(1.0, f64::max) * 1.1;
    let max_alloc = rows
        .iter()
        .map(|r| r["max_allocated_bytes"].as_f64().unwrap_or(0.0) / 1048576.0)
        .fold(16.0, f64::max)
        * 1.1;
    let n = rows.len() as i32;
    let mut a = ChartBuilder::on(&left)
        .caption("throughput, MiB/s of log read (one core)", ("sans-serif", 16))
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(260)
        .build_cartesian_2d(0f64..max_rate, (0..n).into_segmented())?;
    a.configure_mesh()
        .y_labels(rows.len())
        .y_label_formatter(&|v| match v {
            SegmentValue::CenterOf(i) => rows
                .get(*i as usize)
                .and_then(|r| r["name"].as_str())
                .unwrap_or("")
                .to_string(),
            _ => String::new(),
        })
        .disable_y_mesh()
        .draw()?;
    a.draw_series(rows.iter().enumerate().map(|(i, r)| {
        let colour = if r["name"].as_str().unwrap_or("").starts_with("entourage") {
            RGBColor(214, 39, 40)
        } else {
            RGBColor(120, 120, 120)
        };
        Rectangle::new(
            [
                (0.0, SegmentValue::Exact(i as i32)),
                (mi_b(r), SegmentValue::Exact(i as i32 + 1)),
            ],
            colour.mix(0.8).filled(),
        )
    }))?;
    let mut b = ChartBuilder::on(&right)
        .caption("max allocated size of the file, MiB", ("sans-serif", 16))
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(10)
        .build_cartesian_2d((0.1f64..max_alloc.max(1.0)).log_scale(), (0..n).into_segmented())?;
    b.configure_mesh()
        .disable_y_mesh()
        .y_labels(rows.len())
        .y_label_formatter(&|_| String::new())
        .x_desc("MiB (log scale)")
        .draw()?;
    b.draw_series(rows.iter().enumerate().filter_map(|(i, r)| {
        let alloc = r["max_allocated_bytes"].as_f64()? / 1048576.0;
        (alloc > 0.0).then(|| {
            Rectangle::new(
                [
                    (0.1, SegmentValue::Exact(i as i32)),
                    (alloc.max(0.1), SegmentValue::Exact(i as i32 + 1)),
                ],
                RGBColor(31, 119, 180).mix(0.8).filled(),
            )
        })
    }))?;
    root.present()?;
    Ok(())
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("run") => println!("{}", run(&args[1..])),
        Some("chart") => chart(Path::new(&args[1]), Path::new(&args[2])).expect("draw the chart"),
        _ => panic!("usage: logbench run … -- CMD… | logbench chart RESULTS.json OUT.svg"),
    }
}
