//! The record tables (mlvigil/records.py `TABLES`) as Arrow column builders, the per-value
//! checks of `check_row`, and the partial-success tally.

use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::sync::Arc;

use arrow_array::builder::{BooleanBuilder, Float64Builder, Int32Builder, Int64Builder, StringBuilder};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Schema};

use crate::value::Num;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Col {
    F64,
    Str,
    I64,
    I32,
    Bool,
}

/// Columns in mlvigil/records.py order. The `spans` table has no `span_proto` here: raw
/// spans are kept by the write-ahead log, not as a per-row blob (issue 15).
pub const SPANS: &[(&str, Col)] = &[
    ("ts", Col::F64),
    ("end_ts", Col::F64),
    ("trace_id", Col::Str),
    ("span_id", Col::Str),
    ("parent_span_id", Col::Str),
    ("name", Col::Str),
    ("kind", Col::I32),
    ("status_code", Col::I32),
    ("service", Col::Str),
    ("record_kind", Col::Str),
    ("resource_attrs", Col::Str),
];

pub const LLM_CALLS: &[(&str, Col)] = &[
    ("ts", Col::F64),
    ("service", Col::Str),
    ("service_version", Col::Str),
    ("host", Col::Str),
    ("trace_id", Col::Str),
    ("span_id", Col::Str),
    ("dialect", Col::Str),
    ("provider", Col::Str),
    ("operation", Col::Str),
    ("request_model", Col::Str),
    ("response_model", Col::Str),
    ("input_tokens", Col::I64),
    ("output_tokens", Col::I64),
    ("total_tokens", Col::I64),
    ("latency_s", Col::F64),
    ("ttft_s", Col::F64),
    ("finish_reasons", Col::Str),
    ("error", Col::Str),
    ("temperature", Col::F64),
    ("max_tokens", Col::I64),
    ("workflow", Col::Str),
    ("entity", Col::Str),
    ("prompt", Col::Str),
    ("completion", Col::Str),
];

pub const INFERENCES: &[(&str, Col)] = &[
    ("ts", Col::F64),
    ("service", Col::Str),
    ("model", Col::Str),
    ("model_version", Col::Str),
    ("request_id", Col::Str),
    ("features", Col::Str),
    ("prediction", Col::Str),
    ("score", Col::F64),
    ("latency_s", Col::F64),
    ("source", Col::Str),
];

pub const LABELS: &[(&str, Col)] = &[
    ("ts", Col::F64),
    ("request_id", Col::Str),
    ("service", Col::Str),
    ("model", Col::Str),
    ("label", Col::Str),
];

pub const TRAINING_STEPS: &[(&str, Col)] = &[
    ("ts", Col::F64),
    ("service", Col::Str),
    ("run_id", Col::Str),
    ("step", Col::I64),
    ("rank", Col::I32),
    ("world_size", Col::I32),
    ("host", Col::Str),
    ("k8s_pod", Col::Str),
    ("gpu_uuid", Col::Str),
    ("step_time_s", Col::F64),
    ("loss", Col::F64),
    ("grad_norm", Col::F64),
    ("learning_rate", Col::F64),
    ("samples", Col::F64),
    ("tokens", Col::F64),
    ("data_wait_s", Col::F64),
    ("forward_s", Col::F64),
    ("backward_s", Col::F64),
    ("optimizer_s", Col::F64),
    ("comm_s", Col::F64),
    ("checkpoint_s", Col::F64),
];

pub const METRIC_POINTS: &[(&str, Col)] = &[
    ("ts", Col::F64),
    ("service", Col::Str),
    ("host", Col::Str),
    ("hw_id", Col::Str),
    ("name", Col::Str),
    ("unit", Col::Str),
    ("kind", Col::Str),
    ("value", Col::F64),
    ("count", Col::I64),
    ("monotonic", Col::Bool),
    ("attributes", Col::Str),
];

pub const LOGS: &[(&str, Col)] = &[
    ("ts", Col::F64),
    ("service", Col::Str),
    ("severity_number", Col::I32),
    ("severity_text", Col::Str),
    ("body", Col::Str),
    ("trace_id", Col::Str),
    ("span_id", Col::Str),
    ("attributes", Col::Str),
];

