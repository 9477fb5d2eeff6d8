//! Rows per second of `extract` on bench-like rows (20 numbers + 5 labels):
//! `cargo run --release --example throughput`.
use std::time::Instant;

fn main() {
    let doc = r#"{"n0":-1.27077,"n1":-0.23719,"n2":4.09728,"n3":4.32953,"n4":3.42005,"n5":5.84797,"n6":6.00857,"n7":7.17753,"n8":8.62815,"n9":9.79819,"n10":11.45098,"n11":11.50746,"n12":12.37529,"n13":14.81146,"n14":14.73198,"n15":15.23544,"n16":14.33941,"n17":17.49481,"n18":18.45711,"n19":19.67883,"c0":"v0","c1":"v2","c2":"v1","c3":"v0","c4":"v5"}"#;
    let rows: Vec<Option<&str>> = vec![Some(doc); 100_000];
    let numeric: Vec<String> = (0..20).map(|j| format!("n{j}")).collect();
    let text: Vec<String> = (0..5).map(|j| format!("c{j}")).collect();
    let numeric: Vec<&str> = numeric.iter().map(String::as_str).collect();
    let text: Vec<&str> = text.iter().map(String::as_str).collect();
    for (numeric, text) in [
        (&numeric[..], &text[..]),
        (&numeric[..0], &text[..0]),
        (&numeric[..], &text[..0]),
    ] {
        let t = Instant::now();
        let out = feature_json::extract(rows.iter().copied(), numeric, text);
        let s = t.elapsed().as_secs_f64();
        println!(
            "{} rows in {:.1} ms: {:.2} us a row ({} unsure)",
            rows.len(),
            s * 1e3,
            s * 1e6 / rows.len() as f64,
            out.unsure.len()
        );
    }
}
