//! Scan one OTLP trace request file repeatedly and print spans/s (for profiling).
//!     cargo run --release --example scan_file -- FILE [SECONDS]
use std::time::Instant;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let body = std::fs::read(&args[1]).expect("read the request file");
    let seconds: f64 = args.get(2).map_or(3.0, |s| s.parse().unwrap());
    let opts = otlp_scan::Options::default();
    let t0 = Instant::now();
    let (mut spans, mut n) = (0u64, 0u64);
    while t0.elapsed().as_secs_f64() < seconds {
        let out = otlp_scan::normalise_traces(&body, &opts).expect("a valid request");
        spans += out.received;
        n += 1;
    }
    let el = t0.elapsed().as_secs_f64();
    println!("{n} requests, {:.0} spans/s", spans as f64 / el);
}
