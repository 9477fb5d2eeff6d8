//! ExportMetricsServiceRequest bytes -> `metric_points` (collector/normalize.py
//! `normalise_metrics`): one row per data point of every gauge, sum, histogram, exponential
//! histogram and summary, GPU samples included.

use std::borrow::Cow;

use crate::k;
use crate::tables::{Cell, Normalised};
use crate::traces::{check_rows, get_str, key_value, or, resource, resource_info, Builders, Rows};
use crate::value::{dict_json, Dict, Num};
use crate::wire::{
    check_field, child_depth, validate, ItemCount, Reader, Res, Schema, EXP_HISTOGRAM_POINT_REST, HISTOGRAM_POINT_REST,
    I64, KEY_VALUE, LEN, NUMBER_POINT_REST, SCOPE, SUMMARY_POINT_REST, VARINT,
};

const GAUGE: u32 = 5;
const SUM: u32 = 7;
const HISTOGRAM: u32 = 9;
const EXP_HISTOGRAM: u32 = 10;
const SUMMARY: u32 = 11;

fn kind_name(kind: u32) -> &'static str {
    match kind {
        GAUGE => "gauge",
        SUM => "sum",
        HISTOGRAM => "histogram",
        EXP_HISTOGRAM => "exponential_histogram",
        _ => "summary",
    }
}

struct Point<'a> {
    attrs: Dict<'a>,
    time: u64,
    /// gauge/sum: the value oneof (None: neither as_double nor as_int).
    number: Option<f64>,
    count: u64,
    sum: f64,
}

struct Metric<'a> {
    name: &'a str,
    unit: &'a str,
    /// The data oneof's field number (0: none).
    kind: u32,
    monotonic: bool,
    points: Vec<Point<'a>>,
}

fn point<'a>(buf: &'a [u8], kind: u32, depth: u32) -> Res<Point<'a>> {
    let (attr_field, rest): (u32, &Schema) = match kind {
        GAUGE | SUM => (7, &NUMBER_POINT_REST),
        HISTOGRAM => (9, &HISTOGRAM_POINT_REST),
        EXP_HISTOGRAM => (1, &EXP_HISTOGRAM_POINT_REST),
        _ => (7, &SUMMARY_POINT_REST),
    };
    let number_kind = kind == GAUGE || kind == SUM;
    let mut p = Point {
        attrs: Dict::new(),
        time: 0,
        number: None,
        count: 0,
        sum: 0.0,
    };
    let mut r = Reader::new(buf);
    while !r.done() {
        let (f, w) = r.tag()?;
        match (f, w) {
            (f, LEN) if f == attr_field => {
                let sub = r.len_bytes()?;
                let (k, v) = key_value(sub, child_depth(depth)?)?;
                p.attrs.insert(Cow::Borrowed(k), v);
            }
            (3, I64) => p.time = r.fixed64()?,
            (4, I64) if number_kind => p.number = Some(f64::from_bits(r.fixed64()?)),
            (6, I64) if number_kind => p.number = Some(r.fixed64()? as i64 as f64),
            (4, I64) => p.count = r.fixed64()?,
            (5, I64) => p.sum = f64::from_bits(r.fixed64()?),
            _ => check_field(&mut r, rest, f, w, depth)?,
        }
    }
    Ok(p)
}

/// Gauge/Sum/Histogram/ExponentialHistogram/Summary: data points (field 1), and for Sum
/// `is_monotonic` (field 3).
fn data_into<'a>(buf: &'a [u8], kind: u32, depth: u32, m: &mut Metric<'a>) -> Res<()> {
    let mut r = Reader::new(buf);
    while !r.done() {
        let (f, w) = r.tag()?;
        match (f, w) {
            (1, LEN) => {
                let sub = r.len_bytes()?;
                m.points.push(point(sub, kind, child_depth(depth)?)?);
            }
            (3, VARINT) if kind == SUM => m.monotonic = r.varint()? != 0,
            _ => r.skip(f, w, depth)?,
        }
    }
    Ok(())
}