pub const TABLES: &[(&str, &[(&str, Col)])] = &[
    ("spans", SPANS),
    ("llm_calls", LLM_CALLS),
    ("inferences", INFERENCES),
    ("labels", LABELS),
    ("training_steps", TRAINING_STEPS),
    ("metric_points", METRIC_POINTS),
    ("logs", LOGS),
];

/// Counts that cannot be negative (records.py NON_NEGATIVE).
const NON_NEGATIVE: &[&str] = &["input_tokens", "output_tokens", "total_tokens", "max_tokens", "count"];

/// One cell of a row before it is checked.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell<'a> {
    Null,
    F64(f64),
    Str(Cow<'a, str>),
    /// Bytes for a text column, written there as lower-case hex (ids: no copy made first).
    Hex(&'a [u8]),
    /// A number for an integer column, checked against its range.
    Num(Num),
    I64(i64),
    Bool(bool),
}

impl<'a> From<Option<Cow<'a, str>>> for Cell<'a> {
    fn from(v: Option<Cow<'a, str>>) -> Cell<'a> {
        v.map_or(Cell::Null, Cell::Str)
    }
}

impl From<Option<String>> for Cell<'_> {
    fn from(v: Option<String>) -> Self {
        v.map_or(Cell::Null, |s| Cell::Str(Cow::Owned(s)))
    }
}

impl From<Option<f64>> for Cell<'_> {
    fn from(v: Option<f64>) -> Self {
        v.map_or(Cell::Null, Cell::F64)
    }
}

impl From<Option<Num>> for Cell<'_> {
    fn from(v: Option<Num>) -> Self {
        v.map_or(Cell::Null, Cell::Num)
    }
}

/// `check_row`'s integer check: the value to store, or the reason the item is rejected.
fn check_int(table: &str, col: &str, ty: Col, v: Num) -> Result<i64, String> {
    let (mut lo, hi): (i128, i128) = match ty {
        Col::I32 => (i32::MIN as i128, i32::MAX as i128),
        _ => (i64::MIN as i128, i64::MAX as i128),
    };
    if NON_NEGATIVE.contains(&col) {
        lo = 0;
    }
    let i = match v {
        Num::Int(i) => i,
        Num::Float(f) => {
            if !f.is_finite() {
                return Err(format!("{table}.{col} is not a finite number"));
            }
            // int(f): truncation; beyond i128 it is out of range either way.
            let t = f.trunc();
            if t >= 1.7e38 || t <= -1.7e38 {
                return Err(format!("{table}.{col} is outside {lo}..{hi}"));
            }
            t as i128
        }
    };
    if i < lo || i > hi {
        return Err(format!("{table}.{col} is outside {lo}..{hi}"));
    }
    Ok(i as i64)
}

