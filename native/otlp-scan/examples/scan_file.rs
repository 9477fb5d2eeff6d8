//! Scan one OTLP trace request file repeatedly and print spans per second of wall time and
//! per second of this thread's CPU time (Linux schedstat: steady on a shared machine).
//!     cargo run --release --example scan_file -- FILE [SECONDS]
use std::time::Instant;

fn cpu_ns() -> f64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse().ok()))
        .unwrap_or(f64::NAN)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let body = std::fs::read(&args[1]).expect("read the request file");
    let seconds: f64 = args.get(2).map_or(3.0, |s| s.parse().unwrap());
    let opts = otlp_scan::Options::default();
    let (t0, c0) = (Instant::now(), cpu_ns());
    let (mut spans, mut n) = (0u64, 0u64);
    while t0.elapsed().as_secs_f64() < seconds {
        let out = otlp_scan::normalise_traces(&body, &opts).expect("a valid request");
        spans += out.received;
        n += 1;
    }
    let el = t0.elapsed().as_secs_f64();
    let cpu = (cpu_ns() - c0) / 1e9;
    println!(
        "{n} requests, {:.0} spans/s wall, {:.0} spans per CPU second",
        spans as f64 / el,
        spans as f64 / cpu
    );
}