fn metric<'a>(buf: &'a [u8], depth: u32) -> Res<Metric<'a>> {
    let mut m = Metric {
        name: "",
        unit: "",
        kind: 0,
        monotonic: false,
        points: Vec::new(),
    };
    let mut r = Reader::new(buf);
    while !r.done() {
        let (f, w) = r.tag()?;
        match (f, w) {
            (1, LEN) => m.name = r.string()?,
            (2, LEN) => {
                r.string()?;
            }
            (3, LEN) => m.unit = r.string()?,
            (GAUGE | SUM | HISTOGRAM | EXP_HISTOGRAM | SUMMARY, LEN) => {
                let sub = r.len_bytes()?;
                if m.kind != f {
                    // Another member of the oneof: what the previous one held is dropped.
                    m.kind = f;
                    m.points.clear();
                    m.monotonic = false;
                }
                data_into(sub, f, child_depth(depth)?, &mut m)?;
            }
            (12, LEN) => validate(r.len_bytes()?, &KEY_VALUE, child_depth(depth)?)?,
            _ => r.skip(f, w, depth)?,
        }
    }
    Ok(m)
}

/// Normalise one ExportMetricsServiceRequest.
pub fn normalise_metrics(body: &[u8], max_items: usize) -> Res<Normalised> {
    let mut out = Normalised::default();
    let mut builders = Builders::new();
    let mut resources: Vec<(Dict, Vec<Metric>)> = Vec::new();
    let mut count = ItemCount::new(max_items);
    let mut r = Reader::new(body);
    while !r.done() {
        let (f, w) = r.tag()?;
        if (f, w) != (1, LEN) {
            r.skip(f, w, 0)?;
            continue;
        }
        let mut rr = Reader::new(r.len_bytes()?);
        count.add(1);
        let d_rm = 1;
        let mut res_parts: Vec<&[u8]> = Vec::new();
        let mut metrics = Vec::new();
        while !rr.done() {
            let (f, w) = rr.tag()?;
            match (f, w) {
                (1, LEN) => res_parts.push(rr.len_bytes()?),
                (2, LEN) => {
                    count.add(1);
                    let d_sm = child_depth(d_rm)?;
                    let mut sr = Reader::new(rr.len_bytes()?);
                    while !sr.done() {
                        let (f, w) = sr.tag()?;
                        match (f, w) {
                            (1, LEN) => validate(sr.len_bytes()?, &SCOPE, child_depth(d_sm)?)?,
                            (2, LEN) => {
                                let sub = sr.len_bytes()?;
                                let m = metric(sub, child_depth(d_sm)?)?;
                                if count.add(1 + m.points.len() as u64) {
                                    metrics.push(m);
                                }
                            }
                            (3, LEN) => {
                                sr.string()?;
                            }
                            _ => sr.skip(f, w, d_sm)?,
                        }
                    }
                }
                (3, LEN) => {
                    rr.string()?;
                }
                _ => rr.skip(f, w, d_rm)?,
            }
        }
        let attrs = resource(&res_parts, child_depth(d_rm)?)?;
        if !count.over() {
            resources.push((attrs, metrics));
        }
    }
    count.check()?;
    for (attrs, metrics) in &resources {
        let res = resource_info(attrs);
        for m in metrics {
            if m.kind == 0 {
                out.received += 1;
                out.reject("metric without data".into());
                continue;
            }
            let kind = kind_name(m.kind);
            let monotonic = if m.kind == SUM {
                Cell::Bool(m.monotonic)
            } else {
                Cell::Null
            };
            for p in &m.points {
                out.received += 1;
                let (value, count) = if m.kind == GAUGE || m.kind == SUM {
                    match p.number {
                        Some(v) => (v, Cell::Null),
                        None => {
                            out.reject("number data point without a value".into());
                            continue;
                        }
                    }
                } else {
                    (p.sum, Cell::Num(Num::Int(p.count as i128)))
                };
                let a = &p.attrs;
                let mut rows: Rows = vec![(
                    "metric_points",
                    vec![
                        Cell::F64(p.time as f64 / 1e9),
                        res.service.clone().into(),
                        or(get_str(a, &[k!("host.name")]), res.host.clone()).into(),
                        or(get_str(a, &[k!("hw.id")]), res.hw_id.clone()).into(),
                        Cell::Str(Cow::Borrowed(m.name)),
                        (if m.unit.is_empty() {
                            None
                        } else {
                            Some(Cow::Borrowed(m.unit))
                        })
                        .into(),
                        Cell::Str(Cow::Borrowed(kind)),
                        Cell::F64(value),
                        count,
                        monotonic.clone(),
                        (if a.is_empty() { None } else { Some(dict_json(a, true)) }).into(),
                    ],
                )];
                match check_rows(&mut rows) {
                    Ok(()) => {
                        for (table, row) in rows {
                            builders.get(table).append(row);
                        }
                    }
                    Err(reason) => out.reject(reason),
                }
            }
        }
    }
    builders.finish(&mut out);
    Ok(out)
}
