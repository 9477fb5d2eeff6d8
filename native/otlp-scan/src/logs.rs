//! ExportLogsServiceRequest bytes -> `logs` (collector/normalize.py `normalise_logs`), and
//! the inference records, labels and training steps that producers send as log records.

use std::borrow::Cow;

use crate::tables::{Cell, Normalised};
use crate::traces::{
    any_value, check_rows, inference_cells, is_inference, key_value, label_cells, resource, resource_info,
    training_cells, Builders, Rows, LABEL_REQUEST_ID, RUN_ID,
};
use crate::value::{dict_json, py_str, Dict, Val};
use crate::wire::{child_depth, validate, ItemCount, Reader, Res, I32, I64, LEN, SCOPE, VARINT};

struct LogRec<'a> {
    time: u64,
    observed: u64,
    severity_number: i32,
    severity_text: &'a str,
    /// The body's parts (merged when sent more than once); empty: no body.
    body: Vec<&'a [u8]>,
    attrs: Dict<'a>,
    trace_id: &'a [u8],
    span_id: &'a [u8],
}

fn log_record<'a>(buf: &'a [u8], depth: u32) -> Res<(LogRec<'a>, Val<'a>)> {
    let mut rec = LogRec {
        time: 0,
        observed: 0,
        severity_number: 0,
        severity_text: "",
        body: Vec::new(),
        attrs: Dict::new(),
        trace_id: b"",
        span_id: b"",
    };
    let mut r = Reader::new(buf);
    while !r.done() {
        let (f, w) = r.tag()?;
        match (f, w) {
            (1, I64) => rec.time = r.fixed64()?,
            (11, I64) => rec.observed = r.fixed64()?,
            (2, VARINT) => rec.severity_number = r.varint()? as i32,
            (3, LEN) => rec.severity_text = r.string()?,
            (5, LEN) => rec.body.push(r.len_bytes()?),
            (6, LEN) => {
                let sub = r.len_bytes()?;
                let (k, v) = key_value(sub, child_depth(depth)?)?;
                rec.attrs.insert(Cow::Borrowed(k), v);
            }
            (8, I32) => {
                r.fixed32()?;
            }
            (9, LEN) => rec.trace_id = r.len_bytes()?,
            (10, LEN) => rec.span_id = r.len_bytes()?,
            (12, LEN) => {
                r.string()?;
            }
            _ => r.skip(f, w, depth)?,
        }
    }
    let body = if rec.body.is_empty() {
        Val::None
    } else {
        any_value(&rec.body, child_depth(depth)?)?
    };
    Ok((rec, body))
}

fn hex_or_none(b: &[u8]) -> Option<String> {
    if b.is_empty() {
        None
    } else {
        Some(crate::traces::hex(b))
    }
}

/// Normalise one ExportLogsServiceRequest.
pub fn normalise_logs(body: &[u8], max_items: usize) -> Res<Normalised> {
    let mut count = ItemCount::new(max_items);
    let mut out = Normalised::default();
    let mut builders = Builders::new();
    type Records<'a> = Vec<(LogRec<'a>, Val<'a>)>;
    let mut resources: Vec<(Dict, Records)> = Vec::new();
    let mut r = Reader::new(body);
    while !r.done() {
        let (f, w) = r.tag()?;
        if (f, w) != (1, LEN) {
            r.skip(f, w, 0)?;
            continue;
        }
        let mut rr = Reader::new(r.len_bytes()?);
        count.add(1);
        let d_rl = 1;
        let mut res_parts: Vec<&[u8]> = Vec::new();
        let mut records = Vec::new();
        while !rr.done() {
            let (f, w) = rr.tag()?;
            match (f, w) {
                (1, LEN) => res_parts.push(rr.len_bytes()?),
                (2, LEN) => {
                    count.add(1);
                    let d_sl = child_depth(d_rl)?;
                    let mut sr = Reader::new(rr.len_bytes()?);
                    while !sr.done() {
                        let (f, w) = sr.tag()?;
                        match (f, w) {
                            (1, LEN) => validate(sr.len_bytes()?, &SCOPE, child_depth(d_sl)?)?,
                            (2, LEN) => {
                                let sub = sr.len_bytes()?;
                                let rec = log_record(sub, child_depth(d_sl)?)?;
                                if count.add(1) {
                                    records.push(rec);
                                }
                            }
                            (3, LEN) => {
                                sr.string()?;
                            }
                            _ => sr.skip(f, w, d_sl)?,
                        }
                    }
                }
                (3, LEN) => {
                    rr.string()?;
                }
                _ => rr.skip(f, w, d_rl)?,
            }
        }
        let attrs = resource(&res_parts, child_depth(d_rl)?)?;
        if !count.over() {
            resources.push((attrs, records));
        }
    }
    count.check()?;
    for (attrs, records) in &resources {
        out.received += records.len() as u64;
        let res = resource_info(attrs);
        for (rec, body) in records {
            let ts = (if rec.time != 0 { rec.time } else { rec.observed }) as f64 / 1e9;
            let a = &rec.attrs;
            let mut rows: Rows = Vec::new();
            if a.contains_key(&RUN_ID) {
                let mut cells = Vec::new();
                training_cells(a, &res, ts, None, &mut cells)?;
                rows.push(("training_steps", cells));
            } else if is_inference(a) {
                let mut cells = Vec::new();
                match inference_cells(a, &res, ts, None, &mut cells)? {
                    Ok(()) => rows.push(("inferences", cells)),
                    Err(reason) => {
                        out.reject(reason);
                        continue;
                    }
                }
            }
            if a.contains_key(&LABEL_REQUEST_ID) {
                let mut cells = Vec::new();
                label_cells(a, &res, ts, &mut cells);
                rows.push(("labels", cells));
            }
            let body_text: Option<Cow<str>> = match body {
                Val::None => None,
                Val::Str(s) => Some(Cow::Borrowed(s.as_ref())),
                Val::Hex(s) => Some(Cow::Borrowed(s.as_str())),
                other => {
                    let mut s = String::new();
                    py_str(other, &mut s)?;
                    Some(Cow::Owned(s))
                }
            };
            rows.push((
                "logs",
                vec![
                    Cell::F64(ts),
                    res.service.clone().into(),
                    Cell::I64(rec.severity_number as i64),
                    (if rec.severity_text.is_empty() {
                        None
                    } else {
                        Some(Cow::Borrowed(rec.severity_text))
                    })
                    .into(),
                    body_text.into(),
                    hex_or_none(rec.trace_id).into(),
                    hex_or_none(rec.span_id).into(),
                    (if a.is_empty() { None } else { Some(dict_json(a, true)) }).into(),
                ],
            ));
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
    builders.finish(&mut out);
    Ok(out)
}
