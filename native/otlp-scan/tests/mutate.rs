//! A bounded mutation fuzz of the scanner (no extra crates, runs under `cargo test`): the
//! recorded producer requests, mutated at random, must never panic or loop, and whatever
//! they decode to must hold together (rows within tables, rejections within received).
//! Equality with the Python oracle is the Python side's test (tests/test_native_normalise.py).
//!
//! MLVIGIL_FUZZ_ITERATIONS sets the number of mutated inputs (default 20,000).

use std::path::PathBuf;

use otlp_scan::{normalise_logs, normalise_metrics, normalise_traces, Error, Normalised, Options};

struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
}

fn fixtures(signal: &str) -> Vec<Vec<u8>> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/otlp")
        .join(signal);
    let mut out: Vec<Vec<u8>> = std::fs::read_dir(&dir)
        .expect("tests/fixtures/otlp/SIGNAL")
        .map(|e| std::fs::read(e.unwrap().path()).unwrap())
        .collect();
    out.sort();
    assert!(out.len() >= 3, "recorded requests in {dir:?}");
    out
}

fn scan(signal: &str, body: &[u8], opts: &Options) -> Result<Normalised, Error> {
    match signal {
        "traces" => normalise_traces(body, opts),
        "metrics" => normalise_metrics(body, opts.max_items),
        _ => normalise_logs(body, opts.max_items),
    }
}

fn mutate(rng: &mut XorShift, seed: &[u8]) -> Vec<u8> {
    let mut d = seed.to_vec();
    for _ in 0..1 + rng.below(4) {
        let i = rng.below(d.len() + 1);
        match rng.below(5) {
            0 if i < d.len() => d[i] = rng.next() as u8,
            1 => {
                let n = (1 + rng.below(8)).min(d.len() - i.min(d.len()));
                d.drain(i..i + n);
            }
            2 => {
                for _ in 0..1 + rng.below(6) {
                    d.insert(i.min(d.len()), rng.next() as u8);
                }
            }
            3 => {
                let j = rng.below(d.len() + 1);
                let (a, b) = (i.min(j), i.max(j));
                let chunk: Vec<u8> = d[a..b.min(a + 64)].to_vec();
                let at = i.min(d.len());
                d.splice(at..at, chunk);
            }
            _ => {
                // A length prefix or varint byte pushed to an extreme.
                if i < d.len() {
                    d[i] = [0x00, 0x7f, 0x80, 0xff][rng.below(4)];
                }
            }
        }
    }
    d
}

#[test]
fn mutated_requests_never_panic_and_stay_consistent() {
    let seeds: Vec<(&str, Vec<u8>)> = ["traces", "metrics", "logs"]
        .iter()
        .flat_map(|s| fixtures(s).into_iter().map(move |b| (*s, b)))
        .collect();
    let iterations: usize = std::env::var("MLVIGIL_FUZZ_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    let opts = [
        Options::default(),
        Options {
            keep_llm_content: true,
            keep_raw_spans: false,
            max_content_chars: 5,
            ..Options::default()
        },
    ];
    let (mut ok, mut invalid, mut unsupported) = (0, 0, 0);
    for n in 0..iterations {
        let (signal, seed) = &seeds[rng.below(seeds.len())];
        let body = mutate(&mut rng, seed);
        match scan(signal, &body, &opts[n % 2]) {
            Ok(out) => {
                ok += 1;
                assert!(out.rejected <= out.received);
                assert_eq!(out.rejected, out.reasons.values().sum::<u64>());
                for (name, batch) in &out.tables {
                    assert!(batch.num_rows() as u64 <= out.received, "{name}");
                }
            }
            Err(Error::Invalid(_)) => invalid += 1,
            Err(Error::Unsupported(_)) => unsupported += 1,
            Err(Error::TooLarge(_)) => unreachable!("the fixtures are far below the item limit"),
        }
    }
    eprintln!("{iterations} mutated requests: {ok} mapped, {invalid} invalid, {unsupported} unsupported");
    assert!(ok > 0 && invalid > 0);
}

#[test]
fn random_bytes_never_panic() {
    let mut rng = XorShift(42);
    for _ in 0..20_000 {
        let n = rng.below(64);
        let body: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
        for signal in ["traces", "metrics", "logs"] {
            let _ = scan(signal, &body, &Options::default());
        }
    }
}

#[test]
fn deep_nesting_is_refused_without_stack_overflow() {
    // 10,000 nested AnyValue arrays inside one attribute: refused at depth 100.
    let mut av: Vec<u8> = Vec::new();
    for _ in 0..10_000 {
        let mut arr = vec![0x0a];
        push_len(&mut arr, &av);
        let mut next = vec![0x2a];
        push_len(&mut next, &arr);
        av = next;
    }
    let mut kv = vec![0x12];
    push_len(&mut kv, &av);
    let mut span = vec![0x4a];
    push_len(&mut span, &kv);
    let mut ss = vec![0x12];
    push_len(&mut ss, &span);
    let mut rs = vec![0x12];
    push_len(&mut rs, &ss);
    let mut req = vec![0x0a];
    push_len(&mut req, &rs);
    assert!(matches!(
        normalise_traces(&req, &Options::default()),
        Err(Error::Invalid(_))
    ));
}

fn push_len(out: &mut Vec<u8>, body: &[u8]) {
    let mut n = body.len();
    while n >= 0x80 {
        out.push((n as u8 & 0x7f) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
    out.extend_from_slice(body);
}

#[test]
fn the_item_limit_counts_as_count_items_does() {
    // Each fixture request of a signal, with the limit one below and at its item count.
    for signal in ["traces", "metrics", "logs"] {
        for body in fixtures(signal) {
            let mut lo = 0usize;
            let mut hi = 1_000_000usize;
            while lo < hi {
                let mid = (lo + hi) / 2;
                let opts = Options {
                    max_items: mid,
                    ..Options::default()
                };
                match scan(signal, &body, &opts) {
                    Ok(_) => hi = mid,
                    Err(Error::TooLarge(m)) => {
                        assert!(m.contains("ingest.max_items_per_request"));
                        lo = mid + 1;
                    }
                    Err(e) => panic!("{e}"),
                }
            }
            assert!(lo >= 3, "{signal}: at least a resource, a scope and an item ({lo})");
        }
    }
}

/// The scanner keeps memory on each thread from request to request (decoded spans, the
/// attribute dict, staged rows, list vectors): a request scanned after hundreds of others,
/// valid, invalid and rejected, must come out exactly as on a fresh thread.
#[test]
fn memory_kept_between_requests_changes_no_output() {
    let seeds = fixtures("traces");
    let mut rng = XorShift(7);
    let mut bodies: Vec<Vec<u8>> = seeds.clone();
    for i in 0..300 {
        bodies.push(mutate(&mut rng, &seeds[i % seeds.len()]));
    }
    let opts = Options {
        keep_llm_content: true,
        ..Options::default()
    };
    let summary = |r: Result<Normalised, Error>| match r {
        Ok(out) => Ok((out.received, out.rejected, out.reasons, out.tables)),
        Err(e) => Err(format!("{e:?}")),
    };
    for body in &bodies {
        let (b, o) = (body.clone(), opts.clone());
        let fresh = std::thread::spawn(move || summary(normalise_traces(&b, &o)))
            .join()
            .unwrap();
        assert_eq!(summary(normalise_traces(body, &opts)), fresh);
    }
}
