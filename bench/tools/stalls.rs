//! How often the machine itself stops this CPU: a busy loop reads the monotonic clock as fast as it can and
//! records every gap between two reads longer than `--threshold-us`. On an idle, dedicated core the gaps are a
//! few microseconds (timer interrupts); on a shared VM the hypervisor deschedules the vCPU for milliseconds at a
//! time, and every request in flight then waits that long. The bench scripts run one probe per core before they
//! measure, so that tail latencies can be read against what the machine does on its own.
//!
//! `taskset -c 0 cargo run --release --example stalls -- --seconds 5 --label cpu0` prints one JSON line.

use std::time::{Duration, Instant};

fn main() {
    let mut seconds = 5.0_f64;
    let mut threshold_us = 500_u64;
    let mut label = String::from("cpu");
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--seconds" => seconds = value.parse().expect("--seconds takes a number"),
            "--threshold-us" => threshold_us = value.parse().expect("--threshold-us takes an integer"),
            "--label" => label = value,
            other => panic!("unknown flag {other}; use --seconds, --threshold-us, --label"),
        }
    }
    let threshold = Duration::from_micros(threshold_us);
    let start = Instant::now();
    let end = start + Duration::from_secs_f64(seconds);
    let mut gaps: Vec<Duration> = Vec::new();
    let mut last = start;
    loop {
        let now = Instant::now();
        let gap = now - last;
        if gap > threshold {
            gaps.push(gap);
        }
        last = now;
        if now >= end {
            break;
        }
    }
    let elapsed = (last - start).as_secs_f64();
    let ms = |d: &Duration| d.as_secs_f64() * 1e3;
    let stalled: f64 = gaps.iter().map(ms).sum();
    let over = |limit_ms: f64| gaps.iter().filter(|g| ms(g) > limit_ms).count();
    let max = gaps.iter().map(ms).fold(0.0, f64::max);
    println!(
        "{{\"label\":\"{label}\",\"seconds\":{elapsed:.3},\"threshold_us\":{threshold_us},\"gaps\":{},\
         \"gaps_over_1ms\":{},\"gaps_over_2ms\":{},\"max_ms\":{max:.3},\"stalled_ms\":{stalled:.3},\
         \"stalled_fraction\":{:.5}}}",
        gaps.len(),
        over(1.0),
        over(2.0),
        stalled / (elapsed * 1e3),
    );
}