/// Check a row (cells in column order), turning numbers into the column's integers.
pub fn check_row(table: &str, cols: &[(&str, Col)], row: &mut [Cell<'_>]) -> Result<(), String> {
    debug_assert_eq!(cols.len(), row.len());
    for ((name, ty), cell) in cols.iter().zip(row.iter_mut()) {
        if let Cell::Num(n) = cell {
            match ty {
                Col::I64 | Col::I32 => *cell = Cell::I64(check_int(table, name, *ty, *n)?),
                Col::F64 => *cell = Cell::F64(n.as_f64()),
                _ => unreachable!("a number for a {ty:?} column"),
            }
        }
        if let (Cell::F64(f), "ts" | "end_ts") = (&*cell, *name) {
            if !f.is_finite() {
                return Err(format!("{table}.{name} is not a finite number"));
            }
        }
    }
    Ok(())
}

/// Text bytes a row reserved up front: a 1000-span request of the bench's LLM spans writes
/// ~20-60 bytes a text column a row; growing past it doubles, as without it.
const TEXT_BYTES_PER_ROW: usize = 24;

/// At most this many text bytes a column are reserved from what the last table of its name
/// held ([`TEXT_PER_ROW`]); past it a column grows as it fills.
const TEXT_ROOM_MAX: usize = 4 << 20;

thread_local! {
    /// For each table name: the text bytes a row (plus an eighth) of each column of the
    /// last table of that name finished on this thread. The next one reserves that much up
    /// front: a column that outgrows its room is copied to one twice its size, and
    /// requests of one client look alike (the bench's raw-span resource JSON and hex ids
    /// overflowed the fixed estimate every request).
    static TEXT_PER_ROW: RefCell<Vec<(&'static str, Vec<usize>)>> = const { RefCell::new(Vec::new()) };
}

/// Text bytes to reserve for `rows` rows of column `col` of table `name`.
fn text_room(name: &str, col: usize, rows: usize) -> usize {
    let per_row = TEXT_PER_ROW.with(|t| {
        t.borrow()
            .iter()
            .find(|(n, _)| *n == name)
            .and_then(|(_, cols)| cols.get(col).copied())
    });
    let fixed = rows * TEXT_BYTES_PER_ROW;
    match per_row {
        Some(n) if n > TEXT_BYTES_PER_ROW => (rows.saturating_mul(n)).min(TEXT_ROOM_MAX).max(fixed),
        _ => fixed,
    }
}

/// Bytes as one lower-case hex text value, written straight into the column.
fn append_hex(b: &mut StringBuilder, bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut buf = [0u8; 64];
    for chunk in bytes.chunks(buf.len() / 2) {
        for (i, &x) in chunk.iter().enumerate() {
            buf[2 * i] = DIGITS[(x >> 4) as usize];
            buf[2 * i + 1] = DIGITS[(x & 15) as usize];
        }
        // SAFETY: every byte written is one of DIGITS, ASCII (validating it cost ~1% of a scan).
        let text = unsafe { std::str::from_utf8_unchecked(&buf[..2 * chunk.len()]) };
        std::fmt::Write::write_str(b, text).expect("a string builder takes any text");
    }
    b.append_value("");
}

enum Builder {
    F64(Float64Builder),
    Str(StringBuilder),
    I64(Int64Builder),
    I32(Int32Builder),
    Bool(BooleanBuilder),
}

pub struct TableBuilder {
    pub name: &'static str,
    cols: &'static [(&'static str, Col)],
    builders: Vec<Builder>,
    pub rows: usize,
}

impl TableBuilder {
    /// A table with room for `rows` rows (text: as much a row as the last table of this
    /// name held, at least [`TEXT_BYTES_PER_ROW`] bytes; [`text_room`]).
    pub fn new(name: &'static str, cols: &'static [(&'static str, Col)], rows: usize) -> Self {
        // Arrow's default room, where no rows are expected.
        let (rows, expected) = if rows == 0 { (1024, false) } else { (rows, true) };
        let builders = cols
            .iter()
            .enumerate()
            .map(|(j, (_, ty))| match ty {
                Col::F64 => Builder::F64(Float64Builder::with_capacity(rows)),
                Col::Str => {
                    let text = if expected { text_room(name, j, rows) } else { 1024 };
                    Builder::Str(StringBuilder::with_capacity(rows, text))
                }
                Col::I64 => Builder::I64(Int64Builder::with_capacity(rows)),
                Col::I32 => Builder::I32(Int32Builder::with_capacity(rows)),
                Col::Bool => Builder::Bool(BooleanBuilder::with_capacity(rows)),
            })
            .collect();
        TableBuilder {
            name,
            cols,
            builders,
            rows: 0,
        }
    }

    pub fn cols(&self) -> &'static [(&'static str, Col)] {
        self.cols
    }

    /// Append a checked row.
    pub fn append<'c>(&mut self, row: impl IntoIterator<Item = Cell<'c>>) {
        for (b, cell) in self.builders.iter_mut().zip(row) {
            match (b, cell) {
                (Builder::F64(b), Cell::F64(v)) => b.append_value(v),
                (Builder::F64(b), Cell::Null) => b.append_null(),
                (Builder::Str(b), Cell::Str(v)) => b.append_value(&*v),
                (Builder::Str(b), Cell::Hex(v)) => append_hex(b, v),
                (Builder::Str(b), Cell::Null) => b.append_null(),
                (Builder::I64(b), Cell::I64(v)) => b.append_value(v),
                (Builder::I64(b), Cell::Null) => b.append_null(),
                (Builder::I32(b), Cell::I64(v)) => b.append_value(v as i32),
                (Builder::I32(b), Cell::Null) => b.append_null(),
                (Builder::Bool(b), Cell::Bool(v)) => b.append_value(v),
                (Builder::Bool(b), Cell::Null) => b.append_null(),
                (_, c) => panic!("cell {c:?} in a column of another type ({})", self.name),
            }
        }
        self.rows += 1;
    }

    pub fn schema(cols: &[(&str, Col)]) -> Schema {
        Schema::new(
            cols.iter()
                .map(|(n, ty)| {
                    let dt = match ty {
                        Col::F64 => DataType::Float64,
                        Col::Str => DataType::Utf8,
                        Col::I64 => DataType::Int64,
                        Col::I32 => DataType::Int32,
                        Col::Bool => DataType::Boolean,
                    };
                    Field::new(*n, dt, true)
                })
                .collect::<Vec<_>>(),
        )
    }

    pub fn finish(mut self) -> RecordBatch {
        if self.rows > 0 {
            let per_row: Vec<usize> = self
                .builders
                .iter()
                .map(|b| match b {
                    Builder::Str(b) => b.values_slice().len().div_ceil(self.rows) * 9 / 8,
                    _ => 0,
                })
                .collect();
            TEXT_PER_ROW.with(|t| {
                let mut t = t.borrow_mut();
                match t.iter_mut().find(|(n, _)| *n == self.name) {
                    Some((_, cols)) => *cols = per_row,
                    None => t.push((self.name, per_row)),
                }
            });
        }
        let arrays: Vec<ArrayRef> = self
            .builders
            .iter_mut()
            .map(|b| -> ArrayRef {
                match b {
                    Builder::F64(b) => Arc::new(b.finish()),
                    Builder::Str(b) => Arc::new(b.finish()),
                    Builder::I64(b) => Arc::new(b.finish()),
                    Builder::I32(b) => Arc::new(b.finish()),
                    Builder::Bool(b) => Arc::new(b.finish()),
                }
            })
            .collect();
        RecordBatch::try_new(Arc::new(Self::schema(self.cols)), arrays).expect("columns match the schema")
    }
}

/// A normalised request: its tables (only those with rows) and the partial-success tally.
#[derive(Debug, Default)]
pub struct Normalised {
    pub tables: Vec<(&'static str, RecordBatch)>,
    pub received: u64,
    pub rejected: u64,
    /// reason -> items rejected for it.
    pub reasons: BTreeMap<String, u64>,
}

impl Normalised {
    pub fn reject(&mut self, reason: String) {
        self.rejected += 1;
        *self.reasons.entry(reason).or_insert(0) += 1;
    }

    pub fn table(&self, name: &str) -> Option<&RecordBatch> {
        self.tables.iter().find(|(n, _)| *n == name).map(|(_, b)| b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spans_table(rows: usize, name_bytes: usize) -> RecordBatch {
        let mut t = TableBuilder::new("spans", SPANS, rows);
        let name = "n".repeat(name_bytes);
        for _ in 0..rows {
            let mut row: Vec<Cell> = SPANS.iter().map(|_| Cell::Null).collect();
            row[5] = Cell::Str(Cow::Borrowed(&name));
            t.append(row);
        }
        t.finish()
    }

    /// The text room reserved follows the last table of the name, within bounds: one huge
    /// value does not make every later table reserve rows x its size.
    #[test]
    fn text_room_follows_the_last_table_within_bounds() {
        assert_eq!(text_room("spans", 5, 1000), 1000 * TEXT_BYTES_PER_ROW);
        spans_table(10, 400);
        assert_eq!(text_room("spans", 5, 1000), 1000 * 450);
        assert_eq!(text_room("spans", 4, 1000), 1000 * TEXT_BYTES_PER_ROW);
        spans_table(1, 1 << 20);
        assert_eq!(text_room("spans", 5, 100_000), TEXT_ROOM_MAX);
        spans_table(10, 1);
        assert_eq!(text_room("spans", 5, 1000), 1000 * TEXT_BYTES_PER_ROW);
        let t = spans_table(3, 40);
        assert_eq!(t.num_rows(), 3);
    }
}
